"""The timer worker: due timers fire as turns, once, across workers, on a real Redis.

The service runs a :class:`TimerWorker` beside its sender; here two runtimes
on one Redis stand for two workers, and the end-to-end test serves a bot
over HTTP to the provider emulator and lets a real short flow timeout pass.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from botkit import Bot, Context, Flow, ManualClock, Runtime, TextMessage
from botkit.delivery import ShardOwnership, TimerConfig, TimerWorker
from botkit.storage import RedisStore
from botkit.storage.redis.keys import shard_of
from botkit.testing import LiveBot
from tests.delivery.conftest import StoreMaker
from tests.helpers import wait_for
from tests.storage._redis_server import RedisServer

FAST = TimerConfig(poll=0.02, lease=2.0)


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 20.0) -> None:
    await wait_for(check, within=within)


def counting_bot(fired: Counter[str], *, after: float = 0.3) -> Bot:
    bot = Bot("timers")

    @bot.text("cancel")
    async def cancel(ctx: Context) -> None:
        ctx.cancel("once")

    @bot.text()
    async def later(ctx: Context) -> None:
        ctx.schedule("once", after=after, data=ctx.text)

    @bot.timer("once")
    async def once(ctx: Context) -> None:
        fired[f"{ctx.user}:{ctx.timer.data}"] += 1
        await ctx.reply(f"fired {ctx.timer.data}")

    return bot


async def say(runtime: Runtime, user: str, text: str, n: int) -> None:
    message = TextMessage(id=f"{user}-{n}", user=user, text=text, timestamp=time.time())
    await runtime.handle_message(message)


@pytest.fixture
async def two_workers(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[[Counter[str]], Awaitable[list[Runtime]]]]:
    started: list[tuple[Runtime, TimerWorker]] = []

    async def build(fired: Counter[str]) -> list[Runtime]:
        for _ in range(2):
            store = RedisStore(redis_url, bot="timers", prefix=redis_prefix, shards=8)
            runtime = Runtime(counting_bot(fired), store)
            await runtime.start()
            worker = TimerWorker(runtime, FAST)
            worker.start()
            started.append((runtime, worker))
        return [r for r, _ in started]

    yield build
    for runtime, worker in started:
        await worker.stop()
        await runtime.stop()


async def test_timers_fire_once_across_two_workers(
    two_workers: Callable[[Counter[str]], Awaitable[list[Runtime]]],
) -> None:
    fired: Counter[str] = Counter()
    first, second = await two_workers(fired)
    users = [f"7900{n:07d}" for n in range(150)]
    await asyncio.gather(
        *(say(first if n % 2 else second, u, "hello", n) for n, u in enumerate(users))
    )
    await until(lambda: len(fired) == len(users))
    await asyncio.sleep(FAST.poll * 10)  # a second firing would show up here
    assert set(fired) == {f"{u}:hello" for u in users}
    assert set(fired.values()) == {1}, "every timer fired exactly once"
    # Nothing is left that could fire again.
    assert await first.store.timers_pending() == 0
    assert [u for u in users if (await first.store.load(u)).timers] == []


async def test_workers_claim_timers_in_the_shards_their_senders_own(
    redis_url: str, redis_prefix: str
) -> None:
    """Two workers split the shards as their senders do (no claim in the other's
    shards); when one dies, the other takes its shards and fires their timers."""
    shards = 16
    fired_by: dict[str, list[int]] = {}

    def bot(index: int) -> Bot:
        b = Bot("owned")

        @b.text()
        async def later(ctx: Context) -> None:
            ctx.schedule("due", after=0.2)

        @b.timer("due")
        async def due(ctx: Context) -> None:
            fired_by.setdefault(ctx.user, []).append(index)

        return b

    runtimes: list[Runtime] = []
    workers: list[TimerWorker] = []
    ownerships: list[ShardOwnership] = []
    try:
        for index in range(2):
            store = RedisStore(redis_url, bot="owned", prefix=redis_prefix, shards=shards)
            runtime = Runtime(bot(index), store)
            await runtime.start()
            runtimes.append(runtime)
            ownerships.append(ShardOwnership(store, f"worker-{index}", ttl=1.0))
        for ownership in (*ownerships, ownerships[0]):  # the first sees the second too
            await ownership.refresh()
        owned = [set(o.shards or ()) for o in ownerships]
        assert owned[0] and owned[1] and not owned[0] & owned[1]
        assert owned[0] | owned[1] == set(range(shards))
        for runtime, ownership in zip(runtimes, ownerships, strict=True):
            config = TimerConfig(poll=0.02, lease=600.0)
            workers.append(TimerWorker(runtime, config, ownership=ownership))
            workers[-1].start()

        users = [f"7910{n:07d}" for n in range(64)]
        await asyncio.gather(*(say(runtimes[0], u, "hi", n) for n, u in enumerate(users)))
        await until(lambda: len(fired_by) == len(users))
        for user in users:
            owner = 0 if shard_of(user, shards) in owned[0] else 1
            assert fired_by[user] == [owner], "fired once, by the worker owning its shard"

        # The second worker claims a due user of its shards for a long lease and
        # dies: no more heartbeats, its timers left to the first.
        await workers[1].stop()
        claimed = next(
            f"7930{n:07d}" for n in range(1000) if shard_of(f"7930{n:07d}", shards) in owned[1]
        )
        await say(runtimes[1], claimed, "hi", 0)
        await until(lambda: _due(runtimes[1], claimed))
        [claim] = await runtimes[1].store.timers_claim(
            time.time(), 600.0, 10, shards=sorted(owned[1])
        )
        assert claim.user == claimed
        await until(lambda: _owns_all(ownerships[0], shards), within=10.0)
        await until(lambda: claimed in fired_by, within=10.0)  # not after the 600 s lease
        assert fired_by[claimed] == [0]
        later = [f"7920{n:07d}" for n in range(32)]
        await asyncio.gather(*(say(runtimes[0], u, "hi", n) for n, u in enumerate(later)))
        await until(lambda: all(u in fired_by for u in later))
        assert any(shard_of(u, shards) in owned[1] for u in later)
        assert all(fired_by[u] == [0] for u in later), "the survivor fires the dead one's shards"
    finally:
        for worker in workers:
            await worker.stop()
        for runtime in runtimes:
            await runtime.stop()


async def _due(runtime: Runtime, user: str) -> bool:
    timers = (await runtime.store.load(user)).timers
    return bool(timers) and all(t.due <= time.time() for t in timers.values())


async def _owns_all(ownership: ShardOwnership, shards: int) -> bool:
    await ownership.refresh()
    return ownership.shards == list(range(shards))


async def test_a_claimed_timer_whose_worker_died_fires_after_the_lease(
    redis_url: str, redis_prefix: str
) -> None:
    fired: Counter[str] = Counter()
    fired_at: list[float] = []
    store = RedisStore(redis_url, bot="timers", prefix=redis_prefix, shards=8)
    bot = counting_bot(fired, after=0)
    runtime = Runtime(bot, store)
    await runtime.start()
    try:
        await say(runtime, "79001234567", "x", 1)
        # A worker claims the user and dies before it runs the timer.
        [claim] = await store.timers_claim(time.time(), 1.0, 10)
        worker = TimerWorker(runtime, FAST)
        original = runtime.run_timer

        async def recording(user: str, timer: object) -> object:
            fired_at.append(time.time())
            return await original(user, timer)  # type: ignore[arg-type]

        runtime.run_timer = recording  # type: ignore[method-assign,assignment]
        worker.start()
        try:
            await until(lambda: fired["79001234567:x"] == 1)
        finally:
            await worker.stop()
        assert fired_at and fired_at[0] >= claim.until, "not before the dead worker's lease ended"
        assert fired["79001234567:x"] == 1
    finally:
        await runtime.stop()


async def test_the_worker_skips_a_timer_cancelled_after_its_claim(
    redis_url: str, redis_prefix: str
) -> None:
    fired: Counter[str] = Counter()
    store = RedisStore(redis_url, bot="timers", prefix=redis_prefix, shards=8)
    bot = counting_bot(fired, after=0)
    runtime = Runtime(bot, store)
    await runtime.start()
    try:
        await say(runtime, "79001234567", "x", 1)
        [claim] = await store.timers_claim(time.time(), 0.2, 10)
        await say(runtime, "79001234567", "cancel", 2)
        # The cancelling commit took the user out of the index at once.
        assert await TimerWorker(runtime, FAST).fire_due() == 0
        assert fired == Counter()
        assert await store.timers_pending() == 0, "the user left the index"
        assert claim.user == "79001234567"
    finally:
        await runtime.stop()


# -- end to end: a real short flow timeout, over HTTP ---------------------------


def short_flow_bot() -> Bot:
    async def dropped(ctx: Context) -> None:
        await ctx.reply("your unfinished order was dropped")

    flow = Flow(
        "order",
        states=["size", "address"],
        transitions=[("sized", "size", "address")],
        timeout=1.0,
        on_timeout=dropped,
    )
    bot = Bot("short")
    bot.include_router(flow)

    @bot.text("order", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)
        await ctx.reply("which size?")

    @flow.text()
    async def size(ctx: Context) -> None:
        await ctx.flow.sized()
        await ctx.reply("which address?")

    return bot


async def test_a_flow_timeout_fires_over_http_with_no_further_message(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    store = make_store(clock)
    async with LiveBot(short_flow_bot(), store=store, clock=clock) as live:
        await live.say("79031234567", "order")
        await live.say("79031234567", "L")
        replies = await live.replies(3, within=20)
        texts = [r.message.text for r in replies]
        assert texts == ["which size?", "which address?", "your unfinished order was dropped"]
        conversation = await store.load("79031234567")
        assert conversation.state is None and conversation.timers == {}


async def test_a_timer_due_while_redis_is_down_fires_after_it_returns(tmp_path: Path) -> None:
    from bots.reminder import bot as reminder

    server = RedisServer(tmp_path)
    server.start()
    clock = ManualClock()
    try:
        store = RedisStore(server.url, bot="reminder", prefix="outage", clock=clock)
        async with LiveBot(reminder, store=store, clock=clock) as live:
            await live.say("79031234567", "remind me in 60 seconds stretch")
            await live.replies(1)
            server.kill()
            clock.advance(120)  # due while Redis is down
            await until(lambda: not server.answers())
            server.start()
            replies = await live.replies(2, within=30)
            assert [r.message.text for r in replies] == [
                "ok, I will remind you in 60 seconds",
                "reminder: stretch",
            ]
    finally:
        server.close()
