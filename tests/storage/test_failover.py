"""Failover: turns keep going when Redis loses its primary, and nothing is lost or doubled.

Each test runs turns through the real runtime and the Redis store the way the
provider drives a webhook: every user's messages one after another, a message
retried (same id) until the store takes it. Mid-load the primary gets SIGKILL;
the replica is promoted (by the sentinels, or by the cluster itself) and the
turns resume. Afterwards every user's conversation holds each of their
messages exactly once and in order, and the outbox holds exactly one reply per
message, in order: nothing committed was lost and nothing was answered twice.

The pause the turns saw (the longest time without a committed turn from the
failure on) is printed and recorded as a test property (``--junitxml`` shows it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from botkit import Bot, Context, Runtime, StoreConfig, TextMessage
from botkit.storage.base import StorageError, UserBusy
from botkit.storage.redis import RedisStore

from ._redis_topologies import RedisClusterNodes, SentinelGroup

pytestmark = pytest.mark.redis

USERS = 20
# Turns committed before the primary fails, and after the new one took over.
TURNS_BEFORE = 200
TURNS_AFTER = 200
# The provider retries a message it got no 200 for; this is how soon, here.
RETRY_AFTER = 0.02


def new_user() -> str:
    return "7" + str(uuid.uuid4().int)[:10]


def recording_bot() -> Bot:
    """A bot that appends each message's text to ``ctx.data["seen"]`` and echoes it."""
    bot = Bot("failover")

    @bot.text()
    async def record(ctx: Context) -> None:
        ctx.data.setdefault("seen", []).append(ctx.text)
        await ctx.reply(f"re:{ctx.text}")

    return bot


@dataclass
class Load:
    """The provider's side: each user's messages in order, each retried until taken.

    Users keep talking until :meth:`run` says stop; ``sent[user]`` is how many
    messages of the user are done (their texts are ``"0"``, ``"1"``...).
    """

    runtime: Runtime
    users: list[str]
    sent: dict[str, int] = field(default_factory=dict)
    commits_at: list[float] = field(default_factory=list)
    failures_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def committed(self) -> int:
        return len(self.commits_at)

    async def user_talks(self, user: str) -> None:
        self.sent[user] = 0
        retrying = False
        while True:
            if self.stop.is_set() and not retrying:
                return  # only between messages: one that failed goes on until it is done
            text = str(self.sent[user])
            message = TextMessage(id=f"{user}-{text}", user=user, text=text, timestamp=time.time())
            try:
                outcome = await self.runtime.handle_message(message)
            except (StorageError, UserBusy) as exc:
                # The webhook would answer 503: the provider sends it again.
                self.failures_at.append(time.monotonic())
                retrying = True
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_AFTER)
                continue
            if outcome.outcome == "in_progress":
                # An attempt whose answer was lost still holds the lock: retry later.
                retrying = True
                await asyncio.sleep(RETRY_AFTER)
                continue
            retrying = False
            # "handled", or "duplicate": an earlier attempt committed but its
            # answer was lost in the failover. Either way the message is done.
            assert outcome.outcome in ("handled", "duplicate"), outcome
            self.sent[user] += 1
            self.commits_at.append(time.monotonic())

    async def until_committed(self, count: int, *, within: float) -> None:
        async with asyncio.timeout(within):
            while self.committed < count:  # noqa: ASYNC110 (a count, not an event)
                await asyncio.sleep(0.005)

    async def run(self, fail: Callable[[], object], recovered: Callable[[], object]) -> float:
        """Talk; ``fail()`` once turns flow; go on until turns flow again after ``recovered()``.

        Both callables block (they run in a thread). Returns the longest pause
        the turns saw from ``fail()`` on: how long the failover stopped them.
        """
        talkers = [asyncio.create_task(self.user_talks(user)) for user in self.users]
        try:
            await self.until_committed(TURNS_BEFORE, within=30)
            failed_at = time.monotonic()
            await asyncio.to_thread(fail)
            await asyncio.to_thread(recovered)
            resumed = self.committed
            await self.until_committed(resumed + TURNS_AFTER, within=60)
            self.stop.set()
            async with asyncio.timeout(30):
                await asyncio.gather(*talkers)
        finally:
            for talker in talkers:
                talker.cancel()
        times = [failed_at, *(t for t in self.commits_at if t > failed_at)]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


async def check_nothing_lost_or_doubled(store: RedisStore, load: Load) -> None:
    """Every done message is in its user's conversation and has one reply, in order."""
    for user in load.users:
        expected = [str(n) for n in range(load.sent[user])]
        conversation = await store.load(user)
        assert conversation.data.get("seen", []) == expected, f"user ...{user[-4:]}"
    replies: dict[str, list[str]] = {user: [] for user in load.users}
    while True:
        items = await store.outbox_read("checker", 1000, 0.05)
        if not items:
            break
        for item in items:
            replies[item.message.user].append(str(item.message.text))
        await store.outbox_ack([item.id for item in items])
    for user in load.users:
        expected = [f"re:{n}" for n in range(load.sent[user])]
        assert replies[user] == expected, f"user ...{user[-4:]}"


async def test_sentinel_failover_loses_nothing_and_answers_nothing_twice(
    redis_sentinel: SentinelGroup, record_property: Callable[[str, object], None]
) -> None:
    store = RedisStore(
        redis_sentinel.url,
        bot="failover",
        prefix=f"failover-{uuid.uuid4().hex[:8]}",
        socket_timeout=1.0,
        # A turn whose commit answer was lost holds its user for lock_ttl.
        config=StoreConfig(lock_ttl=2.0, acquire_timeout=2.0),
    )
    runtime = Runtime(recording_bot(), store)
    await runtime.start()
    load = Load(runtime, [new_user() for _ in range(USERS)])
    failed: list[int] = []
    try:
        pause = await load.run(
            lambda: failed.append(redis_sentinel.kill_primary()),
            lambda: redis_sentinel.wait_promoted(failed[0]),
        )
        promoted = redis_sentinel.current_primary()
        assert promoted is not None and promoted != failed[0]
        await check_nothing_lost_or_doubled(store, load)
    finally:
        await runtime.stop()
        await store.close()
        redis_sentinel.heal()
    record_property("pause_seconds", round(pause, 2))
    print(f"\nSentinel failover (SIGKILL of the primary): turns paused {pause:.2f}s")


async def test_cluster_failover_loses_nothing_and_answers_nothing_twice(
    redis_cluster: RedisClusterNodes, record_property: Callable[[str, object], None]
) -> None:
    """SIGKILL of a primary of the local cluster: its replica takes over its slots
    (node timeout 1 s) and the turns of its users resume there."""
    store = RedisStore(
        redis_cluster.url,
        bot="failover",
        prefix=f"failover-{uuid.uuid4().hex[:8]}",
        socket_timeout=1.0,
        config=StoreConfig(lock_ttl=2.0, acquire_timeout=2.0),
    )
    runtime = Runtime(recording_bot(), store)
    await runtime.start()
    load = Load(runtime, [new_user() for _ in range(USERS)])
    failed: list[int] = []
    try:
        pause = await load.run(
            lambda: failed.append(redis_cluster.kill_primary()),
            lambda: redis_cluster.wait_promoted(failed[0]),
        )
        await check_nothing_lost_or_doubled(store, load)
    finally:
        await runtime.stop()
        await store.close()
        redis_cluster.heal()
    record_property("pause_seconds", round(pause, 2))
    print(f"\nCluster failover (SIGKILL of a primary): turns paused {pause:.2f}s")
