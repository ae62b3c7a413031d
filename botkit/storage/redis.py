"""The Redis conversation store: production, several workers or instances.

One turn costs two round trips, each one Lua script (see
:mod:`botkit.storage._redis_scripts`): BEGIN (dedupe, take the user's lock,
move the window, load) and COMMIT (check the lock token, save, mark the
message done, append the replies to the outbox, unlock, wake the next turn).

Key layout (``P`` = ``<prefix>:<bot>``; the ``{user}`` hash tag keeps every
per-user key in one cluster slot)::

    P:{79031234567}:conv          hash: state, data (JSON), version, last_inbound,
                                  last_active, opted_out, not_on_whatsapp; sliding TTL
    P:{79031234567}:lock          the turn lock: a random token, PX lock_ttl
    P:{79031234567}:waiting       set while a turn waits: the commit publishes a wake-up
    P:{79031234567}:seen:<key>    dedupe mark: "in_progress" (PX lock_ttl) or "done"
    P:{79031234567}:order         hash: next, done: the user's send order (the last number
                                  a queued reply got, the last one the provider answered)
    P:outbox                      stream of messages to send (consumer group "senders")
    P:outbox:delayed              zset of messages waiting for ``not_before`` (score)
    P:sent:<messageId>            sent-message record (JSON), TTL sent_ttl
    P:unlock                      pub/sub channel: "<store instance> <user>" wake-ups

Waiting turns queue instead of spinning: the first waiter of a user in this
process watches the ``unlock`` channel (one subscription per store) and
retries when the holder commits, aborts or its lock expires; later waiters of
the same user in this process queue behind it, first come first served.
Nothing per user stays in the process once no turn of that user waits.

Redis Cluster is not supported: COMMIT writes the user's keys and the shared
outbox in one script, which Cluster refuses (CROSSSLOT). It would need the
outbox sharded by hash slot (``P:outbox:{<shard>}`` where the shard is the
user's slot group, carried in the user's keys too) and senders reading every
shard, plus one pub/sub channel per shard (or sharded pub/sub).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rerr
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from botkit.clock import Clock, SystemClock
from botkit.outbound import OutboundMessage, SentRecord, new_ref
from botkit.storage import _redis_scripts as scripts
from botkit.storage import _resp
from botkit.storage.base import (
    DAY,
    Conversation,
    ConversationStore,
    DuplicateMessage,
    LockLost,
    OutboxItem,
    StorageError,
    StorageUnavailable,
    StoreConfig,
    TurnLease,
    UserBusy,
)

log = logging.getLogger("botkit.storage.redis")

# Server answers that mean "not now" rather than "wrong": the store is unavailable.
_UNAVAILABLE_REPLIES = (
    "READONLY",
    "MISCONF",
    "OOM",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
)
# How many delayed messages one RELEASE_DUE call moves (keeps each script short).
_RELEASE_BATCH = 500
# The pub/sub listener's reconnect backoff, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
# The listener pings the server this often when the channel is quiet ...
_PUBSUB_PING_EVERY = 5.0
# ... and reconnects when it heard nothing (not even the pong) for this long.
_PUBSUB_SILENCE = 15.0


class _Keys:
    """Key names of one bot under one prefix."""

    __slots__ = ("base", "channel", "delayed", "outbox")

    def __init__(self, prefix: str, bot: str) -> None:
        for name, value in (("prefix", prefix), ("bot", bot)):
            if not value or any(c in value for c in "{} \t\r\n"):
                raise ValueError(
                    f"RedisStore {name} {value!r} must be non-empty, without braces or spaces "
                    "(braces would break the per-user hash tags)"
                )
        self.base = f"{prefix}:{bot}"
        self.outbox = f"{self.base}:outbox"
        self.delayed = f"{self.base}:outbox:delayed"
        self.channel = f"{self.base}:unlock"

    def user(self, user: str) -> str:
        return f"{self.base}:{{{user}}}"

    def order(self, user: str) -> str:
        """The user's send order: the last number given and the last one answered."""
        return f"{self.user(user)}:order"

    def turn(self, user: str, key: str | None) -> list[str]:
        """conv, lock, waiting[, seen]: the per-user keys of a turn."""
        base = self.user(user)
        keys = [f"{base}:conv", f"{base}:lock", f"{base}:waiting"]
        if key is not None:
            keys.append(f"{base}:seen:{key}")
        return keys

    def sent(self, message_id: str) -> str:
        return f"{self.base}:sent:{message_id}"


@dataclass(slots=True, eq=False)
class _Waiter:
    """A turn of this process waiting for its user's lock.

    The flags say what is known; ``wake`` only interrupts the wait, so a
    wake-up that comes while the waiter is busy elsewhere is not lost.
    ``released``: the lock was let go since this waiter last tried.
    ``busy_until`` (monotonic): the lock stays taken until then at the latest,
    unless released first; None: unknown, try now.
    """

    wake: asyncio.Future[None]
    busy_until: float | None
    released: bool = False

    def notify(self, *, released: bool = False, busy_until: float | None = None) -> None:
        self.released = self.released or released
        if busy_until is not None:
            self.busy_until = busy_until
        if not self.wake.done():
            self.wake.set_result(None)


@dataclass(frozen=True, slots=True)
class _Lease(TurnLease):
    """A lease with the conversation's fields as BEGIN read them (see :data:`scripts.FIELDS`).

    The commit writes only what differs from them: the lock means nobody
    else wrote the conversation since, whatever the turn did to its copy.
    """

    stored: tuple[str | None, ...] = ()


@dataclass(slots=True)
class _Call:
    """A script call waiting for the next pipeline."""

    script: scripts.Script
    keys: Sequence[str]
    args: Sequence[Any]
    result: asyncio.Future[Any]


class RedisStore(ConversationStore):
    """Conversations, locks, dedupe marks, the outbox and the sent log in Redis.

    ::

        store = RedisStore("redis://127.0.0.1:6379/0", bot="pizza")
        store = RedisStore("redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0")

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL, or a
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    URL (``?sentinel_password=...`` when the sentinels need one). ``client``
    replaces the URL with a ready ``redis.asyncio.Redis`` built with
    ``decode_responses=True``; the store uses it as given and does not close it.

    ``bot`` and ``prefix`` namespace the keys (``<prefix>:<bot>:...``) so
    several bots share one Redis. ``session_window`` (seconds) is the least a
    conversation lives: the record outlives ``config.conversation_ttl`` and the
    window, whichever is longer. ``socket_timeout`` bounds every command and
    ``connect_timeout`` every connection attempt (default: the same), so an
    unreachable Redis raises :class:`StorageUnavailable` quickly. ``group``
    is the outbox's consumer group; ``consumer`` names this process in it
    (default ``<host>:<pid>``), for the sender to pass to :meth:`outbox_read`.
    ``clock`` decides which outbox messages are due now and which wait.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        bot: str = "bot",
        prefix: str = "botkit",
        config: StoreConfig | None = None,
        session_window: float = DAY,
        client: aioredis.Redis | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float | None = None,
        max_connections: int = 50,
        group: str = "senders",
        consumer: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or StoreConfig()
        self.url = url
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._keys = _Keys(prefix, bot)
        self._clock = clock or SystemClock()
        self._socket_timeout = socket_timeout
        self._connect_timeout = socket_timeout if connect_timeout is None else connect_timeout
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        # Commands in flight from this store, at most one per pooled connection:
        # a burst of turns queues here instead of failing with "Too many connections".
        self._slots = asyncio.Semaphore(max_connections)
        self._lock_ttl_ms = _ms(self.config.lock_ttl)
        self._conversation_ttl_ms = _ms(max(self.config.conversation_ttl, session_window))
        self._done_ttl_ms = _ms(self.config.done_ttl)
        self._sent_ttl_ms = _ms(self.config.sent_ttl)
        self._given_client = client
        self._client: aioredis.Redis | None = client
        self._instance = secrets.token_hex(6)
        # Turns of this process waiting for a user's lock, first come first
        # served; an entry exists only while somebody waits.
        self._queues: dict[str, deque[_Waiter]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._batch: list[_Call] = []
        # The connections script batches go out on (see ``_exchange``).
        self._connections: set[AbstractConnection] = set()
        self._idle: list[AbstractConnection] = []
        self._opening = asyncio.Lock()
        self._opened = False

    # -- life cycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the scripts, create the outbox group and start the wake-up listener.

        Raises :class:`StorageUnavailable` when Redis cannot be reached.
        """
        async with self._opening:
            if self._opened:
                return
            if self._client is None:
                self._client = self._build_client()
            client = self._client
            guard = self._guard("open the store")
            async with guard, client.pipeline(transaction=False) as pipe:
                for script in scripts.ALL:
                    pipe.script_load(script.source)
                await pipe.execute()
                await self._ensure_group()
            self._opened = True
        self._listener = asyncio.create_task(self._listen(), name="botkit-redis-unlock-listener")
        # Best effort: a wake-up missed before the subscription only costs latency.
        with suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout):
                await self._subscribed.wait()

    async def close(self) -> None:
        """Stop the listener and close the connections this store opened (idempotent)."""
        self._opened = False
        tasks = [t for t in (self._listener, *self._background) if t is not None]
        self._listener = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task
        connections, self._connections, self._idle = self._connections, set(), []
        for connection in connections:
            with suppress(Exception):
                await connection.disconnect()
        if self._client is not None and self._given_client is None:
            with suppress(Exception):
                await self._client.aclose()
        self._client = self._given_client

    async def ping(self) -> bool:
        """True when Redis answers a PING within the socket timeout; never raises."""
        client = self._client
        if client is None:
            return False
        try:
            async with asyncio.timeout(self._socket_timeout), self._guard("ping"):
                return bool(await _done(client.ping()))
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
        return await self._wait_turn(user, key, token, inbound_at, deadline, None)

    async def renew(self, lease: TurnLease) -> bool:
        """Extend the lease's lock (and its in-progress mark) by ``lock_ttl``; False when lost."""
        keys = [self._keys.turn(lease.user, lease.key)[1]]
        if lease.key is not None:
            keys.append(self._keys.turn(lease.user, lease.key)[3])
        async with self._guard("renew a turn's lock"):
            renewed = await self._eval(scripts.RENEW, keys, [lease.token, self._lock_ttl_ms])
        return bool(renewed)

    async def commit_turn(
        self,
        lease: TurnLease,
        conversation: Conversation | None,
        outbox: Sequence[OutboundMessage] = (),
    ) -> None:
        """Save, mark done, queue replies and unlock in one script call.

        See :meth:`ConversationStore.commit_turn`. Raises :class:`LockLost`
        (nothing written, the outbox unchanged) when the lock is not the lease's.
        """
        if not isinstance(lease, _Lease):
            raise TypeError("commit_turn() needs a lease this store's begin_turn() gave")
        conv, lock, waiting, *seen = self._keys.turn(lease.user, lease.key)
        order = self._keys.order(lease.user)
        keys = [conv, lock, waiting, self._keys.outbox, self._keys.delayed, order, *seen]
        put: list[str] = []
        drop: list[str] = []
        if conversation is not None:
            put, drop = _changes(lease.stored, conversation)
        now = self._clock.now()
        entries: list[str] = []
        for message in outbox:
            entries += [
                repr(message.not_before) if message.not_before > now else "",
                message.to_json(),
            ]
        args = [
            lease.token,
            self._conversation_ttl_ms,
            self._done_ttl_ms,
            self._keys.channel,
            f"{self._instance} {lease.user}",
            len(put) // 2,
            len(drop),
            len(outbox),
            *put,
            *drop,
            *entries,
        ]
        async with self._guard("commit a turn"):
            committed = await self._eval(scripts.COMMIT, keys, args)
        if not committed:
            raise LockLost(
                f"the lock of user ...{lease.user[-4:]} expired before the turn committed; "
                "nothing was saved. Raise StoreConfig.lock_ttl or make the handler faster"
            )
        self._wake_head(lease.user)

    async def abort_turn(self, lease: TurnLease) -> None:
        """Unlock and forget the in-progress mark, if the lock is still the lease's."""
        _, lock, waiting, *seen = self._keys.turn(lease.user, lease.key)
        args = [lease.token, self._keys.channel, f"{self._instance} {lease.user}"]
        async with self._guard("abort a turn"):
            released = await self._eval(scripts.ABORT, [lock, waiting, *seen], args)
        if released:
            self._wake_head(lease.user)

    async def load(self, user: str) -> Conversation:
        """Read the user's conversation without locking (an empty one when unknown)."""
        client = await self._ensure_open()
        async with self._guard("load a conversation"):
            fields: list[str | None] = await _done(
                client.hmget(self._keys.turn(user, None)[0], scripts.FIELDS)
            )
        return _conversation(user, fields)

    @property
    def waiting_users(self) -> int:
        """How many users have turns of this process waiting for their lock (0 when idle)."""
        return len(self._queues)

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
        keys = [self._keys.outbox, self._keys.delayed]

        async def append(user: str, entries: list[str]) -> None:
            async with self._guard("queue messages"):
                args = [self._conversation_ttl_ms, *entries]
                await self._eval(scripts.ENQUEUE, [*keys, self._keys.order(user)], args)

        await asyncio.gather(*(append(user, entries) for user, entries in by_user.items()))

    async def outbox_read(self, consumer: str, count: int, block: float) -> list[OutboxItem]:
        """Take up to ``count`` new entries (XREADGROUP), waiting up to ``block`` seconds.

        A long ``block`` is split into waits shorter than the socket timeout,
        so a dead server is still noticed within it.
        """
        client = await self._ensure_open()
        # Under load there is usually something to read: one script call (on the
        # lean pipeline) whose answer is flat, with no wait.
        flat: list[str] = []
        for _ in range(2):
            async with self._guard("read the outbox"):
                try:
                    flat = await self._eval(
                        scripts.READ, [self._keys.outbox], [self.group, consumer, count]
                    )
                    break
                except rerr.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
            await self._ensure_group()  # the server lost it (restart without data)
        if flat:
            return [
                OutboxItem(entry_id, OutboundMessage.from_json(message), 1, _seq(seq))
                for entry_id, message, seq in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
            ]
        deadline = time.monotonic() + max(block, 0.0)
        step = max(self._socket_timeout * 0.75, 0.05)
        while block > 0:
            remaining = deadline - time.monotonic()
            block_ms = _ms(min(remaining, step)) if remaining > 0 else None
            async with self._guard("read the outbox"):
                try:
                    found = await _done(
                        client.xreadgroup(
                            self.group, consumer, {self._keys.outbox: ">"}, count, block_ms
                        )
                    )
                except rerr.ResponseError as exc:
                    if not str(exc).startswith("NOGROUP"):
                        raise
                    await self._ensure_group()  # the server lost it (restart without data)
                    continue
            items = [
                OutboxItem(
                    entry_id, OutboundMessage.from_json(fields["m"]), 1, _seq(fields.get("s"))
                )
                for _, entries in found or ()
                for entry_id, fields in entries
                if fields and "m" in fields
            ]
            if items or block_ms is None or time.monotonic() >= deadline:
                return items
        return []

    async def outbox_claim(self, consumer: str, min_idle: float, count: int) -> list[OutboxItem]:
        """Take over entries idle for ``min_idle`` seconds (XAUTOCLAIM), with delivery counts."""
        if count <= 0:
            return []
        await self._ensure_open()
        args: list[str | int] = [self.group, consumer, _ms(min_idle), count]
        async with self._guard("claim outbox entries"):
            try:
                claimed = await self._eval(scripts.CLAIM, [self._keys.outbox], args)
            except rerr.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                await self._ensure_group()
                return []
        return [
            OutboxItem(str(entry_id), OutboundMessage.from_json(raw), int(deliveries), _seq(seq))
            for entry_id, raw, deliveries, seq in claimed
            if raw
        ]

    async def outbox_ack(
        self,
        ids: Sequence[str],
        sent: Sequence[SentRecord] = (),
        *,
        answered: Sequence[OutboxItem] = (),
    ) -> None:
        """Acknowledge and delete entries, record the accepted messages and move the send order.

        One script call: it also records, per user, the last message the
        provider answered, which lets the next one go (:meth:`outbox_ready`).
        """
        numbered = [item for item in answered if item.seq is not None]
        if not ids and not sent and not numbered:
            return
        await self._ensure_open()
        args: list[str | int] = [self.group, self._keys.sent(""), self._sent_ttl_ms, len(ids)]
        args += ids
        args.append(len(numbered))
        for item in numbered:
            args += (self._keys.order(item.message.user), cast(int, item.seq))
        for record in sent:
            args += (record.message_id, record.to_json())
        async with self._guard("acknowledge outbox entries"):
            acked = await self._eval(scripts.ACK, [self._keys.outbox], args)
        if not acked:  # the server lost the group (restart without data): nothing was pending
            await self._ensure_group()

    async def outbox_ready(self, items: Sequence[OutboxItem]) -> list[bool]:
        """Which items may go now: each user's numbered messages go in their order.

        An item waits while an earlier message to its user (read by this
        sender or another) has no answer from the provider yet.
        """
        if all(item.seq is None for item in items):
            return [True] * len(items)
        args: list[str | int] = []
        for item in items:
            args += (self._keys.order(item.message.user), "" if item.seq is None else item.seq)
        async with self._guard("check the send order"):
            verdicts = await self._eval(scripts.READY, [], args)
        return [bool(v) for v in verdicts]

    async def outbox_release_due(self, now: float) -> int:
        """Move delayed messages due by ``now`` into the outbox, atomically per batch."""
        await self._ensure_open()
        moved = 0
        while True:
            async with self._guard("release delayed messages"):
                batch = int(
                    await self._eval(
                        scripts.RELEASE_DUE,
                        [self._keys.delayed, self._keys.outbox],
                        [repr(now), _RELEASE_BATCH],
                    )
                )
            moved += batch
            if batch < _RELEASE_BATCH:
                return moved

    async def outbox_size(self) -> int:
        """Entries in the stream (unread or in flight) plus delayed ones."""
        client = await self._ensure_open()
        guard = self._guard("measure the outbox")
        async with guard, client.pipeline(transaction=False) as pipe:
            pipe.xlen(self._keys.outbox)
            pipe.zcard(self._keys.delayed)
            stream, delayed = await pipe.execute()
        return int(stream) + int(delayed)

    # -- sent-message log ----------------------------------------------------

    async def get_sent(self, message_id: str) -> SentRecord | None:
        """The record by provider ``messageId``, unless expired."""
        client = await self._ensure_open()
        async with self._guard("read a sent-message record"):
            raw: str | None = await _done(client.get(self._keys.sent(message_id)))
        return None if raw is None else SentRecord.from_json(raw)

    async def update_sent(self, record: SentRecord) -> None:
        """Replace the record, keeping its remaining TTL (a fresh one if it had expired)."""
        await self._ensure_open()
        async with self._guard("update a sent-message record"):
            await self._eval(
                scripts.UPDATE_SENT,
                [self._keys.sent(record.message_id)],
                [record.to_json(), self._sent_ttl_ms],
            )

    # -- turns: internals ----------------------------------------------------

    async def _try_begin(
        self, user: str, key: str | None, token: str, inbound_at: float | None
    ) -> TurnLease | float:
        """One BEGIN call: the lease, or how long (s) the lock stays taken."""
        args = [token, self._lock_ttl_ms, _num(inbound_at), self._conversation_ttl_ms]
        try:
            async with self._guard("begin a turn"):
                result = await self._eval(scripts.BEGIN, self._keys.turn(user, key), args)
        except BaseException:
            # The script may have run with its answer lost: give the lock and the
            # in-progress mark back now rather than after lock_ttl.
            self._in_background(self._forget(user, key, token))
            raise
        if isinstance(result, list):
            fields = tuple(v if isinstance(v, str) else None for v in result)
            return _Lease(
                user=user,
                key=key,
                token=token,
                conversation=_conversation(user, fields),
                stored=fields,
            )
        status, value = result[0], result[1:]
        if status == "d":
            assert key is not None
            raise DuplicateMessage(key, value)
        pttl = int(value)  # -1: a lock without expiry, which the store never sets
        return max(pttl, 1) / 1000 if pttl >= 0 else self.config.lock_ttl

    async def _wait_turn(
        self,
        user: str,
        key: str | None,
        token: str,
        inbound_at: float | None,
        deadline: float,
        busy_for: float | None,
    ) -> TurnLease:
        """Queue behind this process's other waiters of ``user``, then retry BEGIN on wake-ups.

        Only the first waiter of the queue calls Redis: when the holder lets go
        (its commit or abort wakes it, locally or over pub/sub) or when the
        lock's known expiry has passed (a crashed holder).
        """
        loop = asyncio.get_running_loop()
        queue = self._queues.get(user)
        if queue is None:
            queue = self._queues[user] = deque()
        busy_until = None if busy_for is None else time.monotonic() + busy_for
        me = _Waiter(loop.create_future(), busy_until)
        queue.append(me)
        acquired = False
        try:
            while True:
                now = time.monotonic()
                head = queue[0] is me
                if head and (me.released or me.busy_until is None or now >= me.busy_until):
                    me.released = False
                    got = await self._try_begin(user, key, token, inbound_at)
                    if isinstance(got, TurnLease):
                        acquired = True
                        return got
                    me.busy_until = time.monotonic() + got
                    continue  # a release during the call set ``released``: try again at once
                remaining = deadline - now
                if remaining <= 0:
                    raise self._busy(user)
                if head and me.busy_until is not None:
                    remaining = min(remaining, me.busy_until - now)
                me.wake = loop.create_future()
                await asyncio.wait({me.wake}, timeout=remaining)
        finally:
            was_head = queue[0] is me
            queue.remove(me)
            if not queue:
                if self._queues.get(user) is queue:
                    del self._queues[user]
            elif was_head:
                if acquired:
                    # Ours now: the next waits for our commit (or the lock's expiry).
                    queue[0].notify(busy_until=time.monotonic() + self.config.lock_ttl)
                else:
                    queue[0].busy_until = None
                    queue[0].notify()

    def _busy(self, user: str) -> UserBusy:
        return UserBusy(
            f"user ...{user[-4:]} has a turn running for longer than "
            f"{self.config.acquire_timeout:g}s; try again later"
        )

    def _wake_head(self, user: str) -> None:
        queue = self._queues.get(user)
        if queue:
            queue[0].notify(released=True)

    async def _forget(self, user: str, key: str | None, token: str) -> None:
        _, lock, waiting, *seen = self._keys.turn(user, key)
        args = [token, self._keys.channel, f"{self._instance} {user}"]
        try:
            async with self._guard("release a lock after a failed begin"):
                await self._eval(scripts.ABORT, [lock, waiting, *seen], args)
        except Exception:
            log.debug("could not release a lock after a failed begin; it expires", exc_info=True)

    def _in_background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- wake-ups ------------------------------------------------------------

    async def _listen(self) -> None:
        """Follow the unlock channel for as long as the store is open, reconnecting with backoff."""
        assert self._client is not None
        backoff = _BACKOFF_MIN
        while True:
            # Every reply counts as a sign of life (the pong too, whatever shape
            # redis-py gives it), so no reply is filtered out here.
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(self._keys.channel)
                self._subscribed.set()
                backoff = _BACKOFF_MIN
                # Wake-ups may have been missed while away: let every first waiter retry.
                for queue in list(self._queues.values()):
                    queue[0].notify(released=True)
                heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=_PUBSUB_PING_EVERY)
                    now = time.monotonic()
                    if message is not None:
                        heard = now
                        if message.get("type") == "message":
                            self._on_unlock(message["data"])
                    if now - heard > _PUBSUB_SILENCE:
                        raise StorageUnavailable("the unlock channel went silent")
                    if now - pinged >= _PUBSUB_PING_EVERY:
                        pinged = now
                        await pubsub.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("unlock channel lost (%s); reconnecting in %.2fs", exc, backoff)
            finally:
                self._subscribed.clear()
                with suppress(BaseException):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _on_unlock(self, payload: str) -> None:
        instance, _, user = str(payload).partition(" ")
        if instance != self._instance:  # our own commits wake our waiters directly
            self._wake_head(user)

    # -- plumbing ------------------------------------------------------------

    def _build_client(self) -> aioredis.Redis:
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": self._connect_timeout,
            "socket_keepalive": True,
            # No silent retries: a retried BEGIN whose first answer was lost would
            # report its own message as a duplicate. The caller (the provider) retries.
            "retry": Retry(NoBackoff(), 0),
            # One more for the unlock listener, one spare.
            "max_connections": self._max_connections + 2,
        }
        scheme = urlsplit(self.url).scheme
        if scheme == "redis+sentinel":
            return _sentinel_client(self.url, options)
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix:// "
                "or redis+sentinel:// (Redis Cluster is not supported yet)"
            )
        return aioredis.Redis.from_url(self.url, **options)

    async def _ensure_open(self) -> aioredis.Redis:
        if not self._opened:
            await self.open()
        assert self._client is not None
        return self._client

    async def _ensure_group(self) -> None:
        assert self._client is not None
        try:
            await _done(
                self._client.xgroup_create(self._keys.outbox, self.group, id="0", mkstream=True)
            )
        except rerr.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def _eval(self, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script; calls made in the same event-loop step share one pipeline.

        Under load many turns call BEGIN or COMMIT at once: sending them as one
        pipeline (one write, one connection, replies read in order) costs far
        less client CPU than one command each. Each script stays atomic on its
        own; the pipeline is not a transaction.
        """
        assert self._client is not None, "open() the store first"
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._batch.append(call)
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        try:
            return await call.result
        except rerr.NoScriptError:
            # The server restarted or flushed its scripts: load it again, once.
            client = self._client
            await _done(client.script_load(script.source))
            return await _done(client.evalsha(script.sha, len(keys), *keys, *args))

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._in_background(self._run_batch(batch))

    async def _run_batch(self, batch: list[_Call]) -> None:
        try:
            payload = b"".join(_resp.pack_evalsha(c.script.sha, c.keys, c.args) for c in batch)
            results = await self._exchange(payload, len(batch))
        except BaseException as exc:
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(batch, results, strict=True):
            if call.result.done():
                continue
            if isinstance(result, BaseException):
                call.result.set_exception(result)
            else:
                call.result.set_result(result)

    async def _exchange(self, payload: bytes, count: int) -> list[Any]:
        """Send a packed batch on a connection of the store's own and read its replies.

        The batch connections come from the client's pool settings but are
        kept here, idle ones on a stack: taking one costs a list pop, not the
        pool's lock. At most ``max_connections`` are busy at once (``_guard``).
        """
        client = self._client
        if client is None:
            raise StorageUnavailable("the store is closed")
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._connections.add(connection)
        try:
            if not connection.is_connected or _resp.stale(connection):
                # Never connected, failed, or closed by the server while idle (a restart).
                await connection.disconnect(nowait=True)
                await connection.connect()  # type: ignore[no-untyped-call]
            results, reusable = await _resp.exchange(
                connection, payload, count, self._socket_timeout
            )
            if not reusable:
                await connection.disconnect(nowait=True)
        except BaseException:
            # A reply may still be on its way: this connection cannot be trusted again.
            with suppress(Exception):
                await connection.disconnect(nowait=True)
            raise
        finally:
            if connection in self._connections:  # not closed meanwhile
                self._idle.append(connection)
        return results

    def _guard(self, doing: str) -> _Guard:
        """Take a connection slot and turn Redis failures into the store's named errors."""
        return _Guard(self, doing)

    def _unavailable(self, doing: str, exc: BaseException) -> StorageError:
        """The store's named error for a Redis failure while ``doing``."""
        if isinstance(exc, rerr.ConnectionError | rerr.TimeoutError):
            return StorageUnavailable(
                f"could not {doing}: Redis at {_safe(self.url)} did not answer ({exc}). "
                "Check that it runs and that BOTKIT_REDIS_URL points at it; the "
                "operation was not applied, or applied whole (scripts are atomic)"
            )
        if isinstance(exc, rerr.ResponseError):
            if str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES or isinstance(
                exc, rerr.ReadOnlyError
            ):
                return StorageUnavailable(
                    f"could not {doing}: Redis at {_safe(self.url)} refused ({exc}). "
                    "It is read-only, out of memory, loading or failing over; it was "
                    "not changed. Point the store at the current primary or free memory"
                )
            return StorageError(
                f"could not {doing}: Redis answered {exc!r}. Is another application "
                f"using the key prefix {self._keys.base!r}?"
            )
        return StorageError(f"could not {doing}: {exc!r}")


class _Guard:
    """``async with store._guard(doing)``: a connection slot, and Redis errors named.

    A class rather than a generator-based context manager: it is entered
    twice per turn, and this costs a fraction of what a generator does.
    """

    __slots__ = ("_doing", "_store")

    def __init__(self, store: RedisStore, doing: str) -> None:
        self._store, self._doing = store, doing

    async def __aenter__(self) -> None:
        store = self._store
        slots = store._slots
        if not slots.locked():  # the usual case: nothing to wait for
            await slots.acquire()
            return
        try:
            async with asyncio.timeout(store._socket_timeout):
                await slots.acquire()
        except TimeoutError:
            raise StorageUnavailable(
                f"could not {self._doing}: all {store._max_connections} Redis connections of "
                f"this store stayed busy for {store._socket_timeout:g}s. Redis at "
                f"{_safe(store.url)} is slow or hung, or max_connections is too small for the load"
            ) from None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        self._store._slots.release()
        if isinstance(exc, rerr.RedisError):
            raise self._store._unavailable(self._doing, exc) from exc


# -- helpers -----------------------------------------------------------------


async def _done(value: Any) -> Any:
    """Await a redis-py command (typed as maybe-awaitable, for its sync twin's sake)."""
    return await cast(Awaitable[Any], value)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _num(value: float | None) -> str:
    # repr() round-trips a float exactly; Lua's tostring would not.
    return "" if value is None else repr(float(value))


def _dump_data(user: str, data: dict[str, Any]) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the conversation data of user ...{user[-4:]} cannot be saved in Redis: {exc}. "
            "Keep only JSON values in ctx.data (str, int, float, bool, None, lists, "
            "dicts with str keys)"
        ) from exc


def _seq(value: str | None) -> int | None:
    """A stream entry's send sequence number ("" or absent: none)."""
    return int(value) if value else None


def _changes(stored: Sequence[str | None], new: Conversation) -> tuple[list[str], list[str]]:
    """The conversation's fields to set (name, value, ...) and to delete, against ``stored``.

    ``last_inbound`` never moves back: the later of the stored and the new
    one is kept.
    """
    state, data, version, last_inbound, last_active, opted_out, not_on_whatsapp = stored
    put = ["version", str(int(version or 0) + 1)]
    drop: list[str] = []

    def update(name: str, was: str | None, now: str | None) -> None:
        if now is None:
            if was is not None:
                drop.append(name)
        elif now != was:
            put.extend((name, now))

    update("state", state, new.state)
    update("data", data, _dump_data(new.user, new.data))
    inbound = new.last_inbound
    if inbound is not None and (last_inbound is None or inbound > float(last_inbound)):
        update("last_inbound", last_inbound, _num(inbound))
    update("last_active", last_active, None if new.last_active is None else _num(new.last_active))
    update("opted_out", opted_out or "0", "1" if new.opted_out else "0")
    update("not_on_whatsapp", not_on_whatsapp or "0", "1" if new.not_on_whatsapp else "0")
    return put, drop


def _conversation(user: str, fields: Sequence[str | None]) -> Conversation:
    state, data, version, last_inbound, last_active, opted_out, not_on_whatsapp = fields
    return Conversation(
        user=user,
        state=state,
        data=json.loads(data) if data else {},
        version=int(version or 0),
        last_inbound=None if not last_inbound else float(last_inbound),
        last_active=None if not last_active else float(last_active),
        opted_out=opted_out == "1",
        not_on_whatsapp=not_on_whatsapp == "1",
    )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _sentinel_client(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """The primary's client from ``redis+sentinel://[[user]:pass@]h1[:p],h2[:p]/service[/db]``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    sentinels: list[tuple[str, int]] = []
    for node in netloc.split(","):
        host, _, port = node.rpartition(":") if ":" in node else (node, "", "")
        sentinels.append((host or node, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(
            "a redis+sentinel:// URL names the service after the hosts: "
            "redis+sentinel://host1:26379,host2:26379/mymaster[/db]"
        )
    query = parse_qs(parts.query)
    master = dict(options)
    master["db"] = int(path[1]) if len(path) > 1 else 0
    if parts.username:
        master["username"] = unquote(parts.username)
    if parts.password is not None:
        master["password"] = unquote(parts.password)
    sentinel_options = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "decode_responses": True,
    }
    if "sentinel_password" in query:
        sentinel_options["password"] = query["sentinel_password"][0]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=sentinel_options, **master
    )
    return cast(aioredis.Redis, sentinel.master_for(unquote(path[0]), redis_class=aioredis.Redis))
