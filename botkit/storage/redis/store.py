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
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as rerr

from botkit._clock import Clock, SystemClock
from botkit._outbound import OutboundMessage, SentRecord, new_ref
from botkit.storage.base import (
    DAY,
    Conversation,
    ConversationStore,
    DuplicateMessage,
    LockLost,
    OutboxItem,
    StorageUnavailable,
    StoreConfig,
    TurnLease,
    UserBusy,
)
from botkit.storage.redis import scripts
from botkit.storage.redis.connection import build_client
from botkit.storage.redis.fields import FIELDS, Stored, changes, conversation, number
from botkit.storage.redis.keys import Keys
from botkit.storage.redis.runner import ScriptRunner, done
from botkit.storage.redis.waiters import UnlockListener, Waiters

log = logging.getLogger("botkit.storage.redis")

# How many delayed messages one RELEASE_DUE call moves (keeps each script short).
_RELEASE_BATCH = 500


@dataclass(frozen=True, slots=True)
class _Lease(TurnLease):
    """A lease with the conversation's fields as BEGIN read them (see :data:`FIELDS`).

    The commit writes only what differs from them: the lock means nobody
    else wrote the conversation since, whatever the turn did to its copy.
    """

    stored: Stored = ()


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
        self._keys = Keys(prefix, bot)
        self._clock = clock or SystemClock()
        self._socket_timeout = socket_timeout
        self._connect_timeout = socket_timeout if connect_timeout is None else connect_timeout
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._runner = ScriptRunner(url=url, prefix=self._keys.base, socket_timeout=socket_timeout)
        self._lock_ttl_ms = _ms(self.config.lock_ttl)
        self._conversation_ttl_ms = _ms(max(self.config.conversation_ttl, session_window))
        self._done_ttl_ms = _ms(self.config.done_ttl)
        self._sent_ttl_ms = _ms(self.config.sent_ttl)
        self._given_client = client
        self._client: aioredis.Redis | None = client
        self._instance = secrets.token_hex(6)
        self._waiters = Waiters()
        self._listener: UnlockListener | None = None
        self._background: set[asyncio.Task[Any]] = set()
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
                self._client = build_client(
                    self.url,
                    socket_timeout=self._socket_timeout,
                    connect_timeout=self._connect_timeout,
                    # One more for the unlock listener, one spare.
                    max_connections=self._max_connections + 2,
                )
            client = self._runner.client = self._client
            guard = self._runner.guard("open the store")
            async with guard, client.pipeline(transaction=False) as pipe:
                for script in scripts.ALL:
                    pipe.script_load(script.source)
                await pipe.execute()
                await self._ensure_group()
            self._opened = True
        listener = self._listener = UnlockListener(
            client, self._keys.channel, self._on_unlock, self._waiters.wake_all
        )
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
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task
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
        """Extend the lease's lock (and its in-progress mark) by ``lock_ttl``; False when lost."""
        keys = [self._keys.turn(lease.user, lease.key)[1]]
        if lease.key is not None:
            keys.append(self._keys.turn(lease.user, lease.key)[3])
        async with self._runner.guard("renew a turn's lock"):
            renewed = await self._runner.run(scripts.RENEW, keys, [lease.token, self._lock_ttl_ms])
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
            put, drop = changes(lease.stored, conversation)
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
        async with self._runner.guard("commit a turn"):
            committed = await self._runner.run(scripts.COMMIT, keys, args)
        if not committed:
            raise LockLost(
                f"the lock of user ...{lease.user[-4:]} expired before the turn committed; "
                "nothing was saved. Raise StoreConfig.lock_ttl or make the handler faster"
            )
        self._waiters.wake(lease.user)

    async def abort_turn(self, lease: TurnLease) -> None:
        """Unlock and forget the in-progress mark, if the lock is still the lease's."""
        _, lock, waiting, *seen = self._keys.turn(lease.user, lease.key)
        args = [lease.token, self._keys.channel, f"{self._instance} {lease.user}"]
        async with self._runner.guard("abort a turn"):
            released = await self._runner.run(scripts.ABORT, [lock, waiting, *seen], args)
        if released:
            self._waiters.wake(lease.user)

    async def load(self, user: str) -> Conversation:
        """Read the user's conversation without locking (an empty one when unknown)."""
        client = await self._ensure_open()
        async with self._runner.guard("load a conversation"):
            fields: list[str | None] = await done(client.hmget(self._keys.conv(user), FIELDS))
        return conversation(user, fields)

    @property
    def waiting_users(self) -> int:
        """How many users have turns of this process waiting for their lock (0 when idle)."""
        return len(self._waiters)

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
            async with self._runner.guard("queue messages"):
                args = [self._conversation_ttl_ms, *entries]
                await self._runner.run(scripts.ENQUEUE, [*keys, self._keys.order(user)], args)

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
            async with self._runner.guard("read the outbox"):
                try:
                    flat = await self._runner.run(
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
            async with self._runner.guard("read the outbox"):
                try:
                    found = await done(
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
        async with self._runner.guard("claim outbox entries"):
            try:
                claimed = await self._runner.run(scripts.CLAIM, [self._keys.outbox], args)
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
        async with self._runner.guard("acknowledge outbox entries"):
            acked = await self._runner.run(scripts.ACK, [self._keys.outbox], args)
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
        async with self._runner.guard("check the send order"):
            verdicts = await self._runner.run(scripts.READY, [], args)
        return [bool(v) for v in verdicts]

    async def outbox_release_due(self, now: float) -> int:
        """Move delayed messages due by ``now`` into the outbox, atomically per batch."""
        await self._ensure_open()
        moved = 0
        while True:
            async with self._runner.guard("release delayed messages"):
                batch = int(
                    await self._runner.run(
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
        guard = self._runner.guard("measure the outbox")
        async with guard, client.pipeline(transaction=False) as pipe:
            pipe.xlen(self._keys.outbox)
            pipe.zcard(self._keys.delayed)
            stream, delayed = await pipe.execute()
        return int(stream) + int(delayed)

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

    async def get_sent(self, message_id: str) -> SentRecord | None:
        """The record by provider ``messageId``, unless expired."""
        client = await self._ensure_open()
        async with self._runner.guard("read a sent-message record"):
            raw: str | None = await done(client.get(self._keys.sent(message_id)))
        return None if raw is None else SentRecord.from_json(raw)

    async def update_sent(self, record: SentRecord) -> None:
        """Replace the record, keeping its remaining TTL (a fresh one if it had expired)."""
        await self._ensure_open()
        async with self._runner.guard("update a sent-message record"):
            await self._runner.run(
                scripts.UPDATE_SENT,
                [self._keys.sent(record.message_id)],
                [record.to_json(), self._sent_ttl_ms],
            )

    # -- turns: internals ----------------------------------------------------

    async def _try_begin(
        self, user: str, key: str | None, token: str, inbound_at: float | None
    ) -> TurnLease | float:
        """One BEGIN call: the lease, or how long (s) the lock stays taken."""
        args = [token, self._lock_ttl_ms, number(inbound_at), self._conversation_ttl_ms]
        try:
            async with self._runner.guard("begin a turn"):
                result = await self._runner.run(scripts.BEGIN, self._keys.turn(user, key), args)
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
                conversation=conversation(user, fields),
                stored=fields,
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
        _, lock, waiting, *seen = self._keys.turn(user, key)
        args = [token, self._keys.channel, f"{self._instance} {user}"]
        try:
            async with self._runner.guard("release a lock after a failed begin"):
                await self._runner.run(scripts.ABORT, [lock, waiting, *seen], args)
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

    async def _ensure_open(self) -> aioredis.Redis:
        if not self._opened:
            await self.open()
        assert self._client is not None
        return self._client

    async def _ensure_group(self) -> None:
        assert self._client is not None
        try:
            await done(
                self._client.xgroup_create(self._keys.outbox, self.group, id="0", mkstream=True)
            )
        except rerr.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise


# -- helpers -----------------------------------------------------------------


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _seq(value: str | None) -> int | None:
    """A stream entry's send sequence number ("" or absent: none)."""
    return int(value) if value else None
