"""Durable timers on Redis: memory per timer, firing throughput and lag, cost per turn.

In one run, on a private ``redis-server`` on a free port:

1. 100,000 pending timers: Redis bytes per timer (``used_memory`` before and
   after), both as the marginal cost of a timer for users who already have a
   conversation, and for users who have nothing but the timer (target <= 150 B
   for the marginal cost);
2. firing: timers due at 1,000 per second for ``--seconds`` seconds, fired by
   two timer workers (two runtimes, each with its own store connection, in
   this process): throughput and due-to-fired lag p50/p99 (target p99 <= 1 s);
3. the cost of an incoming message's turn for a user with 3 pending timers
   (with data) against one with none, same run, in rounds that alternate the
   two: CPU time per turn (this process and the Redis server, what the load of
   a shared machine changes least) and wall time (target <= 1.1x).

Run: ``python tests/bench/bench_timers.py [--timers 100000] [--seconds 10] [--parts 1,2,3]``
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

from botkit import (  # noqa: E402
    Bot,
    Context,
    Runtime,
    TextMessage,
    Timer,
)
from botkit.delivery import TimerConfig, TimerWorker  # noqa: E402
from botkit.storage import RedisStore  # noqa: E402
from tests.storage._redis_server import RedisServer  # noqa: E402


def used_memory(server: RedisServer) -> int:
    return int(server.client().info("memory")["used_memory"])


async def write_timers(store: RedisStore, users: list[str], *, data: bool, timers: bool) -> None:
    async def one(n: int, user: str) -> None:
        lease = await store.begin_turn(user, None)
        conv = lease.conversation.copy()
        if data:
            conv.data = {"step": n % 7}
            conv.last_inbound = conv.last_active = time.time()
        if timers:
            conv.timers = {"nudge": Timer("nudge", round(time.time() + 86_400, 3))}
        await store.commit_turn(lease, conv)

    for start in range(0, len(users), 500):
        await asyncio.gather(*(one(start + i, u) for i, u in enumerate(users[start : start + 500])))


async def memory_per_timer(server: RedisServer, count: int) -> tuple[float, float]:
    store = RedisStore(server.url, bot="bench", prefix="mem")
    await store.open()
    try:
        users = [f"7900{n:07d}" for n in range(count)]
        before = used_memory(server)
        await write_timers(store, users, data=True, timers=False)
        with_conversations = used_memory(server)
        await write_timers(store, users, data=True, timers=True)
        with_timers = used_memory(server)
        marginal = (with_timers - with_conversations) / count
        bare_users = [f"7800{n:07d}" for n in range(count)]
        start = used_memory(server)
        await write_timers(store, bare_users, data=False, timers=True)
        bare = (used_memory(server) - start) / count
        del before
        return marginal, bare
    finally:
        await store.close()


async def firing(server: RedisServer, rate: int, seconds: float) -> tuple[float, list[float]]:
    lags: list[float] = []
    fired_at: list[float] = []
    all_fired = asyncio.Event()
    total = int(rate * seconds)

    def bot() -> Bot:
        b = Bot("fire")

        @b.timer("due")
        async def due(ctx: Context) -> None:
            now = time.time()
            lags.append(now - ctx.timer.due)
            fired_at.append(now)
            if len(lags) >= total:
                all_fired.set()

        return b

    runtimes = []
    workers = []
    for _ in range(2):
        store = RedisStore(server.url, bot="fire", prefix="fire", max_connections=100)
        runtime = Runtime(bot(), store)
        await runtime.start()
        runtimes.append(runtime)
    users = [f"7700{n:07d}" for n in range(total)]
    start = time.time() + 3.0  # time to write them all first
    store = runtimes[0].store

    async def one(n: int, user: str) -> None:
        lease = await store.begin_turn(user, None)
        conv = lease.conversation.copy()
        conv.timers = {"due": Timer("due", round(start + n / rate, 3))}
        await store.commit_turn(lease, conv)

    for chunk in range(0, total, 500):
        await asyncio.gather(*(one(chunk + i, u) for i, u in enumerate(users[chunk : chunk + 500])))
    if time.time() > start:
        print("warning: writing the timers took longer than the head start", file=sys.stderr)
    for runtime in runtimes:
        worker = TimerWorker(runtime, TimerConfig(poll=0.05, batch=500, concurrency=64))
        worker.start()
        workers.append(worker)
    try:
        await asyncio.wait_for(all_fired.wait(), seconds + 60)
    except TimeoutError:
        print(f"warning: only {len(lags)} of {total} fired", file=sys.stderr)
    for worker in workers:
        await worker.stop()
    for runtime in runtimes:
        await runtime.stop()
    elapsed = max(fired_at) - min(fired_at) if fired_at else 0.0
    return (len(lags) / elapsed if elapsed else 0.0), lags


async def turn_cost(
    server: RedisServer, turns: int, rounds: int
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Per round, (wall, CPU) per turn without pending timers, then with 3."""
    bot = Bot("cost")

    @bot.text()
    async def hello(ctx: Context) -> None:
        ctx.data["n"] = ctx.data.get("n", 0) + 1
        await ctx.reply("hi")

    store = RedisStore(server.url, bot="cost", prefix="cost")
    runtime = Runtime(bot, store)
    await runtime.start()
    with_timers = [f"7600{n:07d}" for n in range(200)]
    without = [f"7500{n:07d}" for n in range(200)]
    far = round(time.time() + 86_400, 3)

    async def prepare(user: str, timers: bool) -> None:
        lease = await store.begin_turn(user, None)
        conv = lease.conversation.copy()
        conv.data = {"n": 0}
        if timers:
            conv.timers = {f"t{k}": Timer(f"t{k}", far + k, {"k": k}) for k in range(3)}
        await store.commit_turn(lease, conv)

    await asyncio.gather(*(prepare(u, True) for u in with_timers))
    await asyncio.gather(*(prepare(u, False) for u in without))
    ids = iter(range(10**9))
    redis = server.client()

    def redis_cpu() -> float:
        cpu = redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    async def one_round(users: list[str]) -> tuple[float, float]:
        """Wall time and CPU time (this process and Redis) per turn."""
        cpu, server_cpu, started = time.process_time(), redis_cpu(), time.perf_counter()
        for n in range(turns):
            user = users[n % len(users)]
            message = TextMessage(id=f"b{next(ids)}", user=user, text="hi", timestamp=time.time())
            await runtime.handle_message(message)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu + redis_cpu() - server_cpu
        return wall / turns, cpu / turns

    await one_round(without)  # warm up
    await one_round(with_timers)
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for n in range(rounds):  # interleaved, alternating which goes first
        if n % 2:
            some = await one_round(with_timers)
            none = await one_round(without)
        else:
            none = await one_round(without)
            some = await one_round(with_timers)
        pairs.append((none, some))
    await runtime.stop()
    return pairs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--parts", default="1,2,3", help="which measures to run (default: all three)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir), extra=("--appendonly", "no"))
        server.start()
        try:
            if "1" in parts:
                marginal, bare = await memory_per_timer(server, args.timers)
                print(
                    f"1. {args.timers:,} pending timers: {marginal:.0f} B per timer for users with"
                )
                print(
                    f"   a conversation (target <= 150 B); {bare:.0f} B per user with only a timer"
                )
            rate, lags = await firing(server, args.rate, args.seconds) if "2" in parts else (0, [])
            if lags:
                p50 = statistics.median(lags)
                p99 = statistics.quantiles(lags, n=100)[98]
                print(
                    f"2. {len(lags):,} timers due at {args.rate:,}/s, 2 workers: fired at "
                    f"{rate:,.0f}/s; lag p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                    "(target p99 <= 1 s)"
                )
            if "3" not in parts:
                return
            pairs = await turn_cost(server, args.turns, args.rounds)
            for i, label in ((1, "CPU (this process + Redis)"), (0, "wall time")):
                none = statistics.median(p[0][i] for p in pairs)
                some = statistics.median(p[1][i] for p in pairs)
                ratios = sorted(p[1][i] / p[0][i] for p in pairs)
                print(
                    f"3. turn of an incoming message, {label}: {none * 1e6:.0f} us with no "
                    f"pending timer, {some * 1e6:.0f} us with 3 (medians of {len(pairs)} rounds); "
                    f"ratio median {statistics.median(ratios):.2f}x, rounds "
                    f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (target <= 1.1x)"
                )
        finally:
            server.close()


if __name__ == "__main__":
    asyncio.run(main())
