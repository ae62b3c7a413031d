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
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis

from botkit.storage.base import StorageUnavailable

log = logging.getLogger("botkit.storage.redis")

# The listener's reconnect backoff, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
# The listener pings the server this often when the channel is quiet ...
_PUBSUB_PING_EVERY = 5.0
# ... and reconnects when it heard nothing (not even the pong) for this long.
_PUBSUB_SILENCE = 15.0

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
    """Follows the unlock channel while the store is open, reconnecting with backoff.

    ``on_payload`` gets each published wake-up; after every (re)subscription
    ``on_subscribe`` runs, since wake-ups may have been missed meanwhile.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        on_payload: Callable[[str], None],
        on_subscribe: Callable[[], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_payload = on_payload
        self._on_subscribe = on_subscribe
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following the channel in a task of its own."""
        self._task = asyncio.create_task(self._listen(), name="botkit-redis-unlock-listener")

    async def stop(self) -> None:
        """Stop following (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(BaseException):
                await task

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN
        lost_at: float | None = None  # an outage is a line at its start and one at its end
        while True:
            # Every reply counts as a sign of life (the pong too, whatever shape
            # redis-py gives it), so no reply is filtered out here.
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(self._channel)
                self.subscribed.set()
                if lost_at is not None:
                    log.info("unlock channel back after %.1fs", time.monotonic() - lost_at)
                    lost_at = None
                backoff = _BACKOFF_MIN
                self._on_subscribe()
                heard = pinged = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=_PUBSUB_PING_EVERY)
                    now = time.monotonic()
                    if message is not None:
                        heard = now
                        if message.get("type") == "message":
                            self._on_payload(str(message["data"]))
                    if now - heard > _PUBSUB_SILENCE:
                        raise StorageUnavailable("the unlock channel went silent")
                    if now - pinged >= _PUBSUB_PING_EVERY:
                        pinged = now
                        await pubsub.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.info("unlock channel lost (%s); reconnecting", exc)
                else:
                    log.debug("unlock channel still lost (%s); retrying in %.2fs", exc, backoff)
            finally:
                self.subscribed.clear()
                with suppress(BaseException):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _BACKOFF_MAX)
