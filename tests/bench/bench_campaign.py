"""A campaign of a million recipients: messages/s, requests per message, Redis bytes, memory.

Everything real and in processes of its own: a private ``redis-server`` (no
persistence, so ``used_memory`` counts only this run), the provider emulator
(``botkit emulator --no-record``: it counts, keeps nothing), ``botkit run``
with one worker serving a bot, and ``botkit campaign start`` importing a
CSV audience at an unlimited rate (``--rate 0``). No status callbacks
(``BOTKIT_PUBLIC_URL`` unset): this measures the campaign's own path.

For each audience size (``--sizes``, default 100,000 then 1,000,000) it
reports the import (rows/s, the command's peak RSS), the sending
(messages/s from the campaign's start to its end, provider requests per
message, the worker's peak RSS), and Redis bytes per recipient while queued
(after the import) and once sent. Memory is flat when the peak RSS of the
command and of the worker do not grow with the audience.

The baseline, measured in the same run against the same emulator: a loop
that sends the same number of template messages straight through
``DevinoClient`` in batches of 100, with no store, no pacing and no
compliance (``--baseline`` messages, default the smallest size).

Run::

    python tests/bench/bench_campaign.py [--sizes 100000,1000000] [--baseline 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from botkit.devino.client import DevinoClient  # noqa: E402
from botkit.devino.models import OutgoingMessage  # noqa: E402
from botkit.storage.campaigns import CampaignState  # noqa: E402
from botkit.storage.redis import RedisStore  # noqa: E402
from tests.bench.bench_store import start_server  # noqa: E402
from tests.helpers import free_port  # noqa: E402

API_KEY = "bench-campaign-key-7Hq2"
TARGET = "tests.service.campaignbot:bot"


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_audience(path: Path, size: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "code"])
        for n in range(size):
            writer.writerow([f"79{n:09d}", f"name{n % 1000}", f"C{n}"])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.1)


def emulator_stats(base: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{base}/_emulator/stats", timeout=10).json()
    return stats


async def baseline(base: str, count: int) -> float:
    """Messages/s of a plain loop: DevinoClient, batches of 100, nothing else."""
    client = DevinoClient(base, api_key=API_KEY)
    sent = 0
    started = time.perf_counter()
    try:
        while sent < count:
            batch = [
                OutgoingMessage(
                    sender="BenchCo",
                    to=f"78{(sent + i):09d}",
                    template_id="promo",
                    template_params={"1": "name", "2": f"C{sent + i}"},
                )
                for i in range(min(100, count - sent))
            ]
            results = await client.send(batch)
            sent += sum(1 for r in results if r.ok)
    finally:
        await client.aclose()
    return count / (time.perf_counter() - started)


def run_size(size: int, redis_url: str, provider: str, workdir: Path) -> dict[str, float]:
    prefix = f"bench-campaign-{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=prefix,
        BOTKIT_DEVINO_URL=provider,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="BenchCo",
        BOTKIT_WEBHOOK_TOKEN=secrets.token_urlsafe(24),
        BOTKIT_LOG_LEVEL="WARNING",
    )
    check = redis.Redis.from_url(redis_url)
    audience = workdir / f"audience-{size}.csv"
    write_audience(audience, size)
    before = int(check.info("memory")["used_memory"])
    name = f"bench{size}"
    # The import alone first (no worker running yet), then the sending.
    start = subprocess.Popen(
        [
            sys.executable, "-m", "botkit", "campaign", "start", TARGET, "--name", name,
            "--template", "promo", "--audience", str(audience),
            "--param-columns", "name,code", "--rate", "0",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    import_started = time.perf_counter()
    import_rss = 0.0
    while start.poll() is None:
        with contextlib.suppress(OSError):  # it may end between poll() and the read
            import_rss = max(import_rss, peak_rss_mb(start.pid))
        time.sleep(0.05)
    import_seconds = time.perf_counter() - import_started
    output = start.stdout.read().decode() if start.stdout else ""
    if start.returncode != 0:
        raise SystemExit(f"botkit campaign start failed:\n{output}")
    queued_bytes = int(check.info("memory")["used_memory"]) - before
    requests_before = emulator_stats(provider)["requests"]
    messages_before = emulator_stats(provider)["messages"]
    port = free_port()
    log = (workdir / f"run-{size}.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "botkit", "run", TARGET, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")

        async def send() -> tuple[float, int]:
            store = RedisStore(redis_url, bot="campaignbot", prefix=prefix)
            campaigns = store.campaigns()
            try:
                campaign = await campaigns.get(name)
                assert campaign is not None
                started = time.perf_counter()
                while True:
                    totals = await campaigns.totals(campaign)
                    if totals.state is CampaignState.DONE:
                        return time.perf_counter() - started, totals.sent
                    await asyncio.sleep(0.2)
            finally:
                await store.close()

        seconds, sent = asyncio.run(send())
        worker_rss = peak_rss_mb(service.pid)
        stats = emulator_stats(provider)
        requests = stats["requests"] - requests_before
        messages = stats["messages"] - messages_before
        sent_bytes = int(check.info("memory")["used_memory"]) - before
        return {
            "size": size,
            "import_rows_per_s": size / import_seconds,
            "import_peak_rss_mb": import_rss,
            "messages_per_s": sent / seconds,
            "sent": sent,
            "provider_messages": messages,
            "requests_per_message": requests / max(1, messages),
            "worker_peak_rss_mb": worker_rss,
            "redis_bytes_per_recipient_queued": queued_bytes / size,
            "redis_bytes_per_recipient_sent": sent_bytes / size,
        }
    finally:
        service.terminate()
        service.wait(30)
        log.close()
        audience.unlink(missing_ok=True)
        for key in check.scan_iter(match=f"{prefix}*", count=10_000):
            check.unlink(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="audience sizes, smallest first")
    parser.add_argument("--baseline", type=int, default=None, help="baseline messages")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    server, redis_url, redis_dir = start_server()
    port = free_port()
    provider = f"http://127.0.0.1:{port}"
    emulator = subprocess.Popen(
        [
            sys.executable, "-m", "botkit", "emulator", "--port", str(port), "--api-key", API_KEY,
            "--no-record", "--log-level", "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="botkit-bench-campaign-"))
    try:
        wait_http(f"{provider}/_emulator/stats")
        count = args.baseline or sizes[0]
        base = asyncio.run(baseline(provider, count))
        print(f"baseline: DevinoClient loop, batches of 100: {base:,.0f} messages/s ({count:,})")
        results = []
        for size in sizes:
            result = run_size(size, redis_url, provider, workdir)
            results.append(result)
            print(
                f"{size:>9,} recipients: import {result['import_rows_per_s']:,.0f} rows/s "
                f"(peak RSS {result['import_peak_rss_mb']:.0f} MB); sent "
                f"{result['sent']:,.0f} at {result['messages_per_s']:,.0f} messages/s "
                f"(ratio to baseline {result['messages_per_s'] / base:.2f}), "
                f"{result['requests_per_message']:.3f} requests/message, worker peak RSS "
                f"{result['worker_peak_rss_mb']:.0f} MB; Redis "
                f"{result['redis_bytes_per_recipient_queued']:.0f} B/recipient queued, "
                f"{result['redis_bytes_per_recipient_sent']:.0f} B once sent",
                flush=True,
            )
            print(f"  load now: {os.getloadavg()[0]:.1f}", flush=True)
        if len(results) > 1:
            small, large = results[0], results[-1]
            imported = large["import_peak_rss_mb"] / small["import_peak_rss_mb"]
            worker = large["worker_peak_rss_mb"] / small["worker_peak_rss_mb"]
            print(
                f"memory, {large['size']:,.0f} against {small['size']:,.0f} recipients: "
                f"import peak RSS x{imported:.2f}, worker peak RSS x{worker:.2f}"
            )
    finally:
        emulator.terminate()
        server.terminate()
        emulator.wait(10)
        server.wait(10)
        shutil.rmtree(redis_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
