"""The Redis store against a real Redis: processes, crashes, restarts, slots, round trips.

The shared test Redis (``redis_url``) serves tests that only need a server;
tests that stop, freeze or re-role a server start a private ``redis-server``
(:class:`RedisServer`). Waits are on conditions with deadlines, never on
sleeps that hope something happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import socket
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from botkit import Bot, Context, OutboundMessage, Runtime, SendMode, StoreConfig, TextMessage
from botkit.storage import SentRecord
from botkit.storage.base import (
    DuplicateMessage,
    LockLost,
    StorageError,
    StorageUnavailable,
    TurnLease,
    UserBusy,
)
from botkit.storage.redis import RedisStore, StoreLayoutError
from botkit.storage.redis.keys import Keys, shard_tags
from botkit.storage.redis.runner import ScriptRunner
from tests.helpers import free_port, wait_for

from ._redis_server import RedisServer
from ._redis_worker import keys as probe_keys

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def new_user() -> str:
    return "7" + str(uuid.uuid4().int)[:10]


def text(user: str, body: str, **kw: Any) -> OutboundMessage:
    return OutboundMessage(user=user, mode=SendMode.TEXT, text=body, **kw)


def message(user: str, message_id: str | None = None) -> TextMessage:
    return TextMessage(
        id=message_id or uuid.uuid4().hex, user=user, text="+1", timestamp=time.time()
    )


async def until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail after ``within``.

    The conditions live in Redis or another process, so there is no event to await.
    """
    await wait_for(condition, within=within, every=0.01)


def counting_bot(name: str = "race") -> Bot:
    """A bot that counts its messages in ``ctx.data`` and replies with the count."""
    bot = Bot(name)

    @bot.text()
    async def count(ctx: Context) -> None:
        ctx.data["count"] = ctx.data.get("count", 0) + 1
        await ctx.reply(str(ctx.data["count"]))

    return bot


@pytest.fixture
async def make_store(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Build opened stores on the shared test Redis under this test's prefix."""
    built: list[RedisStore] = []

    async def make(**kw: Any) -> RedisStore:
        kw.setdefault("config", StoreConfig(lock_ttl=5.0, acquire_timeout=5.0))
        kw.setdefault("url", redis_url)
        store = RedisStore(bot="race", prefix=redis_prefix, **kw)
        await store.open()
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (AOF fsynced on every write) the test may kill and restart."""
    srv = RedisServer(tmp_path)
    srv.start()
    yield srv
    srv.close()


async def spawn(cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.storage._redis_worker",
        json.dumps(cfg),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def run_two_workers(
    redis_url: str, prefix: str, user: str, ids: tuple[list[str], list[str]]
) -> list[dict[str, Any]]:
    """Start two worker processes, release them together, and collect their reports."""
    probe = aioredis.Redis.from_url(redis_url, decode_responses=True)
    shared = probe_keys(prefix)
    workers = [
        await spawn({"mode": "turns", "url": redis_url, "prefix": prefix, "user": user, "ids": i})
        for i in ids
    ]
    try:
        # Ready signals queue up in a list, so none is missed however late the
        # probe looks. A cold start on a loaded machine is slow, so the wait is
        # long but ends early: as soon as both are ready, or one has exited.
        started, deadline = 0, time.monotonic() + 180
        while started < len(workers):
            if await probe.blpop([shared["ready"]], timeout=1):
                started += 1
                continue
            exited = [w.returncode for w in workers if w.returncode is not None]
            assert not exited, f"a worker exited ({exited}) before it was ready"
            assert time.monotonic() < deadline, "a worker did not start within 180 s"
        await probe.rpush(shared["go"], *["go"] * len(workers))
        async with asyncio.timeout(180):  # a bound for a hang; a passing run takes seconds
            outputs = [await w.communicate() for w in workers]
        assert all(w.returncode == 0 for w in workers)
        assert await probe.get(shared["overlaps"]) is None, "two handlers of one user overlapped"
        return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    finally:
        for w in workers:
            if w.returncode is None:
                w.kill()
                await w.wait()
        await probe.aclose()


# -- several processes ---------------------------------------------------------------


async def test_two_processes_run_200_turns_of_one_user_one_at_a_time(
    redis_url: str, redis_prefix: str, make_store: Callable[..., Any]
) -> None:
    user = new_user()
    ids = ([f"a{i}" for i in range(100)], [f"b{i}" for i in range(100)])
    reports = await run_two_workers(redis_url, redis_prefix, user, ids)

    assert [r["outcomes"] for r in reports] == [{"handled": 100}, {"handled": 100}]
    assert [r["waiting_users"] for r in reports] == [0, 0]
    conversation = await (await make_store()).load(user)
    assert conversation.data["count"] == 200
    assert sorted(conversation.data["by"].values()) == [100, 100]
    assert conversation.version == 200


async def test_one_message_delivered_to_both_processes_runs_once(
    redis_url: str, redis_prefix: str, make_store: Callable[..., Any]
) -> None:
    user = new_user()
    ids = [f"m{i}" for i in range(40)]
    reports = await run_two_workers(redis_url, redis_prefix, user, (ids, list(ids)))

    handled = sum(r["outcomes"].get("handled", 0) for r in reports)
    # The other copy was either already done or still running ("in_progress",
    # which the webhook answers 503 so the provider retries it).
    duplicates = sum(
        r["outcomes"].get("duplicate", 0) + r["outcomes"].get("in_progress", 0) for r in reports
    )
    assert (handled, duplicates) == (40, 40)
    assert (await (await make_store()).load(user)).data["count"] == 40


async def test_stale_holder_in_another_process_cannot_commit_over_a_newer_turn(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    slow = await make_store(config=StoreConfig(lock_ttl=0.3, acquire_timeout=5.0))
    fast = await make_store(config=StoreConfig(lock_ttl=5.0, acquire_timeout=5.0))
    user = new_user()
    stale = await slow.begin_turn(user, "m:1")
    newer = await fast.begin_turn(user, "m:2")  # waits for the stale lock to expire
    conv = newer.conversation.copy()
    conv.data["owner"] = "newer"
    await fast.commit_turn(newer, conv, [text(user, "from the newer turn")])

    old = stale.conversation.copy()
    old.data["owner"] = "stale"
    with pytest.raises(LockLost):
        await slow.commit_turn(stale, old, [text(user, "from the stale turn")])
    loaded = await fast.load(user)
    assert (loaded.data, loaded.version) == ({"owner": "newer"}, 1)
    items = await fast.outbox_read("c", 10, 0)
    assert [i.message.text for i in items] == ["from the newer turn"]
    # The stale turn's message was not marked done: a retry of it runs.
    again = await fast.begin_turn(user, "m:1")
    await fast.commit_turn(again, None)


async def test_turn_of_a_killed_process_runs_again_once_its_lock_expires(
    redis_url: str, redis_prefix: str, make_store: Callable[..., Any]
) -> None:
    user, message_id = new_user(), "wamid-killed"
    holder = await spawn(
        {
            "mode": "hold",
            "url": redis_url,
            "prefix": redis_prefix,
            "user": user,
            "key": f"m:{message_id}",
            "lock_ttl": 2.0,
        }
    )
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(30):
            assert (await holder.stdout.readline()).strip() == b"began"
    finally:
        holder.kill()
        await holder.wait()

    store = await make_store(config=StoreConfig(lock_ttl=5.0, acquire_timeout=0.1))
    runtime = Runtime(counting_bot(), store)
    # Before the lock expires: the retry is "in progress", another message is refused.
    assert (await runtime.handle_message(message(user, message_id))).outcome == "in_progress"
    with pytest.raises(UserBusy):
        await runtime.handle_message(message(user))

    probe = aioredis.Redis.from_url(redis_url, decode_responses=True)
    lock = Keys(redis_prefix, "race").turn(user)[1]
    try:
        await until(lambda: _gone(probe, lock), within=10)
    finally:
        await probe.aclose()
    outcome = await runtime.handle_message(message(user, message_id))
    assert outcome.outcome == "handled"
    assert (await store.load(user)).data == {"count": 1}


async def _gone(client: aioredis.Redis, key: str) -> bool:
    return not await client.exists(key)


# -- the server goes away --------------------------------------------------------------


async def test_killed_redis_fails_fast_loses_nothing_and_the_store_resumes(
    server: RedisServer,
) -> None:
    store = RedisStore(
        server.url,
        bot="race",
        prefix="t",
        socket_timeout=1.0,
        config=StoreConfig(lock_ttl=30.0, acquire_timeout=10.0),
    )
    other = RedisStore(server.url, bot="race", prefix="t", socket_timeout=1.0)
    await store.open()
    runtime = Runtime(counting_bot(), store)
    users = [new_user() for _ in range(3)]
    succeeded = dict.fromkeys(users, 0)
    killed_at: list[float] = []
    failed_after: list[float] = []

    async def keep_talking(user: str) -> None:
        while True:
            try:
                await runtime.handle_message(message(user))
            except StorageUnavailable:
                failed_after.append(time.monotonic() - killed_at[0])
                return
            succeeded[user] += 1

    talkers = [asyncio.create_task(keep_talking(u)) for u in users]
    try:
        await until(lambda: _true(sum(succeeded.values()) >= 60), within=20)
        killed_at.append(time.monotonic())
        server.kill()
        async with asyncio.timeout(10):  # bounded: no hang, no endless retries
            await asyncio.gather(*talkers)
    finally:
        for t in talkers:
            t.cancel()
    assert len(failed_after) == 3
    with pytest.raises(StorageUnavailable):
        await runtime.handle_message(message(users[0]))
    assert await store.ping() is False

    server.start()  # the AOF brings back everything acknowledged
    check = server.client()
    committed = 0
    for user in users:
        fields = check.hgetall(Keys("t", "race").conv(user))
        count = json.loads(fields["data"])["count"]
        # A turn in flight when the server died may have committed without hearing so.
        assert succeeded[user] <= count <= succeeded[user] + 1
        assert int(fields["version"]) == count, "state and version were written together"
        committed += count
    queued = sum(check.xlen(Keys("t", "race").outbox(shard)) for shard in range(256))
    assert queued == committed, "each committed turn queued its one reply"

    # The same store object works again: new connections, and the wake-up channel.
    # (A new user: the turn in flight at the crash left its user's lock for lock_ttl.)
    outcome = await runtime.handle_message(message(new_user()))
    assert outcome.outcome == "handled"
    await until(lambda: _true(store.wake_ups_subscribed), within=10)
    await other.open()
    user = new_user()
    held = await other.begin_turn(user, "m:held")
    waiting = asyncio.create_task(store.begin_turn(user, "m:next"))
    await until(lambda: _true(check.exists(Keys("t", "race").turn(user)[2]) == 1))
    await other.commit_turn(held, None)
    # The lock would stay 30 s; only the published wake-up lets the waiter in this soon.
    async with asyncio.timeout(5):
        lease = await waiting
    await store.commit_turn(lease, None)
    await other.close()
    await store.close()
    check.close()


async def _true(value: bool) -> bool:
    return value


async def test_frozen_redis_times_out_within_the_socket_timeout(server: RedisServer) -> None:
    store = RedisStore(server.url, bot="race", prefix="t", socket_timeout=0.3)
    await store.open()
    server.freeze()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(StorageUnavailable, match="did not answer"):
                await store.begin_turn(new_user(), "m:1")
            assert await store.ping() is False
    finally:
        server.thaw()
    lease = await store.begin_turn(new_user(), "m:2")
    await store.commit_turn(lease, None)
    await store.close()


async def test_read_only_redis_is_unavailable_and_nothing_is_written(server: RedisServer) -> None:
    store = RedisStore(server.url, bot="race", prefix="t")
    await store.open()
    user = new_user()
    check = server.client()
    check.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        with pytest.raises(StorageUnavailable, match="read-only"):
            await store.begin_turn(user, "m:1", inbound_at=1000.0)
        assert check.keys(f"t:*{user}*") == []
        with pytest.raises(StorageUnavailable):
            await store.enqueue([text(user, "hi")])
    finally:
        check.execute_command("REPLICAOF", "NO", "ONE")
    lease = await store.begin_turn(user, "m:1", inbound_at=1000.0)
    await store.commit_turn(lease, None)
    assert (await store.load(user)).last_inbound == 1000.0
    await store.close()
    check.close()


async def test_a_server_that_forgot_scripts_and_the_group_is_served_again(
    server: RedisServer,
) -> None:
    store = RedisStore(server.url, bot="race", prefix="t")
    await store.open()
    check = server.client()
    check.script_flush()
    check.flushall()
    user = new_user()
    lease = await store.begin_turn(user, "m:1")  # NOSCRIPT: loaded again
    await store.commit_turn(lease, None, [text(user, "hi")])
    [item] = await store.outbox_read("c", 10, 0)  # the stream exists, the group did not
    assert item.message.text == "hi"
    await store.outbox_ack([item.id])
    assert await store.outbox_size() == 0
    await store.close()
    check.close()


async def test_an_acknowledgement_over_many_shards_after_the_scripts_were_forgotten(
    server: RedisServer,
) -> None:
    store = RedisStore(server.url, bot="race", prefix="t")
    await store.open()
    check = server.client()
    users = [new_user() for _ in range(6)]
    await store.enqueue([text(user, "hi") for user in users])
    items = await store.outbox_read("c", 10, 0)
    assert len({Keys("t", "race").shard(i.message.user) for i in items}) > 1  # a call per shard
    check.script_flush()
    await store.outbox_ack([i.id for i in items])  # each call: NOSCRIPT, loaded again
    assert await store.outbox_size() == 0
    assert await store.outbox_unacked("c", 10) == []
    await store.close()
    check.close()


async def test_a_quiet_unlock_channel_stays_subscribed(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import botkit.storage.redis.waiters as module

    monkeypatch.setattr(module, "_PUBSUB_PING_EVERY", 0.1)
    monkeypatch.setattr(module, "_PUBSUB_SILENCE", 0.25)
    store = RedisStore(server.url, bot="race", prefix="t")
    await store.open()
    check = server.client()

    def pings() -> int:
        return int(check.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    await until(lambda: _true(pings() >= 5))  # silence would have been declared 3 times
    assert "unlock channel lost" not in caplog.text
    # Every shard's wake-up channel is followed, once.
    channels = check.pubsub_shardchannels("t:race:*:unlock")
    assert len(channels) == len(store.outbox_shards())
    assert {n for _, n in check.pubsub_shardnumsub(*channels)} == {1}
    await store.close()
    check.close()


async def test_unreachable_redis_is_reported_at_open_and_ping_is_false() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    async with asyncio.timeout(5):
        with pytest.raises(StorageUnavailable, match="BOTKIT_REDIS_URL"):
            await store.open()
        assert await store.ping() is False
    await store.close()


# -- layout and cost ---------------------------------------------------------------------


async def test_every_key_of_a_user_is_in_one_cluster_slot(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    store = await make_store()
    check = redis.Redis.from_url(redis_url, decode_responses=True)
    user = new_user()
    seen: set[str] = set()

    def snapshot() -> None:
        seen.update(check.scan_iter(match=f"{redis_prefix}:*", count=1000))

    first = await store.begin_turn(user, "m:1", inbound_at=1000.0)
    second = asyncio.create_task(store.begin_turn(user, "m:2"))
    await until(lambda: _true(check.exists(Keys(redis_prefix, "race").turn(user)[2]) == 1))
    snapshot()
    await store.commit_turn(first, first.conversation.copy(), [text(user, "a")])
    lease = await second
    snapshot()
    await store.commit_turn(lease, None, [text(user, "b", not_before=time.time() + 3600)])
    snapshot()
    check.close()

    keys = Keys(redis_prefix, "race")
    mine = sorted(k for k in seen if k.startswith(keys.user(user) + ":"))
    kinds = {k.removeprefix(keys.user(user) + ":") for k in mine}
    assert kinds == {"conv", "lock", "waiting", "seen"}  # the send order is in conv
    shard = keys.shard(user)
    shard_keys = [keys.outbox(shard), keys.delayed(shard)]
    assert set(shard_keys) <= seen
    others = {k for k in seen if k not in mine and k not in shard_keys and "{" in k}
    assert others == {keys.outbox(s) for s in range(256) if s != shard}, "empty streams only"
    # The user's keys and their shard's keys: one slot, the shard tag's.
    slots = {key_slot(k.encode()) for k in mine + shard_keys}
    assert slots == {key_slot(shard_tags(256)[shard].encode())}, mine
    assert sorted(k for k in seen if "{" not in k) == [f"{redis_prefix}:race:meta"]


def test_shard_tags_spread_the_shards_evenly_over_the_cluster_slots() -> None:
    for shards in (1, 3, 16, 256, 1000):
        tags = shard_tags(shards)
        assert len(set(tags)) == shards and all("{" not in t and "}" not in t for t in tags)
        slots = [key_slot(tag.encode()) for tag in tags]
        # Shard i lands in the i-th of ``shards`` equal slot ranges: on a cluster of
        # any size, each primary gets its share of shards, give or take one per range edge.
        assert [slot * shards // 16384 for slot in slots] == list(range(shards))
    per_primary = [0, 0, 0]
    for tag in shard_tags(256):  # three primaries, as redis-cli splits the slots
        per_primary[min(key_slot(tag.encode()) * 3 // 16384, 2)] += 1
    assert max(per_primary) - min(per_primary) <= 1, per_primary


async def test_a_store_started_with_another_shard_count_refuses_to_open(
    redis_url: str, redis_prefix: str
) -> None:
    first = RedisStore(redis_url, bot="race", prefix=redis_prefix, shards=16)
    await first.open()
    await first.close()
    other = RedisStore(redis_url, bot="race", prefix=redis_prefix, shards=32)
    with pytest.raises(StoreLayoutError, match="created with 16 shards"):
        await other.open()
    await other.close()
    # Without a number, a store takes the one Redis has.
    same = RedisStore(redis_url, bot="race", prefix=redis_prefix)
    await same.open()
    assert len(same.outbox_shards()) == 16
    user = new_user()
    lease = await same.begin_turn(user, "m:1")
    await same.commit_turn(lease, None, [text(user, "hi")])
    [item] = await same.outbox_read("c", 10, 0)
    assert item.message.text == "hi"
    await same.close()


async def test_dedupe_and_sent_records_stay_bounded_per_user(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    """Memory grows with users, not messages: each user keeps their last K of each."""
    store = await make_store(config=StoreConfig(seen_per_user=4, sent_per_user=3))
    user = new_user()
    for n in range(10):
        lease = await store.begin_turn(user, f"m:{n}")
        await store.commit_turn(lease, None, [text(user, f"#{n}")])
    # The last four are duplicates; older ones are forgotten (a retry would run again).
    for n in range(6, 10):
        with pytest.raises(DuplicateMessage):
            await store.begin_turn(user, f"m:{n}")
    lease = await store.begin_turn(user, "m:0")
    await store.abort_turn(lease)
    items = await store.outbox_read("c", 100, 0)
    records = [
        SentRecord(message_id=f"id{n}", message=item.message, sent_at=float(n))
        for n, item in enumerate(items)
    ]
    await store.outbox_ack([item.id for item in items], records, answered=items)
    assert [await store.get_sent(f"id{n}", user=user) for n in range(7)] == [None] * 7
    for n in range(7, 10):
        assert await store.get_sent(f"id{n}", user=user) == records[n]
    check = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(redis_prefix, "race")
    assert (check.llen(keys.refs(user)), check.llen(keys.turn(user)[3])) == (6, 4)
    # Once a message reached the user, its content is not kept: nothing will resend it.
    await store.update_sent(dataclasses.replace(records[9], status="DELIVERED"))
    kept = await store.get_sent("id9", user=user)
    assert kept is not None and (kept.status, kept.message.text) == ("DELIVERED", None)
    assert kept.message.ref == records[9].message.ref
    assert await store.get_sent("id8", user=user) == records[8]
    # Receipts (status callbacks for replies not yet acknowledged) share the bound.
    other = new_user()
    queued = [text(other, f"#{n}") for n in range(5)]
    await store.enqueue(queued)
    for n, message in enumerate(queued):
        await store.record_receipt(other, message.ref, f"p{n}", "delivered")
    items = await store.outbox_read("c", 100, 0)
    found = await store.receipts(items)
    assert [None if r is None else r.message_id for r in found] == [None, None, "p2", "p3", "p4"]
    assert check.llen(keys.refs(other)) == 6
    mine = list(check.scan_iter(match=keys.user(user) + "*"))
    mine += check.scan_iter(match=keys.user(other) + "*")
    # Per user: conversation, dedupe list, sent records (receipts among them),
    # transcript; no key per message or per receipt.
    kinds = sorted(key.rsplit(":", 1)[1] for key in mine)
    assert set(kinds) <= {"conv", "seen", "refs", "transcript"}, mine
    assert kinds.count("refs") == kinds.count("conv") == 2, mine
    assert all(check.pttl(key) > 0 for key in mine), "every key has a TTL"
    check.close()


async def test_entries_a_read_took_beyond_its_count_come_back_when_other_shards_are_read(
    make_store: Callable[..., Any],
) -> None:
    """A sender whose shards moved (a failover made it read every shard for a while)
    still gets what its wide read took: nothing stays pending with a live sender."""
    store = await make_store(shards=8)
    users: dict[int, str] = {}
    while len(users) < 2:
        user = new_user()
        users.setdefault(Keys("x", "y", 8).shard(user), user)
    (first, a), (second, b) = sorted(users.items())
    await store.enqueue([text(a, "to a"), text(b, "to b")])
    # Every shard, one entry wanted: one shard's entry comes back, the other's is taken too.
    [taken] = await store.outbox_read("sender", 1, 0)
    [other] = [shard for shard in (first, second) if not taken.id.startswith(f"{shard}:")]
    # Now only the taken entry's shard: the other one's entry still comes.
    again = await store.outbox_read("sender", 10, 0, shards=[int(taken.id.partition(":")[0])])
    assert [item.id.partition(":")[0] for item in again] == [str(other)]
    assert {taken.message.text, *(item.message.text for item in again)} == {"to a", "to b"}


async def test_with_wait_replicas_a_turn_is_done_only_once_a_replica_has_it(
    server: RedisServer, tmp_path: Path
) -> None:
    # The primary syncs its first replica at once, not after the default 5 s wait
    # for more replicas (as in tests/storage/_redis_topologies.py).
    primary = server.client()
    primary.config_set("repl-diskless-sync-delay", 0)
    follows = ("--replicaof", "127.0.0.1", str(server.port))
    replica = RedisServer(tmp_path / "replica", extra=follows)
    replica.start()
    check = replica.client()
    store = RedisStore(server.url, bot="wait", prefix="t", socket_timeout=1.0, wait_replicas=1)
    try:
        await until(lambda: _true(check.info("replication")["master_link_status"] == "up"))
        # Linked is not yet confirming: wait until the replica acknowledges a write.
        primary.set("t:warm-up", "1")
        await until(lambda: _true(primary.wait(1, 100) == 1))
        await store.open()
        user = new_user()
        lease = await store.begin_turn(user, "m:1")
        await store.commit_turn(lease, None, [text(user, "one")])
        lease = await store.begin_turn(user, "m:2")
        replica.freeze()  # the replica stops confirming anything
        with pytest.raises(StorageUnavailable, match=r"did not confirm the write on 1 replica"):
            await store.commit_turn(lease, None, [text(user, "two")])
        replica.thaw()
        # The commit stayed on the primary: the provider's retry finds it done.
        with pytest.raises(DuplicateMessage):
            await store.begin_turn(user, "m:2")
    finally:
        replica.close()
        check.close()
        primary.close()
        await store.close()


async def test_a_conversation_lives_at_least_the_session_window(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    store = await make_store(config=StoreConfig(conversation_ttl=60.0), session_window=86_400)
    user = new_user()
    lease = await store.begin_turn(user, "m:1", inbound_at=time.time())
    await store.commit_turn(lease, lease.conversation.copy())
    check = redis.Redis.from_url(redis_url)
    keys = Keys(redis_prefix, "race")
    assert check.pttl(keys.conv(user)) > 86_000_000
    assert 0 < check.pttl(keys.turn(user)[3]) <= 2 * 86_400_000
    check.close()


async def test_begin_and_commit_are_one_round_trip_each(server: RedisServer) -> None:
    store = RedisStore(server.url, bot="race", prefix="t")
    await store.open()
    watcher = aioredis.Redis.from_url(server.url, decode_responses=True)
    marker = aioredis.Redis.from_url(server.url, decode_responses=True)
    await marker.ping()  # its handshake done before watching
    user = new_user()
    warm = await store.begin_turn(user, "m:0")  # connections made, handshakes done
    await store.commit_turn(warm, None)

    async def commands_sent(turn: Callable[[], Awaitable[Any]]) -> list[str]:
        """The commands clients sent while ``turn`` ran (not those run inside scripts)."""
        sent: list[str] = []
        async with watcher.monitor() as monitor:
            await turn()
            await marker.echo("monitor-end")
            while True:
                command = await monitor.next_command()
                if "monitor-end" in command["command"]:
                    return sent
                if command["client_type"] != "lua" and not command["command"].startswith("PING"):
                    sent.append(command["command"].split()[0])

    leases: list[TurnLease] = []

    async def begin() -> None:
        leases.append(await store.begin_turn(user, "m:1", inbound_at=time.time()))

    assert await commands_sent(begin) == ["EVALSHA"]
    conv = leases[0].conversation.copy()
    conv.data["n"] = 1
    outbox = [text(user, "one"), text(user, "two")]
    assert await commands_sent(lambda: store.commit_turn(leases[0], conv, outbox)) == ["EVALSHA"]
    assert (await store.load(user)).data == {"n": 1}
    await store.close()
    await watcher.aclose()
    await marker.aclose()


async def test_no_per_user_state_stays_in_the_process(make_store: Callable[..., Any]) -> None:
    store = await make_store()
    runtime = Runtime(counting_bot(), store)
    users = [new_user() for _ in range(40)]
    await asyncio.gather(*(runtime.handle_message(message(u)) for u in users for _ in range(5)))
    assert [(await store.load(u)).data["count"] for u in users] == [5] * 40
    assert store.waiting_users == 0
    assert store.background_tasks == 0


async def test_waiters_of_one_process_take_the_lock_in_arrival_order(
    make_store: Callable[..., Any],
) -> None:
    store = await make_store()
    user = new_user()
    holder = await store.begin_turn(user, "m:0")
    order: list[int] = []

    async def turn(i: int) -> None:
        lease = await store.begin_turn(user, f"m:{i}")
        order.append(i)
        await store.commit_turn(lease, None)

    waiters = []
    for i in range(1, 6):
        waiters.append(asyncio.create_task(turn(i)))
        await until(lambda i=i: _true(store.waiting_turns(user) == i))
    await store.commit_turn(holder, None)
    async with asyncio.timeout(5):
        await asyncio.gather(*waiters)
    assert order == [1, 2, 3, 4, 5]
    assert store.waiting_users == 0


async def test_a_cancelled_waiter_leaves_nothing_behind_and_blocks_nobody(
    make_store: Callable[..., Any],
) -> None:
    store = await make_store()
    user = new_user()
    holder = await store.begin_turn(user, "m:1")
    first = asyncio.create_task(store.begin_turn(user, "m:2"))
    await until(lambda: _true(store.waiting_turns(user) == 1))
    second = asyncio.create_task(store.begin_turn(user, "m:3"))
    await until(lambda: _true(store.waiting_turns(user) == 2))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await store.commit_turn(holder, None)
    async with asyncio.timeout(5):
        lease = await second
    await store.commit_turn(lease, None)
    assert store.waiting_users == 0
    lease = await store.begin_turn(user, "m:2")  # the cancelled turn's message can still run
    await store.commit_turn(lease, None)


async def test_next_waiter_takes_over_when_the_turn_before_it_never_commits(
    make_store: Callable[..., Any],
) -> None:
    store = await make_store(config=StoreConfig(lock_ttl=0.3, acquire_timeout=5.0))
    user = new_user()
    holder = await store.begin_turn(user, "m:1")
    first = asyncio.create_task(store.begin_turn(user, "m:2"))
    await until(lambda: _true(store.waiting_turns(user) == 1))
    second = asyncio.create_task(store.begin_turn(user, "m:3"))
    await until(lambda: _true(store.waiting_turns(user) == 2))
    await store.commit_turn(holder, None)
    abandoned = await first  # its process hangs: no commit, no abort
    async with asyncio.timeout(4):
        lease = await second  # once the abandoned lock expires
    with pytest.raises(LockLost):
        await store.commit_turn(abandoned, None)
    await store.commit_turn(lease, None)
    assert store.waiting_users == 0


async def test_delayed_replies_of_a_turn_wait_in_the_delayed_set(
    make_store: Callable[..., Any],
) -> None:
    store = await make_store()
    user = new_user()
    at = time.time() + 3600
    lease = await store.begin_turn(user, "m:1")
    await store.commit_turn(lease, None, [text(user, "later", not_before=at), text(user, "now")])
    assert [i.message.text for i in await store.outbox_read("c", 10, 0)] == ["now"]
    assert await store.outbox_size() == 2  # one in flight, one delayed
    assert await store.outbox_release_due(at) == 1
    assert [i.message.text for i in await store.outbox_read("c", 10, 0.5)] == ["later"]


async def test_non_json_data_is_refused_before_anything_is_written(
    make_store: Callable[..., Any],
) -> None:
    store = await make_store()
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    conv = lease.conversation.copy()
    conv.data["when"] = object()
    with pytest.raises(TypeError, match="JSON values"):
        await store.commit_turn(lease, conv)
    await store.commit_turn(lease, None)  # the lock was still ours: nothing was written
    with pytest.raises(DuplicateMessage):
        await store.begin_turn(user, "m:1")


# -- Sentinel --------------------------------------------------------------------------


async def test_sentinel_url_finds_the_primary(server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {server.port} 1\n"
    )
    sentinel = await asyncio.create_subprocess_exec(
        server.binary,
        str(conf),
        "--sentinel",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        await until(lambda: _true(_answers(probe)))
        probe.close()
        store = RedisStore(f"redis+sentinel://127.0.0.1:{port}/mymaster/0", bot="race", prefix="t")
        await store.open()
        user = new_user()
        lease = await store.begin_turn(user, "m:1", inbound_at=1000.0)
        await store.commit_turn(lease, None)
        assert (await store.load(user)).last_inbound == 1000.0
        assert server.client().exists(Keys("t", "race").conv(user)) == 1
        await store.close()
    finally:
        sentinel.kill()
        await sentinel.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


async def test_a_release_during_the_first_attempt_is_not_lost(
    make_store: Callable[..., Any],
) -> None:
    # Many short turns of a few users from two stores (two processes' worth): a
    # release that lands while another turn's first BEGIN is in flight must wake
    # that turn, not leave it waiting until the acquire timeout (UserBusy).
    config = StoreConfig(lock_ttl=30.0, acquire_timeout=5.0)
    stores = [await make_store(config=config), await make_store(config=config)]
    users = [new_user() for _ in range(20)]
    rng = random.Random(7)
    waits: list[float] = []

    async def connection() -> None:
        for _ in range(60):
            store, user = rng.choice(stores), rng.choice(users)
            started = time.monotonic()
            lease = await store.begin_turn(user, f"m:{uuid.uuid4().hex}")
            waits.append(time.monotonic() - started)
            await asyncio.sleep(rng.random() * 0.01)
            await store.commit_turn(lease, lease.conversation)

    await asyncio.gather(*(connection() for _ in range(32)))
    assert len(waits) == 32 * 60
    assert max(waits) < 2.0, f"a turn waited {max(waits):.2f}s for a lock released long before"


async def test_a_failing_call_never_fails_the_other_calls_of_its_batch(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    """Calls of one event-loop step share a pipeline; each call's error is its own."""
    store = await make_store()
    users = [new_user() for _ in range(12)]
    wrong_type, poison = users[0], users[1]
    check = redis.Redis.from_url(redis_url, decode_responses=True)
    check.set(Keys(redis_prefix, "race").conv(wrong_type), "not a hash")  # WRONGTYPE for HMGET

    async def begin(user: str) -> TurnLease | BaseException:
        try:
            return await store.begin_turn(user, f"m:{user}")
        except Exception as exc:
            return exc

    began = await asyncio.gather(*(begin(user) for user in users))  # one pipeline
    assert isinstance(began[0], StorageError) and "WRONGTYPE" in str(began[0])
    leases = [lease for lease in began[1:] if isinstance(lease, TurnLease)]
    assert len(leases) == len(users) - 1

    async def commit(lease: TurnLease) -> BaseException | None:
        conv = lease.conversation.copy()
        conv.data["text"] = "\ud800 lone surrogate" if lease.user == poison else "fine"
        try:
            await store.commit_turn(lease, conv, [text(lease.user, conv.data["text"])])
        except Exception as exc:
            return exc
        return None

    committed = await asyncio.gather(*(commit(lease) for lease in leases))  # one pipeline
    assert isinstance(committed[0], StorageError) and "nothing was written" in str(committed[0])
    assert committed[1:] == [None] * (len(leases) - 1)
    for user in users[2:]:
        assert (await store.load(user)).data == {"text": "fine"}
    assert await store.outbox_size() == len(users) - 2
    # The poison turn's lock is still its own: aborting it frees the user for the next turn.
    await store.abort_turn(leases[0])
    lease = await store.begin_turn(poison, "m:next")
    await store.commit_turn(lease, None)
    check.close()


class ResettingProxy:
    """A TCP proxy to Redis that can reset every connection through it (RST, not FIN)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.clients: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self.clients.append(writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    def reset_all(self) -> None:
        for writer in self.clients:
            if writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.clients.clear()

    async def close(self) -> None:
        self.reset_all()
        if self.server is not None:
            self.server.close()


async def test_a_reset_connection_is_storage_unavailable_and_the_next_turn_reconnects(
    server: RedisServer,
) -> None:
    proxy = ResettingProxy(server.port)
    port = await proxy.start()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", bot="reset", prefix="t")
    await store.open()
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    proxy.reset_all()  # the store's connections now get RST
    with pytest.raises(StorageUnavailable, match="did not answer"):
        await store.commit_turn(lease, None)
    await store.abort_turn(lease)  # on a new connection, as the runtime does after a failure
    lease = await store.begin_turn(user, "m:2", inbound_at=time.time())
    await store.commit_turn(lease, None)
    assert (await store.load(user)).last_inbound is not None
    await store.close()
    await proxy.close()


async def test_redis_py_failing_a_write_with_a_non_redis_error_is_storage_unavailable(
    redis_url: str,
) -> None:
    """redis-py 8.1 lets a write on a connection closed under it raise the transport's
    TypeError or AttributeError, not its ConnectionError (redis-py #3546, #4287); on a
    cluster that happens when the client is closed to re-read the slots after a failover.
    It is the store being unreachable for now (a 503, the provider retries), not a 500.
    A bad write provokes such an error from inside redis-py's connection here."""
    runner = ScriptRunner(url=redis_url, prefix="t", socket_timeout=1)
    client = aioredis.Redis.from_url(redis_url)
    connection = client.connection_pool.make_connection()
    try:
        with pytest.raises(StorageUnavailable, match=r"could not begin a turn: .* did not answer"):
            async with runner.guard("begin a turn"):
                await connection.send_packed_command(12345, check_health=False)  # type: ignore[arg-type]
        # The same kind of error from anywhere else is a bug, shown as it is.
        with pytest.raises(TypeError):
            async with runner.guard("begin a turn"):
                b"".join(12345)  # type: ignore[arg-type]
    finally:
        await connection.disconnect()
        await client.aclose()


async def test_idle_connections_closed_by_a_restart_are_replaced_before_use(
    server: RedisServer,
) -> None:
    store = RedisStore(server.url, bot="restart", prefix="t")
    await store.open()
    users = [new_user() for _ in range(6)]

    async def turn(user: str, key: str) -> None:
        lease = await store.begin_turn(user, key)
        await store.commit_turn(lease, None)

    async def overlapping_turns(key: str) -> None:
        """Turns that start one event-loop step apart: several batches in flight at once."""
        tasks = []
        for user in users:
            tasks.append(asyncio.create_task(turn(user, key)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    await overlapping_turns("m:1")
    # The listener, the checking client and at least two batch connections.
    assert len(server.client().client_list()) >= 4, "the test needs several idle connections"
    server.kill()
    server.start()
    await asyncio.sleep(0.1)  # the loop sees every idle connection's end of stream
    # No turn pays for a connection the restart closed: all run at once.
    await overlapping_turns("m:2")
    await store.close()


async def test_a_claim_on_an_outbox_stream_deleted_by_hand_recreates_it(
    make_store: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    store = await make_store()
    user = new_user()
    keys = Keys(redis_prefix, "race")
    shard = keys.shard(user)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(keys.outbox(shard))
        assert await store.outbox_claim("someone", 0.0, 10) == []
        await client.delete(keys.outbox(shard))
        taken = await store.outbox_take_over("someone", [], 10, shards=[shard], min_idle=0.0)
        assert taken == []
    finally:
        await client.aclose()
    await store.enqueue([text(user, "after")])
    [item] = await store.outbox_read("someone", 10, 1.0)
    assert item.message.text == "after"
