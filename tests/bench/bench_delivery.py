"""Delivery throughput: messages per second from commit to provider acknowledgement.

The outbox is filled the way turns fill it (``commit_turn`` with replies),
then the OutboxWorker empties it into the emulator (its own process, over
loopback). Batching (up to 100 messages per request) against one message
per request, in the same run, on the memory store and, when Redis answers,
on the Redis store. Also requests per message under load. Run:

    python tests/bench/bench_delivery.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench_client import API_KEY, start_emulator  # noqa: E402

from botkit import OutboundMessage, SendMode, Template  # noqa: E402
from botkit.delivery import (  # noqa: E402
    CallbackSigner,
    OutboxWorker,
    OutboxWorkerConfig,
)
from botkit.devino import DevinoClient  # noqa: E402
from botkit.storage.base import ConversationStore  # noqa: E402
from botkit.storage.memory import MemoryStore  # noqa: E402

USERS = 200


async def fill(store: ConversationStore, count: int) -> None:
    """Commit turns whose replies add up to ``count`` messages (10 per turn)."""
    per_turn = 10
    for turn in range(count // per_turn):
        user = f"7903{turn % USERS:07d}"
        lease = await store.begin_turn(user, f"m:{uuid.uuid4().hex}")
        replies = [
            OutboundMessage(
                user=user,
                mode=SendMode.TEMPLATE,
                template=Template("bench", [str(i)]),
                created_at=time.time(),
            )
            for i in range(per_turn)
        ]
        await store.commit_turn(lease, None, replies)


async def run(store: ConversationStore, base_url: str, count: int, batch: int) -> dict[str, float]:
    await store.open()
    await fill(store, count)
    client = DevinoClient(base_url, api_key=API_KEY, batch_cap=100)
    sender = OutboxWorker(
        store,
        client,
        sender_name="Bench",
        signer=CallbackSigner("bench-secret-0123456789abcdef0123456789"),
        config=OutboxWorkerConfig(batch_size=batch, block=0.05),
    )
    started = time.perf_counter()
    sender.start()
    while True:  # poll: the figure is the time until the outbox is empty
        if await store.outbox_size() == 0:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await sender.stop(flush=1)
    requests = client.requests_sent
    await client.aclose()
    await store.close()
    return {"rate": count / elapsed, "requests_per_message": requests / count}


async def stores() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [("memory", lambda: MemoryStore())]
    try:
        from botkit.storage.redis import RedisStore

        url = os.environ.get("BOTKIT_REDIS_URL", "redis://127.0.0.1:6379/15")
        probe = RedisStore(url, bot="bench", prefix=f"bench-{uuid.uuid4().hex[:6]}")
        await probe.open()
        ok = await probe.ping()
        await probe.close()
        if ok:
            found.append(
                (
                    "redis",
                    lambda: RedisStore(url, bot="bench", prefix=f"bench-{uuid.uuid4().hex[:6]}"),
                )
            )
    except Exception as exc:  # no Redis here: memory only
        print(f"(redis skipped: {exc})")
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    process, base_url = start_emulator()
    try:
        print(f"{'store':8} {'mode':14} {'msgs/s':>10} {'requests/msg':>13}")
        for name, factory in await stores():
            results = {}
            for label, batch in (("batched (100)", 100), ("one by one", 1)):
                count = args.messages if batch > 1 else max(500, args.messages // 6)
                results[label] = await run(factory(), base_url, count, batch)  # type: ignore[operator]
                r = results[label]
                print(f"{name:8} {label:14} {r['rate']:10,.0f} {r['requests_per_message']:13.3f}")
            ratio = results["batched (100)"]["rate"] / results["one by one"]["rate"]
            print(f"{name:8} batching speed-up: x{ratio:.1f}")
    finally:
        process.terminate()
        process.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
