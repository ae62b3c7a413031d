"""Handoff and transcripts on Redis: turn cost with transcripts on and off, bytes per entry,
the agent list with 10,000 waiting conversations.

In one run, on a private ``redis-server`` on a free port:

1. the cost of an incoming message's turn (a flow move and a reply, so each
   turn writes 4 transcript entries: the message in, the move, the reply, and
   no status) with transcripts on against off (``StoreConfig(transcript_length=0)``),
   same run, in rounds that alternate the two: CPU time per turn (this
   process and the Redis server) and wall time (target <= 1.15x);
2. Redis bytes per transcript entry (``used_memory`` before and after
   ``--entries`` entries over 1,000 users, typical chat lines);
3. ``GET /api/handoffs`` as the agent API runs it (``store.handoffs(100)``)
   with 10,000 conversations waiting: median and p99 of ``--lists`` calls
   (target <= 50 ms).

Run: ``python tests/bench/bench_handoff.py [--turns 300] [--rounds 12] [--parts 1,2,3]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botkit import (  # noqa: E402  # noqa: E402
    Bot,
    Context,
    EntryKind,
    Flow,
    Handoff,
    Runtime,
    TextMessage,
    TranscriptEntry,
)
from botkit.storage import RedisStore  # noqa: E402
from botkit.storage.base import StoreConfig  # noqa: E402
from tests.storage._redis_server import RedisServer  # noqa: E402


def used_memory(server: RedisServer) -> int:
    return int(server.client().info("memory")["used_memory"])


def cost_bot() -> Bot:
    bot = Bot("cost")
    loop = Flow("loop", states=["a", "b"], transitions=[("go", "a", "b"), ("go", "b", "a")])

    @loop.text()
    async def step(ctx: Context) -> None:
        await ctx.flow.go()
        await ctx.reply(f"you are at {ctx.state}")

    bot.include_router(loop)

    @bot.text(state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(loop)

    return bot


async def turn_cost(
    server: RedisServer, turns: int, rounds: int
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Per round, (wall, CPU) per turn with transcripts off, then on."""
    runtimes = {}
    for name, length in (("off", 0), ("on", 500)):
        store = RedisStore(
            server.url, bot="cost", prefix=name, config=StoreConfig(transcript_length=length)
        )
        runtimes[name] = Runtime(cost_bot(), store)
        await runtimes[name].start()
    users = [f"7500{n:07d}" for n in range(200)]
    ids = iter(range(10**9))
    redis = server.client()

    def redis_cpu() -> float:
        cpu = redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    async def one_round(runtime: Runtime) -> tuple[float, float]:
        cpu, server_cpu, started = time.process_time(), redis_cpu(), time.perf_counter()
        for n in range(turns):
            user = users[n % len(users)]
            message = TextMessage(id=f"b{next(ids)}", user=user, text="hi", timestamp=time.time())
            await runtime.handle_message(message)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu + redis_cpu() - server_cpu
        return wall / turns, cpu / turns

    for runtime in runtimes.values():
        await one_round(runtime)  # warm up, and every user into the flow
    pairs = []
    for n in range(rounds):  # interleaved, alternating which goes first
        if n % 2:
            on = await one_round(runtimes["on"])
            off = await one_round(runtimes["off"])
        else:
            off = await one_round(runtimes["off"])
            on = await one_round(runtimes["on"])
        pairs.append((off, on))
    for runtime in runtimes.values():
        await runtime.stop()
    return pairs


async def bytes_per_entry(server: RedisServer, entries: int) -> float:
    store = RedisStore(server.url, bot="bench", prefix="bytes")
    await store.open()
    users = [f"7700{n:07d}" for n in range(1000)]
    texts = ("hi", "2", "L", "12 Baker Street, flat 4", "What would you like? 1) Margherita")
    try:
        # The users' conversations exist first: what is measured is the transcripts alone.
        for user in users:
            lease = await store.begin_turn(user, None)
            await store.commit_turn(lease, lease.conversation.copy())
        before = used_memory(server)
        per_user = entries // len(users)
        now = time.time()
        for user in users:
            batch = [
                TranscriptEntry(
                    EntryKind.IN if k % 2 == 0 else EntryKind.OUT,
                    now + k,
                    {"type": "text", "text": texts[k % len(texts)]}
                    if k % 2 == 0
                    else {"ref": f"r{k:011d}", "mode": "text", "text": texts[k % len(texts)]},
                )
                for k in range(per_user)
            ]
            await store.transcript_append(user, batch)
        return (used_memory(server) - before) / (per_user * len(users))
    finally:
        await store.close()


async def agent_list(server: RedisServer, waiting: int, calls: int) -> list[float]:
    store = RedisStore(server.url, bot="bench", prefix="list")
    await store.open()
    try:
        now = time.time()

        async def one(n: int) -> None:
            user = f"7800{n:07d}"
            lease = await store.begin_turn(user, None)
            conversation = lease.conversation.copy()
            conversation.handoff = Handoff(
                since=now - n, reason="asked for a person", last_text="hello?", last_at=now
            )
            await store.commit_turn(lease, conversation)

        for start in range(0, waiting, 500):
            await asyncio.gather(*(one(n) for n in range(start, min(waiting, start + 500))))
        found, total = await store.handoffs(100)
        assert total == waiting and len(found) == 100, (total, len(found))
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await store.handoffs(100)
            times.append(time.perf_counter() - started)
        return times
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--lists", type=int, default=50)
    parser.add_argument("--parts", default="1,2,3", help="which measures to run (default: all)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir), extra=("--appendonly", "no"))
        server.start()
        try:
            if "1" in parts:
                pairs = await turn_cost(server, args.turns, args.rounds)
                for i, label in ((1, "CPU (this process + Redis)"), (0, "wall time")):
                    off = statistics.median(p[0][i] for p in pairs)
                    on = statistics.median(p[1][i] for p in pairs)
                    ratios = sorted(p[1][i] / p[0][i] for p in pairs)
                    print(
                        f"1. turn of an incoming message, {label}: {off * 1e6:.0f} us with "
                        f"transcripts off, {on * 1e6:.0f} us on (medians of {len(pairs)} rounds); "
                        f"ratio median {statistics.median(ratios):.2f}x, rounds "
                        f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (target <= 1.15x)"
                    )
            if "2" in parts:
                per_entry = await bytes_per_entry(server, args.entries)
                print(f"2. {args.entries:,} transcript entries: {per_entry:.0f} B of Redis each")
            if "3" in parts:
                times = sorted(await agent_list(server, args.waiting, args.lists))
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                print(
                    f"3. the agent list (100 shown) with {args.waiting:,} waiting: median "
                    f"{statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over "
                    f"{len(times)} calls (target <= 50 ms)"
                )
        finally:
            server.close()
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
