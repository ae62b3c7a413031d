"""Turns waiting for their user's lock, and the listener that wakes them.

Waiting turns queue instead of spinning: the first waiter of a user in this
process (the head of :class:`Waiters`' queue for that user) retries when the
holder commits, aborts or its lock expires; later waiters of the same user in
this process queue behind it, first come first served. Commits of this
process wake their own waiters directly; commits of other processes publish a
wake-up that :class:`UnlockListener` hears. Nothing per user stays in the
process once no turn of that user waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisError

from botkit._retry import RetryPolicy
from botkit.storage.base import StorageUnavailable, StoreConfig

log = logging.getLogger("botkit.storage.redis")

# The listener pings the server this often when the channel is quiet ...
_PUBSUB_PING_EVERY = 5.0
# ... and reconnects when it heard nothing (not even the pong) for this long.
_PUBSUB_SILENCE = 15.0
# The longest a follower waits for a message before it looks at its stop flag.
_READ_TIMEOUT = 1.0

T = TypeVar("T")


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


class Waiters:
    """This process's turns waiting for a lock, per user (an entry only while one waits)."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[_Waiter]] = {}

    def __len__(self) -> int:
        """How many users have turns waiting."""
        return len(self.queues)

    def count(self, user: str) -> int:
        """How many turns of ``user`` wait."""
        return len(self.queues.get(user, ()))

    def wake(self, user: str) -> None:
        """The user's lock was let go: the first waiter tries again."""
        queue = self.queues.get(user)
        if queue:
            queue[0].notify(released=True)

    def wake_all(self) -> None:
        """Wake-ups may have been missed (a reconnect): every first waiter tries again."""
        for queue in list(self.queues.values()):
            queue[0].notify(released=True)

    async def wait(
        self,
        user: str,
        attempt: Callable[[], Awaitable[T | float]],
        deadline: float,
        hold: float,
        busy: Callable[[], Exception],
        acquired: type[T],
    ) -> T:
        """Queue behind this process's other waiters of ``user``, calling ``attempt`` when due.

        ``attempt()`` returns what was ``acquired`` (an instance of that type),
        or how long (seconds) the lock stays taken. Only the first waiter calls
        it: at once, then when the holder lets go (:meth:`wake`) or when the
        lock's known expiry has passed (a crashed holder). After ``deadline``
        (monotonic) raises ``busy()``. A waiter that got the lock tells the
        next one to wait ``hold`` seconds at most (the lock's lifetime).
        """
        loop = asyncio.get_running_loop()
        queue = self.queues.get(user)
        if queue is None:
            queue = self.queues[user] = deque()
        me = _Waiter(loop.create_future(), None)
        queue.append(me)
        got_it = False
        try:
            while True:
                now = time.monotonic()
                head = queue[0] is me
                if head and (me.released or me.busy_until is None or now >= me.busy_until):
                    me.released = False
                    got = await attempt()
                    if isinstance(got, acquired):
                        got_it = True
                        return got
                    assert isinstance(got, float)
                    me.busy_until = time.monotonic() + got
                    continue  # a release during the call set ``released``: try again at once
                remaining = deadline - now
                if remaining <= 0:
                    raise busy()
                if head and me.busy_until is not None:
                    remaining = min(remaining, me.busy_until - now)
                me.wake = loop.create_future()
                await asyncio.wait({me.wake}, timeout=remaining)
        finally:
            was_head = queue[0] is me
            queue.remove(me)
            if not queue:
                if self.queues.get(user) is queue:
                    del self.queues[user]
            elif was_head:
                if got_it:
                    # Ours now: the next waits for our commit (or the lock's expiry).
                    queue[0].notify(busy_until=time.monotonic() + hold)
                else:
                    queue[0].busy_until = None
                    queue[0].notify()


class UnlockListener:
    """Follows the unlock channels (sharded pub/sub) while the store is open.

    The scripts announce a released lock with ``SPUBLISH`` on a shard channel;
    this follows every channel in ``channels`` with ``SSUBSCRIBE``. On
    standalone Redis and Sentinel all go over one connection of ``client``.
    On Redis Cluster (``client=None``) each channel is followed on the primary
    that serves its slot, one connection per primary: ``node_client(host,
    port)`` opens them, and the slots are read (``CLUSTER SLOTS``) from the
    primaries known so far or the ``seeds``. ``on_payload`` gets each wake-up.

    When any connection fails, goes silent, or the server drops a
    subscription (its slot moved: a failover or a reshard), every
    subscription is made again from a fresh view of the slots, with backoff;
    after each complete (re)subscription ``on_subscribe`` runs, since wake-ups
    may have been missed meanwhile.
    """

    def __init__(
        self,
        client: aioredis.Redis | None,
        channels: Sequence[str],
        on_payload: Callable[[str], None],
        on_subscribe: Callable[[], None],
        *,
        seeds: Sequence[tuple[str, int]] = (),
        node_client: Callable[[str, int], aioredis.Redis] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if client is None and (not seeds or node_client is None):
            raise ValueError(
                "on Redis Cluster (client=None) the listener needs seeds and node_client"
            )
        self._client = client
        self._channels = list(channels)
        self._on_payload = on_payload
        self._on_subscribe = on_subscribe
        self._seeds = [(str(host), int(port)) for host, port in seeds]
        self._node_client = node_client
        self._retry = retry or StoreConfig().reconnect
        self._nodes: dict[tuple[str, int], aioredis.Redis] = {}
        self._primaries: list[tuple[str, int]] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following the channels in a task of its own."""
        self._task = asyncio.create_task(self._listen(), name="botkit-redis-unlock-listener")

    async def stop(self) -> None:
        """Stop following and close the per-node connections (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(BaseException):
                await task
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            with suppress(Exception):
                await node.aclose()

    def _node(self, address: tuple[str, int]) -> aioredis.Redis:
        node = self._nodes.get(address)
        if node is None:
            assert self._node_client is not None
            node = self._nodes[address] = self._node_client(*address)
        return node

    async def _slots(self) -> list[tuple[int, int, tuple[str, int]]]:
        """(first slot, last slot, primary address) from the first node that answers."""
        for address in dict.fromkeys([*self._primaries, *self._seeds]):
            try:
                answer = await self._node(address).execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER SLOTS"
                )
            except (RedisError, OSError):
                continue
            # Each range: [start, end, [host, port, id, ...], replicas...]; an
            # empty host means "the address you reached me at".
            return [
                (int(start), int(end), (str(primary[0]) or address[0], int(primary[1])))
                for start, end, primary, *_ in answer
            ]
        raise StorageUnavailable("no Redis Cluster node answered CLUSTER SLOTS")

    async def _groups(self) -> list[tuple[aioredis.Redis, list[str]]]:
        """Which connection follows which channels: one per primary that serves some."""
        if self._client is not None:
            return [(self._client, self._channels)]
        ranges = await self._slots()
        self._primaries = list(dict.fromkeys(owner for _, _, owner in ranges))
        owned: dict[tuple[str, int], list[str]] = {}
        for channel in self._channels:
            slot = key_slot(channel.encode())
            owner = next((o for start, end, o in ranges if start <= slot <= end), None)
            if owner is None:
                raise StorageUnavailable(f"no Redis Cluster node serves slot {slot} right now")
            owned.setdefault(owner, []).append(channel)
        return [(self._node(address), channels) for address, channels in owned.items()]

    async def _listen(self) -> None:
        failures = 0
        lost_at: float | None = None  # an outage is a line at its start and one at its end
        while True:
            followers: list[asyncio.Task[None]] = []
            stop = asyncio.Event()
            backoff = 0.0
            try:
                groups = await self._groups()
                ready = _Countdown(len(groups))
                followers = [
                    asyncio.create_task(self._follow(node, channels, ready, stop))
                    for node, channels in groups
                ]
                readiness = asyncio.create_task(ready.done.wait())
                try:
                    await asyncio.wait([*followers, readiness], return_when=FIRST_COMPLETED)
                finally:
                    readiness.cancel()
                if ready.done.is_set():
                    self.subscribed.set()
                    if lost_at is not None:
                        log.info("unlock channel back after %.1fs", time.monotonic() - lost_at)
                        lost_at = None
                    failures = 0
                    self._on_subscribe()
                    await asyncio.wait(followers, return_when=FIRST_COMPLETED)
                for follower in followers:
                    if follower.done():
                        follower.result()  # raises what ended it
                raise StorageUnavailable("an unlock channel follower stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = self._retry.delay(failures)
                failures += 1
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.info("unlock channel lost (%s); resubscribing", exc)
                else:
                    log.debug("unlock channel still lost (%s); retrying in %.2fs", exc, backoff)
            finally:
                self.subscribed.clear()
                # A cancel can be lost inside redis-py's read with a timeout: the
                # followers also stop on the flag, at their next read timeout.
                stop.set()
                for follower in followers:
                    follower.cancel()
                if followers:
                    await asyncio.wait(followers)
            await asyncio.sleep(backoff)

    async def _follow(
        self, node: aioredis.Redis, channels: list[str], ready: _Countdown, stop: asyncio.Event
    ) -> None:
        """Subscribe ``channels`` on one connection, count down ``ready``, deliver wake-ups."""
        # Every reply counts as a sign of life (the pong too, whatever shape
        # redis-py gives it), so no reply is filtered out here.
        pubsub = node.pubsub(ignore_subscribe_messages=False)
        try:
            for channel in channels:  # one slot per SSUBSCRIBE on a cluster
                await pubsub.ssubscribe(channel)
            confirmed = 0
            heard = pinged = time.monotonic()
            while not stop.is_set():
                message = await pubsub.get_message(timeout=min(_READ_TIMEOUT, _PUBSUB_PING_EVERY))
                now = time.monotonic()
                if message is not None:
                    heard = now
                    kind = message.get("type")
                    if kind == "smessage":
                        self._on_payload(str(message["data"]))
                    elif kind == "ssubscribe":
                        confirmed += 1
                        if confirmed == len(channels):
                            ready.count_down()
                    elif kind == "sunsubscribe":
                        raise StorageUnavailable(
                            f"the server dropped the subscription to {message.get('channel')} "
                            "(its slot moved)"
                        )
                if now - heard > _PUBSUB_SILENCE:
                    raise StorageUnavailable("an unlock channel went silent")
                if now - pinged >= _PUBSUB_PING_EVERY:
                    pinged = now
                    await pubsub.ping()
        finally:
            with suppress(BaseException):
                await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]


class _Countdown:
    """``done`` is set once ``count_down()`` was called ``count`` times."""

    __slots__ = ("done", "left")

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()
        if count <= 0:
            self.done.set()

    def count_down(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()
