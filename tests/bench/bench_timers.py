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
   against one with none, same run (target <= 1.1x).

Run: ``python tests/bench/bench_timers.py [--timers 100000] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botkit import Bot, Context, TextMessage, Timer  # noqa: E402
from botkit._runtime import Runtime  # noqa: E402
from botkit.delivery._timers import TimerConfig, TimerWorker  # noqa: E402
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
            conv.timers = {"nudge": Timer("nudge", time.time() + 86_400, None, f"{n:012x}")}
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
        conv.timers = {"due": Timer("due", start + n / rate, None, f"{n:012x}")}
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


async def turn_cost(server: RedisServer, turns: int) -> tuple[float, float]:
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
    far = time.time() + 86_400

    async def prepare(user: str) -> None:
        lease = await store.begin_turn(user, None)
        conv = lease.conversation.copy()
        conv.timers = {f"t{k}": Timer(f"t{k}", far + k, {"k": k}, f"{k:012x}") for k in range(3)}
        await store.commit_turn(lease, conv)

    await asyncio.gather(*(prepare(u) for u in with_timers))
    ids = iter(range(10**9))

    async def rounds(users: list[str]) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for n in range(turns):
                user = users[n % len(users)]
                message = TextMessage(
                    id=f"b{next(ids)}", user=user, text="hi", timestamp=time.time()
                )
                await runtime.handle_message(message)
            best = min(best, (time.perf_counter() - started) / turns)
        return best

    results = {"with": [], "without": []}  # type: dict[str, list[float]]
    for _ in range(2):  # interleaved, so a busy moment hits both
        results["without"].append(await rounds(without))
        results["with"].append(await rounds(with_timers))
    await runtime.stop()
    return min(results["without"]), min(results["with"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--turns", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir), extra=("--appendonly", "no"))
        server.start()
        try:
            marginal, bare = await memory_per_timer(server, args.timers)
            print(f"1. {args.timers:,} pending timers: {marginal:.0f} B per timer for users with a")
            print(f"   conversation (target <= 150 B); {bare:.0f} B per user with only a timer")

            rate, lags = await firing(server, args.rate, args.seconds)
            if lags:
                p50 = statistics.median(lags)
                p99 = statistics.quantiles(lags, n=100)[98]
                print(
                    f"2. {len(lags):,} timers due at {args.rate:,}/s, 2 workers: fired at "
                    f"{rate:,.0f}/s; lag p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                    "(target p99 <= 1 s)"
                )
            none, some = await turn_cost(server, args.turns)
            print(
                f"3. turn of an incoming message: {none * 1e6:.0f} us with no pending timer, "
                f"{some * 1e6:.0f} us with 3: {some / none:.2f}x (target <= 1.1x)"
            )
        finally:
            server.close()


if __name__ == "__main__":
    asyncio.run(main())
