"""The timer worker: a background task per process that runs users' due timers as turns.

Each pass claims users whose earliest timer is due for a lease, in the
shards this process's outbox sender owns (the same rendezvous ownership over
the live senders, see :mod:`botkit.delivery._shards`: N workers split the
shards and never claim each other's users; until the sender's first
heartbeat, and without shards, every shard). It runs each due timer as a
turn of its user through the runtime: the user's lock, the timer fired only
while it is still pending, and the turn's commit removing it. A worker that
dies leaves its shards to the live workers once its heartbeat lapses; the
worker that gains one takes the users the dead one had claimed at once (not
after their lease). A turn that had committed already removed its timer, and
a timer turn fires its timer only while it is still pending, so nothing
fires twice.
After an outage the timers that came due meanwhile fire late, not never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from botkit import _metrics as metrics
from botkit._retry import RetryPolicy
from botkit._runtime import Runtime
from botkit._turn import Outcome
from botkit.delivery._shards import ShardOwnership
from botkit.storage.base import StorageError, StorageUnavailable, TimerClaim
from botkit.storage.outage import outage_log

log = logging.getLogger("botkit.timers")


TIMER_RETRY = RetryPolicy(attempts=None, base_delay=0.5, max_delay=5.0)
"""The timer worker's default backoff after a failed pass."""


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """How the timer worker polls and claims.

    ``poll`` is the pause between passes that found nothing due; ``lease``
    is how long a claimed user is left to this worker before another may
    claim them (longer than a turn takes); ``batch`` bounds the users one
    pass claims and ``concurrency`` the timer turns running at once.
    ``retry`` is the pause after a pass that failed (the store down, say).
    """

    poll: float = 0.25
    lease: float = 60.0
    batch: int = 100
    concurrency: int = 32
    retry: RetryPolicy = TIMER_RETRY


class TimerWorker:
    """Runs due timers as turns of their users; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        config: TimerConfig | None = None,
        *,
        ownership: ShardOwnership | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config or TimerConfig()
        self.ownership = ownership
        """The outbox sender's shard ownership: claims only in the shards it owns (None: all)."""
        # The shards owned and the live workers at the last pass (to see a worker leave).
        self._owned: frozenset[int] | None = None
        self._live: frozenset[str] = frozenset()
        self._inheriting: list[int] = []
        self._outage = outage_log(runtime.store)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self._counted_at = 0.0

    def start(self) -> None:
        """Start the background task."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="botkit-timers")

    async def stop(self) -> None:
        """Stop after the pass in flight (its turns finish or are left to the lease)."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                fired = await self.fire_due()
                if time.monotonic() - self._counted_at > 5.0:
                    self._counted_at = time.monotonic()
                    metrics.TIMERS_PENDING.set(await self.runtime.store.timers_pending())
                failures = 0
                self._outage.recovered()
            except asyncio.CancelledError:
                raise
            except StorageUnavailable as exc:
                failures += 1
                self._outage.failed(exc)
                fired = 0
            except Exception:
                failures += 1
                fired = 0
                log.exception("timer pass failed")
            if fired:
                continue  # more may be due: look again at once
            delay = self.config.retry.delay(failures - 1) if failures else self.config.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def fire_due(self) -> int:
        """One pass: claim users with due timers and run those timers; how many turns ran."""
        store = self.runtime.store
        # The shards this process's sender owns (None until its first heartbeat: all).
        shards = None if self.ownership is None else self.ownership.shards
        if shards is not None and not shards:
            return 0  # more workers than shards: none is this one's for now
        now = self.runtime.clock.now()
        ran = 0
        inherited = self._inherited(shards)
        if inherited:
            # Shards of a worker that left: the users it had claimed (their claims
            # end within a lease from now) are taken now, not after their lease.
            # Users merely due within that time are put back at their next timer.
            claims = await store.timers_claim(
                now + self.config.lease, 0.0, self.config.batch, shards=inherited
            )
            if len(claims) < self.config.batch:
                self._inheriting = []  # else more may be left: again next pass
            ran += sum(await asyncio.gather(*(self._fire_user(c) for c in claims)))
        claims = await store.timers_claim(now, self.config.lease, self.config.batch, shards=shards)
        if claims:
            ran += sum(await asyncio.gather(*(self._fire_user(c) for c in claims)))
        return ran

    def _inherited(self, shards: list[int] | None) -> list[int]:
        """The shards this worker gained because a worker left (and still to look at)."""
        ownership = self.ownership
        if ownership is None or shards is None:
            return []
        before, live_before = self._owned, self._live
        self._owned, self._live = frozenset(shards), ownership.live
        if before is not None and live_before - ownership.live:
            self._inheriting = sorted({*self._inheriting, *(set(shards) - before)})
        self._inheriting = [shard for shard in self._inheriting if shard in self._owned]
        return self._inheriting

    async def _fire_user(self, claim: TimerClaim) -> int:
        async with self._slots:
            runtime = self.runtime
            try:
                conversation = await runtime.store.load(claim.user)
                now = runtime.clock.now()
                due = sorted(
                    (t for t in conversation.timers.values() if t.due <= now),
                    key=lambda t: (t.due, t.name),
                )
                if not due:
                    # Fired by an earlier claim, or moved: put the user at their next timer.
                    await runtime.store.timers_reschedule(claim, conversation.next_due())
                    return 0
                ran = 0
                for timer in due:
                    outcome = await runtime.run_timer(claim.user, timer)
                    if outcome.outcome not in (Outcome.DUPLICATE, Outcome.IN_PROGRESS):
                        ran += 1
                        metrics.count(metrics.TIMERS_FIRED, outcome.outcome.value)
                        metrics.observe(metrics.TIMER_LAG_SECONDS, max(0.0, now - timer.due))
                return ran
            except StorageError as exc:
                # Busy user, lost lock or an outage: the claim's lease brings it back.
                log.info("timers of user ...%s wait for their lease: %s", claim.user[-4:], exc)
                if isinstance(exc, StorageUnavailable):
                    raise
                return 0
            except Exception:
                log.exception("timers of user ...%s failed", claim.user[-4:])
                return 0


async def fire_due_timers(runtime: Runtime) -> int:
    """Run every timer due by the runtime's clock now, in this task (the test kit's way)."""
    worker = TimerWorker(runtime, TimerConfig(lease=3600.0, batch=1000))
    total = 0
    started = time.monotonic()
    while True:
        fired = await worker.fire_due()
        total += fired
        if not fired or time.monotonic() - started > 60:
            return total
