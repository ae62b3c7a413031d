"""The Redis conversation store: production, several workers or instances.

One turn costs two round trips, each one Lua script (see
:mod:`botkit.storage.redis.scripts`): BEGIN (dedupe, take the user's lock,
move the window, load) and COMMIT (check the lock token, save, mark the
message done, append the replies to the outbox, unlock, wake the next turn).
The key layout is in :mod:`botkit.storage.redis.keys`, waiting turns and
their wake-ups in :mod:`botkit.storage.redis.waiters`, the batched script
calls in :mod:`botkit.storage.redis.runner`, URLs in
:mod:`botkit.storage.redis.connection`.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any, cast

from redis import exceptions as rerr
from redis.asyncio.cluster import RedisCluster

from botkit._clock import Clock, SystemClock
from botkit._events import Timer
from botkit._outbound import OutboundMessage, SentRecord, new_ref
from botkit._transcript import Handoff, TranscriptEntry, TranscriptPage, outgoing_entry
from botkit.storage.base import (
    DAY,
    Conversation,
    ConversationStore,
    DuplicateMessage,
    LockLost,
    OutboxItem,
    Receipt,
    StorageUnavailable,
    StoreConfig,
    TimerClaim,
    TurnLease,
    UserBusy,
)
from botkit.storage.redis import scripts
from botkit.storage.redis.campaigns import RedisCampaigns
from botkit.storage.redis.connection import (
    Client,
    build_client,
    cluster_nodes,
    mask,
    nodes_of,
)
from botkit.storage.redis.fields import (
    Stored,
    changes,
    conversation,
    kept_record,
    number,
    record_from_kept,
)
from botkit.storage.redis.keys import DEFAULT_SHARDS, LAYOUT, Keys
from botkit.storage.redis.migrate import StoreLayoutError, legacy_data
from botkit.storage.redis.runner import ScriptRunner, cancel_all, done
from botkit.storage.redis.waiters import UnlockListener, Waiters

log = logging.getLogger("botkit.storage.redis")

# A read of every shard's stream happens at least this often (seconds).
_FULL_READ_EVERY = 0.5
# Every shard's delayed set is looked at this often (seconds); in between, the
# shards this store delayed messages to.
_FULL_RELEASE_EVERY = 30.0
# On Redis Cluster a read of several shards cannot block: it looks again this often.
_CLUSTER_POLL = 0.1
# How many delayed messages one RELEASE_DUE call moves (keeps each script short).
_RELEASE_BATCH = 500

NOTICES_KEPT = 1000
"""Agent notices the shared stream keeps for the pages (approximately)."""
NOTICES_MOST = 100_000
"""The shared stream's hard cap: notices the webhook has not posted yet are kept up to
this many entries in all (about 30 MB); beyond it the oldest go, counted in
``botkit_agent_notices_dropped_total``."""


@dataclass(frozen=True, slots=True)
class _Lease(TurnLease):
    """A lease with the conversation's hash as BEGIN read it, its timers as loaded
    from it and when the earliest of them was due.

    The commit writes only what differs from them: the lock means nobody
    else wrote the conversation since, whatever the turn did to its copy.
    """

    stored: Stored = field(default_factory=dict)
    timers: Mapping[str, Timer] = field(default_factory=dict)
    next_due: float | None = None


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")

# A receipt's place among the user's sent records: "r:<ref>" (records are by messageId).
_RECEIPT = "r:"


class RedisStore(ConversationStore):
    """Conversations, locks, each user's last handled ids and sent records, the outbox, in Redis.

    ::

        store = RedisStore("redis://127.0.0.1:6379/0", bot="pizza")
        store = RedisStore("redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0")
        store = RedisStore("redis+cluster://node-1:6379,node-2:6379,node-3:6379")

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL, a
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    URL (``?sentinel_password=...`` when the sentinels need one), or a
    ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]`` URL
    (``rediss+cluster://`` for TLS; one reachable node finds the others).
    ``client`` replaces the URL with a ready ``redis.asyncio.Redis`` or
    ``redis.asyncio.RedisCluster`` built with ``decode_responses=True``; the
    store uses it as given and does not close it (on a cluster, it resets the
    client's connections after a node failure, so the next command re-reads
    the slots; the wake-up listener opens its own connection to each primary
    with the client's credentials and TLS settings).

    ``bot`` and ``prefix`` namespace the keys (``<prefix>:<bot>:...``) so
    several bots share one Redis. ``session_window`` (seconds) is the least a
    conversation lives: the record outlives ``config.conversation_ttl`` and the
    window, whichever is longer. ``socket_timeout`` bounds every command and
    ``connect_timeout`` every connection attempt (default: the same), so an
    unreachable Redis raises :class:`StorageUnavailable` quickly. ``group``
    is the outbox's consumer group; ``consumer`` names this process in it
    (default ``<host>:<pid>``), for the sender to pass to :meth:`outbox_read`.
    ``clock`` decides which outbox messages are due now and which wait.

    ``shards`` is how many outbox shards the users are spread over (see
    :mod:`botkit.storage.redis.keys`): fixed when the store is first created
    (default 256) and kept in Redis; None takes what Redis has, and a store
    started with another number refuses to open (:class:`StoreLayoutError`),
    as does one that finds data of the layout before shards (run
    ``botkit store migrate``).

    ``wait_replicas`` (standalone and Sentinel; refused on Cluster): every
    batch of script calls ends with ``WAIT wait_replicas``, and when fewer
    replicas confirmed its writes within half the socket timeout, its calls
    fail with :class:`StorageUnavailable` (the webhook answers 503, the
    provider retries; a write that did stay is then seen as a duplicate). A
    turn is reported done only once a replica has it, so a failover to that
    replica keeps it; see the README's "What a failover keeps".

    ``notices_kept`` and ``notices_most`` bound the shared agent notices
    stream (see :meth:`notices_append`).
    """

    notices_kept: int = NOTICES_KEPT
    notices_most: int = NOTICES_MOST

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        bot: str = "bot",
        prefix: str = "botkit",
        config: StoreConfig | None = None,
        session_window: float = DAY,
        client: Client | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float | None = None,
        max_connections: int = 50,
        group: str = "senders",
        consumer: str | None = None,
        clock: Clock | None = None,
        shards: int | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self.config = config or StoreConfig()
        for name in ("seen_per_user", "sent_per_user"):
            if getattr(self.config, name) < 1:
                raise ValueError(f"StoreConfig.{name} must be at least 1")
        self.url = url
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._prefix, self._bot, self._shards = prefix, bot, shards
        self._keys = Keys(prefix, bot, shards or DEFAULT_SHARDS)
        self._clock = clock or SystemClock()
        self._socket_timeout = socket_timeout
        self._connect_timeout = socket_timeout if connect_timeout is None else connect_timeout
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        if wait_replicas < 0:
            raise ValueError("wait_replicas must be 0 (off) or more")
        self._runner = ScriptRunner(
            url=url,
            prefix=self._keys.base,
            socket_timeout=socket_timeout,
            wait_replicas=wait_replicas,
        )
        self._lock_ttl_ms = _ms(self.config.lock_ttl)
        self._conversation_ttl_ms = _ms(max(self.config.conversation_ttl, session_window))
        self._done_ttl_ms = _ms(self.config.done_ttl)
        self._sent_ttl_ms = _ms(self.config.sent_ttl)
        self._transcript_ttl_ms = _ms(self.config.transcript_ttl)
        if client is not None and not client.get_encoder().decode_responses:
            raise ValueError(
                "RedisStore(client=...) needs a client built with decode_responses=True"
            )
        self._given_client = client
        self._client: Client | None = client
        self._instance = secrets.token_hex(6)
        self._waiters = Waiters()
        # Entries a read took beyond its count, per consumer, for its next read.
        self._carried: dict[str, list[OutboxItem]] = {}
        # Shards this store queued messages to since the last read, and the
        # event that announces them (see outbox_read).
        self._queued_to: set[int] = set()
        self._news: asyncio.Event | None = None
        self._full_read_at = 0.0
        # When the first message this store delayed to each shard is due.
        self._delayed_due: dict[int, float] = {}
        self._full_release_at = -_FULL_RELEASE_EVERY
        self._listener: UnlockListener | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._opening = asyncio.Lock()
        self._opened = False
        self._campaigns: RedisCampaigns | None = None

    # -- life cycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the scripts, create the outbox group and start the wake-up listener.

        Raises :class:`StorageUnavailable` when Redis cannot be reached.
        """
        async with self._opening:
            if self._opened:
                return
            if self._client is None:
                self._client = build_client(
                    self.url,
                    socket_timeout=self._socket_timeout,
                    connect_timeout=self._connect_timeout,
                    # One more for the unlock listener, one spare.
                    max_connections=self._max_connections + 2,
                )
            client = self._runner.client = self._client
            if self._runner.wait_replicas and isinstance(client, RedisCluster):
                raise ValueError(
                    "wait_replicas is for standalone Redis and Sentinel; on Redis Cluster "
                    "leave it at 0 (BOTKIT_REDIS_WAIT_REPLICAS)"
                )
            guard = self._runner.guard("open the store")
            async with guard:
                # One by one: on a cluster each goes to every primary.
                for script in scripts.ALL:
                    await done(client.script_load(script.source))
                await self._check_layout(client)
                await self._ensure_group()
            self._opened = True
        channels = [self._keys.unlock(shard) for shard in self.outbox_shards()]
        if isinstance(client, RedisCluster):
            if client is self._given_client:
                seeds, node_client = nodes_of(client)
            else:
                seeds, node_client = cluster_nodes(
                    self.url,
                    socket_timeout=self._socket_timeout,
                    connect_timeout=self._connect_timeout,
                )
            listener = UnlockListener(
                None,
                channels,
                self._on_unlock,
                self._waiters.wake_all,
                seeds=seeds,
                node_client=node_client,
                retry=self.config.reconnect,
            )
        else:
            listener = UnlockListener(
                client,
                channels,
                self._on_unlock,
                self._waiters.wake_all,
                retry=self.config.reconnect,
            )
        self._listener = listener
        listener.start()
        # Best effort: a wake-up missed before the subscription only costs latency.
        with suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout):
                await listener.subscribed.wait()

    async def close(self) -> None:
        """Stop the listener and close the connections this store opened (idempotent)."""
        self._opened = False
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        await cancel_all(self._background)
        await self._runner.close()
        if self._client is not None and self._given_client is None:
            with suppress(Exception):
                await self._client.aclose()
        self._client = self._runner.client = self._given_client

    async def ping(self) -> bool:
        """True when Redis answers a PING within the socket timeout; never raises."""
        client = self._client
        if client is None:
            return False
        try:
            async with asyncio.timeout(self._socket_timeout), self._runner.guard("ping"):
                return bool(await done(client.ping()))
        except Exception:
            return False

    # -- turns ---------------------------------------------------------------

    async def begin_turn(
        self, user: str, key: str | None, *, inbound_at: float | None = None
    ) -> TurnLease:
        """Dedupe, lock and load in one script call; see :meth:`ConversationStore.begin_turn`.

        When the user's lock is taken, the turn waits for the holder's wake-up
        (or the lock's expiry) behind earlier waiters of this process.
        """
        await self._ensure_open()
        deadline = time.monotonic() + self.config.acquire_timeout
        token = new_ref()
        # Even the first attempt goes through the queue: a release that arrives
        # while it is in flight then marks it, instead of being lost.
        return await self._wait_turn(user, key, token, inbound_at, deadline)

    async def renew(self, lease: TurnLease) -> bool:
        """Extend the lease's lock by ``lock_ttl`` (the message stays in progress); False: lost."""
        keys = [self._keys.turn(lease.user)[1]]
        async with self._runner.guard("renew a turn's lock"):
            renewed = await self._runner.run(scripts.RENEW, keys, [lease.token, self._lock_ttl_ms])
        return bool(renewed)

    async def commit_turn(
        self,
        lease: TurnLease,
        conversation: Conversation | None,
        outbox: Sequence[OutboundMessage] = (),
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        """Save, mark done, queue replies, append the transcript and unlock in one script call.

        See :meth:`ConversationStore.commit_turn`. Raises :class:`LockLost`
        (nothing written, the outbox unchanged) when the lock is not the lease's.
        """
        if not isinstance(lease, _Lease):
            raise TypeError("commit_turn() needs a lease this store's begin_turn() gave")
        shard = self._keys.shard(lease.user)
        keys = [
            *self._keys.turn(lease.user),
            self._keys.outbox(shard),
            self._keys.delayed(shard),
            self._keys.timers(shard),
            self._keys.transcript(lease.user),
            self._keys.handoffs(shard),
        ]
        put: list[str] = []
        drop: list[str] = []
        next_timer = ""  # unchanged
        handoff = ""  # unchanged
        conversation_ttl = self._conversation_ttl_ms
        now = self._clock.now()
        if conversation is not None:
            put, drop = changes(lease.stored, conversation, lease.timers)
            due = conversation.next_due()
            if due != lease.next_due:  # the user's place in the index moves with their earliest
                next_timer = "-" if due is None else repr(due)
            if conversation.timers:  # kept until the last timer fired, and as long after
                last_due = max(t.due for t in conversation.timers.values())
                conversation_ttl = max(conversation_ttl, _ms(last_due - now) + conversation_ttl)
            before = lease.conversation.handoff
            if conversation.handoff is not None:
                if before is None or before.since != conversation.handoff.since:
                    handoff = repr(conversation.handoff.since)
            elif before is not None:
                handoff = "-"
        lines = self._lines(transcript)
        entries: list[str] = []
        for message in outbox:
            entries += [
                repr(message.not_before) if message.not_before > now else "",
                message.to_json(),
            ]
        args = [
            lease.token,
            conversation_ttl,
            self._done_ttl_ms,
            self._keys.user_unlock(lease.user),
            f"{self._instance} {lease.user}",
            lease.key or "",
            self.config.seen_per_user,
            len(put) // 2,
            len(drop),
            len(outbox),
            next_timer,
            lease.user,
            len(lines),
            self.config.transcript_length,
            self._transcript_ttl_ms,
            handoff,
            *put,
            *drop,
            *entries,
            *lines,
        ]
        async with self._runner.guard("commit a turn"):
            committed = await self._runner.run(scripts.COMMIT, keys, args)
        if not committed:
            raise LockLost(
                f"the lock of user ...{lease.user[-4:]} expired before the turn committed; "
                "nothing was saved. Raise StoreConfig.lock_ttl or make the handler faster"
            )
        if outbox:
            self._queued(shard)
            for message in outbox:
                if message.not_before > now:
                    self._delayed(shard, message.not_before)
        self._waiters.wake(lease.user)

    async def abort_turn(self, lease: TurnLease) -> None:
        """Unlock (its message is no longer in progress), if the lock is still the lease's."""
        _, lock, waiting, _ = self._keys.turn(lease.user)
        args = [lease.token, self._keys.user_unlock(lease.user), f"{self._instance} {lease.user}"]
        async with self._runner.guard("abort a turn"):
            released = await self._runner.run(scripts.ABORT, [lock, waiting], args)
        if released:
            self._waiters.wake(lease.user)

    async def load(self, user: str) -> Conversation:
        """Read the user's conversation without locking (an empty one when unknown)."""
        client = await self._ensure_open()
        async with self._runner.guard("load a conversation"):
            fields: dict[str, str] = await done(client.hgetall(self._keys.conv(user)))
        return conversation(user, fields)

    # -- transcripts and handoffs ----------------------------------------------

    def _lines(self, entries: Sequence[TranscriptEntry]) -> list[str]:
        """The entries as stored (none when transcripts are off)."""
        if self.config.transcript_length <= 0:
            return []
        return [entry.to_json() for entry in entries]

    async def transcript(
        self, user: str, *, before: str | None = None, limit: int = 50
    ) -> TranscriptPage:
        """The user's latest entries before ``before`` (a stream id), oldest first."""
        client = await self._ensure_open()
        if limit <= 0:
            return TranscriptPage((), None)
        end = "+" if before is None else f"({before}"
        if before is not None and not _STREAM_ID.fullmatch(before):
            raise ValueError(f"before={before!r} is not an entry id of this store")
        async with self._runner.guard("read a transcript"):
            found = await done(
                client.xrevrange(self._keys.transcript(user), end, "-", count=limit + 1)
            )
        entries = [TranscriptEntry.from_json(str(i), str(f["e"])) for i, f in found[:limit]]
        entries.reverse()
        older = len(found) > limit
        return TranscriptPage(tuple(entries), entries[0].id if older else None)

    async def transcripts_since(self, since: float) -> AsyncIterator[tuple[str, TranscriptEntry]]:
        """SCAN the transcript streams, then XRANGE from ``since`` (stream ids are ms times),
        a pipeline per 200 keys. Reads every user's transcript: for reports, not for turns."""
        client = await self._ensure_open()
        start = f"{max(0, int(since * 1000))}-0"
        suffix = ":transcript"
        match = f"{self._keys.base}:*{suffix}"
        batch: list[str] = []

        async def read(keys: list[str]) -> list[tuple[str, TranscriptEntry]]:
            async with (
                self._runner.guard("read transcripts"),
                client.pipeline(transaction=False) as pipe,
            ):
                for key in keys:
                    pipe.xrange(key, start, "+")
                found = await pipe.execute()
            out: list[tuple[str, TranscriptEntry]] = []
            for key, entries in zip(keys, found, strict=True):
                user = key[: -len(suffix)].rsplit(":", 1)[1]
                out.extend(
                    (user, TranscriptEntry.from_json(str(i), str(f["e"]))) for i, f in entries
                )
            return out

        async for key in client.scan_iter(match=match, count=1000, _type="stream"):
            batch.append(str(key))
            if len(batch) >= 200:
                for item in await read(batch):
                    yield item
                batch = []
        if batch:
            for item in await read(batch):
                yield item

    async def transcript_append(self, user: str, entries: Sequence[TranscriptEntry]) -> None:
        """XADD the entries (capped) and slide the transcript's TTL, in one pipeline."""
        lines = self._lines(entries)
        if not lines:
            return
        client = await self._ensure_open()
        key = self._keys.transcript(user)
        guard = self._runner.guard("append to a transcript")
        async with guard, client.pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.xadd(key, {"e": line}, maxlen=self.config.transcript_length, approximate=False)
            pipe.pexpire(key, self._transcript_ttl_ms)
            await pipe.execute()

    async def handoffs(self, limit: int = 100) -> tuple[list[tuple[str, Handoff]], int]:
        """The oldest ``limit`` handoffs over every shard's zset; then their records.

        The users are spread evenly over the shards, so the oldest ``limit``
        are a few per shard: a first batch asks each shard for its oldest
        few and its count; only the shards whose few were all older than the
        ``limit``-th oldest seen so far can hold more of them, and a second
        batch asks those for the rest up to it. Then one HGET of the handoff
        field per user shown.
        """
        client = await self._ensure_open()
        shards = list(self.outbox_shards())
        few = max(2, -(-2 * limit // len(shards)))
        if not isinstance(client, RedisCluster):  # one slot for all: one script call
            keys = [self._keys.handoffs(shard) for shard in shards]
            async with self._runner.guard("list handoffs"):
                found = await self._runner.run(scripts.HANDOFFS_ALL, keys, [limit, few])
            return await self._handoffs_of(
                client, [(float(found[i + 1]), str(found[i])) for i in range(1, len(found), 2)]
            ), int(found[0])

        async def ask(chosen: Sequence[int], count: int, latest: str) -> list[list[str]]:
            async with self._runner.guard("list handoffs"):
                return list(
                    await asyncio.gather(
                        *(
                            self._runner.run(
                                scripts.HANDOFFS, [self._keys.handoffs(shard)], [count, latest]
                            )
                            for shard in chosen
                        )
                    )
                )

        first = await ask(shards, few, "+inf")
        total = sum(int(found[0]) for found in first)
        since: dict[str, float] = {}
        for found in first:
            for i in range(1, len(found), 2):
                since[str(found[i])] = float(found[i + 1])
        if len(since) >= limit:
            cut = heapq.nsmallest(limit, since.values())[-1]
            more = [
                shard
                for shard, found in zip(shards, first, strict=True)
                if len(found) == 1 + 2 * few and float(found[-1]) < cut
            ]
        else:
            cut = math.inf
            more = [s for s, f in zip(shards, first, strict=True) if int(f[0]) > few]
        if more:
            for found in await ask(more, limit, "+inf" if cut == math.inf else repr(cut)):
                for i in range(1, len(found), 2):
                    since[str(found[i])] = float(found[i + 1])
        oldest = heapq.nsmallest(limit, ((at, user) for user, at in since.items()))
        return await self._handoffs_of(client, oldest), total

    async def _handoffs_of(
        self, client: Client, oldest: list[tuple[float, str]]
    ) -> list[tuple[str, Handoff]]:
        """The handoff records of ``oldest`` (since, user), in one pipeline of HGETs."""
        if not oldest:
            return []
        async with self._runner.guard("list handoffs"), client.pipeline(transaction=False) as pipe:
            for _, user in oldest:
                pipe.hget(self._keys.conv(user), "handoff")
            stored = await pipe.execute()
        return [
            (user, Handoff.from_json(raw))
            for (_, user), raw in zip(oldest, stored, strict=True)
            if raw
        ]

    async def load_many(self, users: Sequence[str]) -> list[Conversation]:
        """The users' conversations in one pipeline (a campaign's batch)."""
        if not users:
            return []
        client = await self._ensure_open()
        async with (
            self._runner.guard("load conversations"),
            client.pipeline(transaction=False) as pipe,
        ):
            for user in users:
                pipe.hgetall(self._keys.conv(user))
            found = await pipe.execute()
        return [conversation(user, fields) for user, fields in zip(users, found, strict=True)]

    def campaigns(self) -> RedisCampaigns:
        """The bot's campaigns in this Redis (see :mod:`botkit.storage.redis.campaigns`)."""
        if self._campaigns is None:
            self._campaigns = RedisCampaigns(self._runner, self._ensure_open, self._keys)
        return self._campaigns

    @property
    def waiting_users(self) -> int:
        """How many users have turns of this process waiting for their lock (0 when idle)."""
        return len(self._waiters)

    def waiting_turns(self, user: str) -> int:
        """How many turns of ``user`` in this process wait for the user's lock."""
        return self._waiters.count(user)

    @property
    def background_tasks(self) -> int:
        """Clean-ups still running in the background (0 when idle)."""
        return len(self._background)

    @property
    def wake_ups_subscribed(self) -> bool:
        """True while the unlock wake-up channel is subscribed (waiters then wake at once)."""
        return self._listener is not None and self._listener.subscribed.is_set()

    # -- outbox --------------------------------------------------------------

    async def enqueue(self, messages: Sequence[OutboundMessage]) -> None:
        """Append to the outbox, atomically per user (delayed ones go to the delayed set)."""
        if not messages:
            return
        await self._ensure_open()
        now = self._clock.now()
        by_user: dict[str, list[str]] = {}
        for message in messages:
            by_user.setdefault(message.user, []).extend(
                (repr(message.not_before) if message.not_before > now else "", message.to_json())
            )

        lines_of: dict[str, list[str]] = {}
        for message in messages:
            lines_of.setdefault(message.user, []).extend(
                self._lines([outgoing_entry(message, now)])
            )

        async def append(user: str, entries: list[str]) -> None:
            shard = self._keys.shard(user)
            keys = [
                self._keys.outbox(shard),
                self._keys.delayed(shard),
                self._keys.conv(user),
                self._keys.transcript(user),
            ]
            lines = lines_of.get(user, [])
            args = [
                self._conversation_ttl_ms,
                self.config.transcript_length,
                self._transcript_ttl_ms,
                len(lines),
                *lines,
                *entries,
            ]
            async with self._runner.guard("queue messages"):
                await self._runner.run(scripts.ENQUEUE, keys, args)
            self._queued(shard)
            for not_before in entries[::2]:
                if not_before:
                    self._delayed(shard, float(not_before))

        await asyncio.gather(*(append(user, entries) for user, entries in by_user.items()))

    def outbox_shards(self) -> range:
        """The outbox's shards (their numbers), for senders that read some of them."""
        return range(self._keys.shards)

    async def outbox_read(
        self,
        consumer: str,
        count: int,
        block: float,
        *,
        shards: Sequence[int] | None = None,
    ) -> list[OutboxItem]:
        """Take up to ``count`` new entries (XREADGROUP) from ``shards`` (default: all).

        Waits up to ``block`` seconds when there are none. One read may take
        more than ``count`` (up to ``count`` from each shard read): the rest
        are kept for this consumer's next reads, which return them first,
        from whatever shards they are.

        With ``shards`` given, the read blocks on those shards' streams. By
        default (every shard) a read looks at the shards this store queued
        messages to since its last read, which its commits announce at once,
        and at every shard at least every half second and at the end of
        ``block``: entries other processes queued are found within ``block``
        (each process's sender usually takes its own). Reading all 256
        streams at every wake-up would cost Redis far more.
        """
        client = await self._ensure_open()
        # Entries an earlier read took beyond its count come first, whatever
        # their shard: they are this consumer's in Redis now, and a sender that
        # meanwhile reads other shards (its shards moved) would never see them.
        carried = self._carried.pop(consumer, None)
        if carried:
            if len(carried) > count:
                self._carried[consumer] = carried[count:]
            return carried[:count]
        deadline = time.monotonic() + max(block, 0.0)
        if shards is not None:
            step = max(self._socket_timeout * 0.75, 0.05)
            while True:
                remaining = deadline - time.monotonic()
                block_ms = _ms(min(remaining, step)) if remaining > 0 else None
                items = await self._read(client, consumer, count, shards, block_ms)
                if items or block_ms is None or time.monotonic() >= deadline:
                    return items
        news = self._news
        if news is None:
            news = self._news = asyncio.Event()
        last = False
        while True:
            news.clear()
            now = time.monotonic()
            if last or now - self._full_read_at >= _FULL_READ_EVERY:
                self._full_read_at = now
                self._queued_to.clear()
                targets: Sequence[int] = self.outbox_shards()
            else:
                targets = sorted(self._queued_to)
                self._queued_to.clear()
            if targets:
                items = await self._read(client, consumer, count, targets, None)
                if items:
                    return items
            remaining = deadline - time.monotonic()
            if last or remaining <= 0:
                return []
            try:
                async with asyncio.timeout(min(remaining, _FULL_READ_EVERY)):
                    await news.wait()
            except TimeoutError:
                last = time.monotonic() >= deadline

    async def _read(
        self,
        client: Client,
        consumer: str,
        count: int,
        shards: Sequence[int],
        block_ms: int | None,
    ) -> list[OutboxItem]:
        """One XREADGROUP over ``shards``; entries beyond ``count`` carried to the next read."""
        streams = {self._keys.outbox(shard): shard for shard in shards}
        for attempt in range(2):
            async with self._runner.guard("read the outbox"):
                try:
                    found = await self._xreadgroup(client, consumer, streams, ">", count, block_ms)
                    break
                except rerr.ResponseError as exc:
                    if not str(exc).startswith("NOGROUP") or attempt:
                        raise
            await self._ensure_group()  # the server lost it (restart without data)
        items = _items(streams, found)
        if len(items) > count:
            items.sort(key=_entry_order)
            self._carried[consumer] = items[count:]
            return items[:count]
        return items

    async def _xreadgroup(
        self,
        client: Client,
        consumer: str,
        streams: dict[str, int],
        start: str,
        count: int,
        block_ms: int | None,
    ) -> list[tuple[str, list[Any]]]:
        """XREADGROUP over ``streams`` from ``start``, as (stream, entries) pairs.

        One command; on Redis Cluster, where each shard is a slot of its own,
        one per stream in a pipeline (redis-py sends each node its part), which
        cannot block: it looks again every ``_CLUSTER_POLL`` s instead.
        """
        if not isinstance(client, RedisCluster):
            return _streams(
                await done(
                    client.xreadgroup(
                        self.group, consumer, dict.fromkeys(streams, start), count, block_ms
                    )
                )
            )
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xreadgroup(self.group, consumer, {stream: start}, count)
            answers = await pipe.execute(raise_on_error=False)
        await self._runner.notice_lost_nodes(answers)
        found: list[tuple[str, list[Any]]] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            found += _streams(answer)
        if not found and block_ms:
            await asyncio.sleep(min(block_ms / 1000, _CLUSTER_POLL))
        return found

    def _queued(self, shard: int) -> None:
        """This store queued a message to ``shard``: the next read looks there at once."""
        self._queued_to.add(shard)
        if self._news is not None:
            self._news.set()

    async def outbox_unacked(
        self, consumer: str, count: int, *, shards: Sequence[int] | None = None
    ) -> list[OutboxItem]:
        """Entries delivered to ``consumer`` and not acknowledged (XREADGROUP from id 0).

        From ``shards`` (default: all), oldest first, without those this store
        already holds for the consumer's next read.
        """
        client = await self._ensure_open()
        held = {item.id for item in self._carried.get(consumer, ())}
        streams = {self._keys.outbox(shard): shard for shard in shards or self.outbox_shards()}
        async with self._runner.guard("read unacknowledged outbox entries"):
            try:
                found = await self._xreadgroup(client, consumer, streams, "0", count, None)
            except rerr.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                await self._ensure_group()  # the server lost it: nothing was pending
                return []
        items = sorted(
            (item for item in _items(streams, found) if item.id not in held), key=_entry_order
        )[:count]
        return await self._with_attempts(client, items)

    async def _with_attempts(self, client: Client, items: list[OutboxItem]) -> list[OutboxItem]:
        """``items``, those with an attempt mark (one HMGET per shard) as attempted just now.

        Just now: the mark holds the server's time, which a cluster pipeline
        cannot read alongside, and a later deadline only makes the wait longer.
        """
        if not items:
            return items
        by_shard: dict[int, list[str]] = {}
        for item in items:
            place, _, entry_id = item.id.partition(":")
            by_shard.setdefault(int(place), []).append(entry_id)
        async with (
            self._runner.guard("read outbox attempts"),
            client.pipeline(transaction=False) as pipe,
        ):
            for shard, entry_ids in by_shard.items():
                pipe.hmget(self._keys.attempts(shard), entry_ids)
            answers = await pipe.execute()
        attempted = {
            f"{shard}:{entry_id}"
            for (shard, entry_ids), marks in zip(by_shard.items(), answers, strict=True)
            for entry_id, mark in zip(entry_ids, marks, strict=True)
            if mark is not None
        }
        return [
            replace(item, attempted_ago=0.0) if item.id in attempted else item for item in items
        ]

    async def outbox_claim(
        self,
        consumer: str,
        min_idle: float,
        count: int,
        *,
        shards: Sequence[int] | None = None,
    ) -> list[OutboxItem]:
        """Take over other consumers' entries idle for ``min_idle`` seconds (XCLAIM).

        Up to ``count`` entries from each of ``shards`` (default: all), all of
        them returned (an entry claimed and not returned would wait another
        ``min_idle``: its idle time restarts when it is claimed), with their
        delivery counts, whether a send was attempted and their idle time.
        """
        return await self._claim(consumer, min_idle, count, shards or self.outbox_shards(), ())

    async def outbox_take_over(
        self,
        consumer: str,
        live: Collection[str],
        count: int,
        *,
        shards: Sequence[int],
        min_idle: float,
    ) -> list[OutboxItem]:
        """Take now the entries of ``shards`` that senders not in ``live`` read (XCLAIM).

        Up to ``count`` per shard, idle for ``min_idle`` s at least (an entry
        another taker took a moment ago is not), in outbox order; as
        :meth:`outbox_claim` returns them.
        """
        return await self._claim(consumer, min_idle, count, shards, sorted({*live, consumer}))

    async def outbox_prune(self, idle: float, *, shards: Sequence[int]) -> int:
        """Forget the consumers of ``shards`` that hold no entry and were idle ``idle`` s.

        Each process reads as a consumer of its own: without this every
        restart would leave one in each shard's group for good, and each claim
        would go through them all. One script call per shard (one slot each),
        sent together.
        """
        await self._ensure_open()
        args = [self.group, _ms(idle)]

        async def prune(shard: int) -> int:
            async with self._runner.guard("forget the outbox's departed consumers"):
                return int(
                    await self._runner.run(
                        scripts.PRUNE_CONSUMERS, [self._keys.outbox(shard)], args
                    )
                )

        return sum(await asyncio.gather(*(prune(shard) for shard in shards)))

    async def _claim(
        self,
        consumer: str,
        min_idle: float,
        count: int,
        shards: Sequence[int],
        live: Sequence[str],
    ) -> list[OutboxItem]:
        """One claim script per shard: every other consumer's entries, or (``live`` given)
        only those of consumers not in ``live``."""
        if count <= 0:
            return []
        await self._ensure_open()
        args: list[str | int] = [self.group, consumer, _ms(min_idle), count, *live]

        async def claim(shard: int) -> list[OutboxItem]:
            keys = [self._keys.outbox(shard), self._keys.attempts(shard)]
            async with self._runner.guard("claim outbox entries"):
                try:
                    claimed = await self._runner.run(scripts.CLAIM, keys, args)
                except rerr.ResponseError as exc:
                    if not str(exc).startswith("NOGROUP"):
                        raise
                    await self._ensure_group()
                    return []
            return [
                OutboxItem(
                    f"{shard}:{entry_id}",
                    OutboundMessage.from_json(raw),
                    int(deliveries),
                    _seq(seq),
                    attempted_ago=None if int(ago) < 0 else int(ago) / 1000,
                )
                for entry_id, raw, deliveries, seq, ago in claimed
                if raw
            ]

        found = await asyncio.gather(*(claim(s) for s in shards))
        return sorted((item for items in found for item in items), key=_entry_order)

    # -- agent notices, shared by the workers ----------------------------------

    async def notices_append(self, payloads: Sequence[str], *, group: str = "") -> int:
        """XADD the notices to the shared stream (kept for a day after the last one).

        The stream keeps the last ``notices_kept`` (about) for the pages, and,
        when ``group`` (the webhook's consumer group) exists, every notice it
        has not acknowledged yet, up to ``notices_most`` entries in all. Returns how many
        un-posted notices that hard cap dropped (0 unless the helpdesk has been
        failing for that many notices).
        """
        if not payloads:
            return 0
        await self._ensure_open()
        async with self._runner.guard("share agent notices"):
            dropped = await self._runner.run(
                scripts.NOTICES_ADD,
                [self._keys.notices],
                [self.notices_kept, self.notices_most, _ms(DAY), group or "-", *payloads],
            )
        return int(dropped)

    async def notices_group(self, group: str) -> None:
        """Create the consumer group ``group`` on the shared stream, reading from now on
        (a group that exists keeps its place)."""
        client = await self._ensure_open()
        async with self._runner.guard("create the agent notices group"):
            try:
                await done(client.xgroup_create(self._keys.notices, group, id="$", mkstream=True))
            except rerr.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def notices_take(
        self, group: str, consumer: str, *, idle: float, block: float, count: int = 50
    ) -> list[tuple[str, str]]:
        """Entries for ``consumer`` of ``group``: first those pending for ``idle`` s on any
        consumer (a worker that died), else new ones, waiting up to ``block`` s.
        Returns ``(entry id, payload)`` pairs; :meth:`notices_ack` them once handled."""
        client = await self._ensure_open()
        key = self._keys.notices
        async with self._runner.guard("take agent notices"):
            try:
                claimed = await done(
                    client.xautoclaim(key, group, consumer, int(idle * 1000), "0-0", count=count)
                )
                entries = list(claimed[1])
                if not entries:
                    wait = max(1, int(min(block, self._socket_timeout / 2) * 1000))
                    found = await done(
                        client.xreadgroup(group, consumer, {key: ">"}, count=count, block=wait)
                    )
                    if isinstance(found, dict):
                        entries = list(found.get(key, [[]])[0]) if found.get(key) else []
                    else:
                        entries = list(found[0][1]) if found else []
            except rerr.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                # The stream expired with its group (a day without notices): from its start.
                with suppress(rerr.ResponseError):
                    await done(client.xgroup_create(key, group, id="0", mkstream=True))
                return []
        return [(str(entry_id), str(fields["n"])) for entry_id, fields in entries if fields]

    async def notices_prune(self, group: str, idle: float) -> int:
        """Forget the consumers of ``group`` idle ``idle`` s that hold no entry (workers gone);
        returns how many."""
        await self._ensure_open()
        async with self._runner.guard("prune agent notices consumers"):
            gone = await self._runner.run(
                scripts.PRUNE_CONSUMERS, [self._keys.notices], [group, _ms(idle)]
            )
        return int(gone)

    async def notices_hold(self, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Restart the idle time of entries ``consumer`` is still posting (no one claims them)."""
        if not ids:
            return
        client = await self._ensure_open()
        async with self._runner.guard("hold agent notices"):
            key = self._keys.notices
            await done(client.xclaim(key, group, consumer, 0, list(ids), justid=True))

    async def notices_ack(self, group: str, ids: Sequence[str]) -> None:
        """Acknowledge entries of ``group``: they are not taken again."""
        if not ids:
            return
        client = await self._ensure_open()
        async with self._runner.guard("acknowledge agent notices"):
            await done(client.xack(self._keys.notices, group, *ids))

    async def notices_read(self, after: str, block: float) -> tuple[str, list[str]]:
        """XREAD the shared stream after ``after``, blocking up to ``block`` s (kept under the
        socket timeout); ``after="$"`` returns at once with the position of now."""
        client = await self._ensure_open()
        key = self._keys.notices
        if after == "$":  # now, as a position: a notice between two reads is not missed
            async with self._runner.guard("read agent notices"):
                last = await done(client.xrevrange(key, "+", "-", count=1))
            return (str(last[0][0]) if last else "0-0"), []
        wait = max(1, int(min(block, self._socket_timeout / 2) * 1000))
        async with self._runner.guard("read agent notices"):
            found = await done(client.xread({key: after}, count=100, block=wait))
        entries = found.get(key, []) if isinstance(found, dict) else (found[0][1] if found else [])
        if not entries:
            return after, []
        return str(entries[-1][0]), [str(fields["n"]) for _, fields in entries]

    async def senders_heartbeat(self, consumer: str, ttl: float) -> list[str]:
        """Announce ``consumer`` as a live sender for ``ttl`` s; return the live senders.

        The set is a sorted set scored by each heartbeat's expiry (this
        machine's clock: keep the hosts' clocks within a fraction of ``ttl``).
        """
        client = await self._ensure_open()
        now = time.time()
        key = self._keys.senders
        async with (
            self._runner.guard("announce the sender"),
            client.pipeline(transaction=False) as pipe,
        ):
            pipe.zadd(key, {consumer: now + ttl})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zrange(key, 0, -1)
            pipe.pexpire(key, _ms(ttl * 10))
            _, _, live, _ = await pipe.execute()
        return [str(name) for name in live]

    async def senders_leave(self, consumer: str) -> None:
        """Take ``consumer`` out of the live senders at once."""
        client = await self._ensure_open()
        async with self._runner.guard("take the sender out"):
            await done(client.zrem(self._keys.senders, consumer))

    async def outbox_ack(
        self,
        ids: Sequence[str],
        sent: Sequence[SentRecord] = (),
        *,
        answered: Sequence[OutboxItem] = (),
    ) -> None:
        """Acknowledge and delete entries, record the accepted messages and move the send order.

        One script call for every shard involved (on Redis Cluster, one per
        shard: a script keeps to one slot). It also records, per user, the
        last message the provider answered, which lets the next one go
        (:meth:`outbox_ready`), and keeps each sent record among its user's
        last ``sent_per_user``.
        """
        numbered = [item for item in answered if item.seq is not None]
        if not ids and not sent and not numbered:
            return
        await self._ensure_open()
        calls: dict[int, _Ack] = {}

        def ack(shard: int) -> _Ack:
            found = calls.get(shard)
            if found is None:
                found = calls[shard] = _Ack(self._keys.outbox(shard), self._keys.attempts(shard))
            return found

        for entry in ids:
            shard, _, entry_id = entry.partition(":")
            ack(int(shard)).ids.append(entry_id)
        for item in numbered:
            call = ack(self._keys.shard(item.message.user))
            call.answered += (call.user(self._keys, item.message.user), cast(int, item.seq))
        for record in sent:
            call = ack(self._keys.shard(record.user))
            call.sent += (
                call.user(self._keys, record.user),
                record.message_id,
                kept_record(record),
            )
        head = [self.group, self._sent_ttl_ms, self.config.sent_per_user]
        runs: list[tuple[list[str], list[Any]]] = []
        for n, call in enumerate(calls.values()):
            if n == 0 or isinstance(self._client, RedisCluster):
                runs.append(([], [*head]))
            keys, args = runs[-1]
            keys += call.keys
            args += (len(call.users), len(call.ids), *call.ids)
            args += (len(call.answered) // 2, *call.answered, len(call.sent) // 3, *call.sent)
        async with self._runner.guard("acknowledge outbox entries"):
            acked = await self._runner.run_all(scripts.ACK, runs)
        if not all(acked):  # the server lost the group (restart without data): nothing was pending
            await self._ensure_group()

    async def outbox_ready(self, items: Sequence[OutboxItem]) -> list[bool]:
        """Which items may go now: each user's numbered messages go in their order.

        An item waits while an earlier message to its user (read by this
        sender or another) has no answer from the provider yet. One script
        call (on Redis Cluster, one per shard involved).
        """
        if all(item.seq is None for item in items):
            return [True] * len(items)
        # A call per shard on Redis Cluster (a script keeps to one slot), one for all elsewhere.
        cluster = isinstance(self._client, RedisCluster)
        by_shard: dict[int, tuple[list[int], dict[str, int], list[str | int]]] = {}
        for n, item in enumerate(items):
            user = item.message.user
            group = self._keys.shard(user) if cluster else 0
            places, keys, args = by_shard.setdefault(group, ([], {}, []))
            key = self._keys.conv(user)  # its send order
            index = keys.setdefault(key, len(keys) + 1)  # its place in KEYS, from 1
            places.append(n)
            args += (index, "" if item.seq is None else item.seq)
        verdicts = [True] * len(items)

        async def ready(places: list[int], keys: dict[str, int], args: list[str | int]) -> None:
            async with self._runner.guard("check the send order"):
                found = await self._runner.run(scripts.READY, list(keys), args)
            for place, verdict in zip(places, found, strict=True):
                verdicts[place] = bool(verdict)

        calls = list(by_shard.values())
        if len(calls) == 1:
            await ready(*calls[0])
        else:
            await asyncio.gather(*(ready(*call) for call in calls))
        return verdicts

    async def outbox_release_due(self, now: float) -> int:
        """Move delayed messages due by ``now`` into their shard's outbox, atomically per batch."""
        await self._ensure_open()

        async def release(shard: int) -> int:
            keys = [self._keys.delayed(shard), self._keys.outbox(shard)]
            moved = 0
            while True:
                async with self._runner.guard("release delayed messages"):
                    batch = int(
                        await self._runner.run(
                            scripts.RELEASE_DUE, keys, [repr(now), _RELEASE_BATCH]
                        )
                    )
                moved += batch
                if batch < _RELEASE_BATCH:
                    if moved:
                        self._queued(shard)
                    return moved

        # The shards this store delayed messages to and whose first is due; every
        # shard (a count each, then a script call where something is due) at the
        # first call and every _FULL_RELEASE_EVERY seconds, for other processes'.
        if time.monotonic() - self._full_release_at >= _FULL_RELEASE_EVERY:
            self._full_release_at = time.monotonic()
            self._delayed_due.clear()
            client = self._client
            assert client is not None
            async with (
                self._runner.guard("look for delayed messages"),
                client.pipeline(transaction=False) as pipe,
            ):
                for shard in self.outbox_shards():
                    pipe.zcount(self._keys.delayed(shard), "-inf", "+inf")
                waiting = await pipe.execute()
            shards = [s for s, n in zip(self.outbox_shards(), waiting, strict=True) if int(n)]
        else:
            shards = [s for s, due in self._delayed_due.items() if due <= now]
        if not shards:
            return 0
        moved = sum(await asyncio.gather(*(release(s) for s in shards)))
        await self._next_due(shards)
        return moved

    async def _next_due(self, shards: Sequence[int]) -> None:
        """Note when the first message left in each of ``shards``' delayed set is due."""
        client = self._client
        assert client is not None
        async with (
            self._runner.guard("look for delayed messages"),
            client.pipeline(transaction=False) as pipe,
        ):
            for shard in shards:
                pipe.zrange(self._keys.delayed(shard), 0, 0, withscores=True)
            firsts = await pipe.execute()
        for shard, first in zip(shards, firsts, strict=True):
            if first:
                self._delayed(shard, float(first[0][1]))
            else:
                self._delayed_due.pop(shard, None)

    def _delayed(self, shard: int, due: float) -> None:
        """A message in ``shard``'s delayed set is due at ``due``."""
        known = self._delayed_due.get(shard)
        if known is None or due < known:
            self._delayed_due[shard] = due

    async def outbox_size(self) -> int:
        """Entries in the streams (unread or in flight) plus delayed ones, over all shards."""
        client = await self._ensure_open()
        guard = self._runner.guard("measure the outbox")
        async with guard, client.pipeline(transaction=False) as pipe:
            for shard in self.outbox_shards():
                pipe.xlen(self._keys.outbox(shard))
                pipe.zcard(self._keys.delayed(shard))
            sizes = await pipe.execute()
        return sum(int(size) for size in sizes)

    async def outbox_attempt(self, consumer: str, ids: Sequence[str]) -> list[str]:
        """Of ``ids``, those ``consumer`` still holds, each marked as attempted and its idle
        time restarted (see :meth:`ConversationStore.outbox_attempt`): one script call for
        every shard involved, a call per shard on Redis Cluster (a script keeps to one slot)."""
        if not ids:
            return []
        client = await self._ensure_open()
        by_shard: dict[int, list[str]] = {}
        for entry in ids:
            shard, _, entry_id = entry.partition(":")
            by_shard.setdefault(int(shard), []).append(entry_id)
        head: list[str | int] = [self.group, consumer, self._sent_ttl_ms]

        async def attempt(shards: list[int]) -> list[str]:
            keys: list[str] = []
            args: list[str | int] = [*head]
            for shard in shards:
                keys += (self._keys.outbox(shard), self._keys.attempts(shard))
                args += (len(by_shard[shard]), *by_shard[shard])
            async with self._runner.guard("mark outbox entries as attempted"):
                found = await self._runner.run(scripts.ATTEMPT, keys, args)
            held: list[str] = []
            place = 0
            for shard in shards:
                count = int(found[place])
                held += (f"{shard}:{entry_id}" for entry_id in found[place + 1 : place + 1 + count])
                place += 1 + count
            return held

        if isinstance(client, RedisCluster) and len(by_shard) > 1:
            found = await asyncio.gather(*(attempt([shard]) for shard in by_shard))
        else:
            found = [await attempt(list(by_shard))]
        held = {entry for entries in found for entry in entries}
        return [entry for entry in ids if entry in held]

    # -- receipts --------------------------------------------------------------

    async def record_receipt(self, user: str, ref: str, message_id: str, status: str) -> None:
        """Among the user's last ``sent_per_user`` records: the first messageId, each status seen.

        Bounded by users, not by messages: a receipt takes one of the user's
        record places, for ``sent_ttl`` after the user's last record.
        """
        await self._ensure_open()
        args = [_RECEIPT + ref, message_id, status, self._sent_ttl_ms, self.config.sent_per_user]
        async with self._runner.guard("record a receipt"):
            await self._runner.run(scripts.RECEIPT, [self._keys.refs(user)], args)

    async def receipts(self, items: Sequence[OutboxItem]) -> list[Receipt | None]:
        """The receipts of the items' references (script calls batched in one pipeline)."""
        if not items:
            return []
        await self._ensure_open()

        async def receipt(item: OutboxItem) -> Receipt | None:
            key = self._keys.refs(item.message.user)
            async with self._runner.guard("read receipts"):
                raw = await self._runner.run(scripts.GET_SENT, [key], [_RECEIPT + item.message.ref])
            if raw is None:
                return None
            message_id, statuses = json.loads(raw)
            return Receipt(str(message_id), frozenset(statuses))

        return list(await asyncio.gather(*(receipt(item) for item in items)))

    # -- timers --------------------------------------------------------------

    async def timers_claim(
        self, now: float, lease: float, count: int, *, shards: Sequence[int] | None = None
    ) -> list[TimerClaim]:
        """Claim users with a due timer, shard by shard (the outbox's shards; ``shards``:
        only those, such as the ones this process's sender owns).

        One script call over every shard; on Redis Cluster, where a script keeps
        to one slot, one cheap count per shard first and a call only where
        something is due.
        """
        client = await self._ensure_open()
        shards = list(self.outbox_shards() if shards is None else shards)
        if not shards:
            return []
        until = now + lease
        args = [repr(now), repr(until), count]
        if not isinstance(client, RedisCluster):
            keys = [self._keys.timers(shard) for shard in shards]
            async with self._runner.guard("claim due timers"):
                users = await self._runner.run(scripts.TIMERS_CLAIM, keys, args)
            return [TimerClaim(str(user), until) for user in users]
        async with (
            self._runner.guard("look for due timers"),
            client.pipeline(transaction=False) as pipe,
        ):
            for shard in shards:
                pipe.zcount(self._keys.timers(shard), "-inf", repr(now))
            counts = await pipe.execute()
        due = [shard for shard, n in zip(shards, counts, strict=True) if int(n)]
        claims: list[TimerClaim] = []
        for shard in due:
            if len(claims) >= count:
                break
            args[2] = count - len(claims)
            async with self._runner.guard("claim due timers"):
                users = await self._runner.run(
                    scripts.TIMERS_CLAIM, [self._keys.timers(shard)], args
                )
            claims.extend(TimerClaim(str(user), until) for user in users)
        return claims

    async def timers_reschedule(self, claim: TimerClaim, due: float | None) -> None:
        """Put the claimed user back at ``due`` unless a commit moved them since."""
        key = self._keys.timers(self._keys.shard(claim.user))
        args = [claim.user, repr(claim.until), "" if due is None else repr(due)]
        async with self._runner.guard("reschedule timers"):
            await self._runner.run(scripts.TIMERS_RESCHEDULE, [key], args)

    async def timers_pending(self) -> int:
        """Users with a pending timer, over all shards."""
        client = await self._ensure_open()
        guard = self._runner.guard("count pending timers")
        async with guard, client.pipeline(transaction=False) as pipe:
            for shard in range(self._keys.shards):
                pipe.zcard(self._keys.timers(shard))
            sizes = await pipe.execute()
        return sum(int(size) for size in sizes)

    # -- shared secrets ------------------------------------------------------

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret ``name`` every process on this Redis uses (SET NX: the first one wins)."""
        client = await self._ensure_open()
        key = self._keys.secret(name)
        async with self._runner.guard("read a shared secret"):
            await done(client.set(key, candidate, nx=True))
            value: str | None = await done(client.get(key))
        if not value:
            raise StorageUnavailable(f"the shared secret {name!r} vanished from Redis; retry")
        return value

    # -- sent-message log ----------------------------------------------------

    async def get_sent(self, message_id: str, *, user: str) -> SentRecord | None:
        """The record by provider ``messageId`` among the user's last ``sent_per_user``."""
        await self._ensure_open()
        async with self._runner.guard("read a sent-message record"):
            raw = await self._runner.run(scripts.GET_SENT, [self._keys.refs(user)], [message_id])
        return None if raw is None else record_from_kept(message_id, user, raw)

    async def update_sent(self, record: SentRecord) -> None:
        """Replace the record (added again among the user's last ones if it had gone)."""
        await self._ensure_open()
        args = [
            record.message_id,
            kept_record(record),
            self._sent_ttl_ms,
            self.config.sent_per_user,
        ]
        async with self._runner.guard("update a sent-message record"):
            await self._runner.run(scripts.UPDATE_SENT, [self._keys.refs(record.user)], args)

    # -- turns: internals ----------------------------------------------------

    async def _try_begin(
        self, user: str, key: str | None, token: str, inbound_at: float | None
    ) -> TurnLease | float:
        """One BEGIN call: the lease, or how long (s) the lock stays taken."""
        args = [token, self._lock_ttl_ms, number(inbound_at), self._conversation_ttl_ms, key or ""]
        try:
            async with self._runner.guard("begin a turn"):
                result = await self._runner.run(scripts.BEGIN, self._keys.turn(user), args)
        except BaseException:
            # The script may have run with its answer lost: give the lock and the
            # message's in-progress state back now rather than after lock_ttl.
            self._in_background(self._forget(user, key, token))
            raise
        if isinstance(result, list):
            fields = dict(zip(result[::2], result[1::2], strict=True))
            loaded = conversation(user, fields)
            return _Lease(
                user=user,
                key=key,
                token=token,
                conversation=loaded,
                stored=fields,
                timers=dict(loaded.timers),
                next_due=loaded.next_due(),
            )
        status, value = result[0], result[1:]
        if status == "d":
            assert key is not None
            raise DuplicateMessage(key, value)
        pttl = int(value)  # -1: a lock without expiry, which the store never sets
        return max(pttl, 1) / 1000 if pttl >= 0 else self.config.lock_ttl

    async def _wait_turn(
        self, user: str, key: str | None, token: str, inbound_at: float | None, deadline: float
    ) -> TurnLease:
        """Queue behind this process's other waiters of ``user``, then retry BEGIN on wake-ups."""
        return await self._waiters.wait(
            user,
            lambda: self._try_begin(user, key, token, inbound_at),
            deadline,
            self.config.lock_ttl,
            lambda: self._busy(user),
            TurnLease,
        )

    def _busy(self, user: str) -> UserBusy:
        return UserBusy(
            f"user ...{user[-4:]} has a turn running for longer than "
            f"{self.config.acquire_timeout:g}s; try again later"
        )

    async def _forget(self, user: str, key: str | None, token: str) -> None:
        _, lock, waiting, _ = self._keys.turn(user)
        args = [token, self._keys.user_unlock(user), f"{self._instance} {user}"]
        try:
            async with self._runner.guard("release a lock after a failed begin"):
                await self._runner.run(scripts.ABORT, [lock, waiting], args)
        except Exception:
            log.debug("could not release a lock after a failed begin; it expires", exc_info=True)

    def _in_background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- wake-ups ------------------------------------------------------------

    def _on_unlock(self, payload: str) -> None:
        instance, _, user = str(payload).partition(" ")
        if instance != self._instance:  # our own commits wake our waiters directly
            self._waiters.wake(user)

    # -- plumbing ------------------------------------------------------------

    async def _ensure_open(self) -> Client:
        if not self._opened:
            await self.open()
        assert self._client is not None
        return self._client

    async def _ensure_group(self) -> None:
        """Create the consumer group on every shard's stream (those that have one keep it)."""
        assert self._client is not None
        async with self._client.pipeline(transaction=False) as pipe:
            for shard in self.outbox_shards():
                pipe.xgroup_create(self._keys.outbox(shard), self.group, id="0", mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise result

    async def _check_layout(self, client: Client) -> None:
        """Read (or, on first use, write) the meta key; refuse a layout this store cannot run."""
        keys = self._keys
        meta: dict[str, str] = await done(client.hgetall(keys.meta))
        if not meta:
            # The earlier layout never ran on Redis Cluster (its scripts crossed slots).
            if not isinstance(client, RedisCluster) and await legacy_data(client, keys):
                raise StoreLayoutError(
                    f"Redis at {mask(self.url)} holds data of botkit's earlier store layout "
                    f"under {keys.base!r} (one outbox, keys per message). Stop every "
                    "worker, then run `botkit store migrate` (it moves conversations and "
                    "pending messages to the sharded layout), then start again"
                )
            async with client.pipeline(transaction=False) as pipe:
                pipe.hsetnx(keys.meta, "layout", LAYOUT)
                pipe.hsetnx(keys.meta, "shards", keys.shards)
                pipe.hgetall(keys.meta)
                *_, meta = await pipe.execute()
        layout, shards = int(meta.get("layout", 0)), int(meta.get("shards", 0))
        if layout > LAYOUT:
            raise StoreLayoutError(
                f"the store under {keys.base!r} has layout {layout}, newer than this "
                f"botkit's ({LAYOUT}): upgrade botkit"
            )
        if layout != LAYOUT:
            raise StoreLayoutError(
                f"the store under {keys.base!r} has layout {layout}, this botkit runs "
                f"layout {LAYOUT}. Stop every worker, then run `botkit store migrate` "
                "(it folds the send orders and receipts into the users' keys), then "
                "start again"
            )
        if self._shards is not None and shards != self._shards:
            raise StoreLayoutError(
                f"the store under {keys.base!r} was created with {shards} shards; this "
                f"store was started with {self._shards}. The number is fixed at creation: "
                f"start it with shards={shards} (or none, to use what Redis has)"
            )
        if shards != keys.shards:
            self._keys = Keys(self._prefix, self._bot, shards)


@dataclass(slots=True)
class _Ack:
    """One shard's part of an acknowledgement: entries, answered orders, sent records."""

    stream: str
    attempts: str
    keys: list[str] = field(init=False)
    ids: list[str] = field(default_factory=list)
    answered: list[str | int] = field(default_factory=list)
    sent: list[str | int] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = [self.stream, self.attempts]

    def user(self, keys: Keys, user: str) -> int:
        """The user's place in this call (their conversation and refs keys added once)."""
        place = self.users.get(user)
        if place is None:
            place = self.users[user] = len(self.users)
            self.keys += (keys.conv(user), keys.refs(user))
        return place


# -- helpers -----------------------------------------------------------------


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _streams(found: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's answer as (stream, entries) pairs: a list in RESP2, a dict in RESP3."""
    if not found:
        return []
    if isinstance(found, dict):  # stream -> [entries]
        return [(stream, value[0] if value else []) for stream, value in found.items()]
    return [(stream, entries) for stream, entries in found]


def _items(streams: dict[str, int], found: list[tuple[str, list[Any]]]) -> list[OutboxItem]:
    """The outbox items of XREADGROUP's (stream, entries) over ``streams`` (key -> shard)."""
    return [
        OutboxItem(
            f"{streams[stream]}:{entry_id}",
            OutboundMessage.from_json(fields["m"]),
            1,
            _seq(fields.get("s")),
        )
        for stream, entries in found
        for entry_id, fields in entries
        if fields and "m" in fields
    ]


def _entry_order(item: OutboxItem) -> tuple[int, int]:
    """An entry's place in time: its stream id (``<shard>:<ms>-<n>``)."""
    ms, _, n = item.id.rpartition(":")[2].partition("-")
    return int(ms), int(n)


def _seq(value: str | None) -> int | None:
    """A stream entry's send sequence number ("" or absent: none)."""
    return int(value) if value else None
