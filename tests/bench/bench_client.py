"""How many messages per second DevinoClient pushes to the emulator.

Batched (100 messages per request) versus one message per request, in the same
run, against the emulator served by uvicorn in a separate process over
loopback (so client and server do not share one event loop). Run:

    python tests/bench/bench_client.py [--messages 5000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botkit.devino import DevinoClient, OutgoingMessage  # noqa: E402

API_KEY = "bench-key"


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "BOTKIT_DEVINO_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "botkit.devtools.emulator", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if " listening on " not in line:
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, line.split(" listening on ")[1].split()[0]


def messages(count: int) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            sender="Bench", to=f"7903{index:07d}", template_id="t", template_params=["x"]
        )
        for index in range(count)
    ]


async def rate(base_url: str, count: int, batch_cap: int, concurrency: int) -> float:
    batch = messages(count)
    async with DevinoClient(
        base_url, api_key=API_KEY, batch_cap=batch_cap, concurrency=concurrency
    ) as devino:
        await devino.send(batch[: min(count, 200)])  # warm up: connections, code paths
        started = time.perf_counter()
        results = await devino.send(batch)
        elapsed = time.perf_counter() - started
    assert all(result.ok for result in results), "the emulator rejected messages"
    async with httpx.AsyncClient() as http:
        await http.delete(f"{base_url}/_emulator/messages")  # keep the emulator small
    return count / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    process, base_url = start_emulator()
    try:
        batched = await rate(base_url, args.messages, 100, args.concurrency)
        single = await rate(base_url, args.messages, 1, args.concurrency)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"messages: {args.messages}, concurrency: {args.concurrency}, cores: {os.cpu_count()}")
    print(f"batched (100 per request): {batched:10,.0f} messages/s")
    print(f"one message per request:   {single:10,.0f} messages/s")
    print(f"ratio batched / single:    {batched / single:10.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
