"""The sender: a background task per process that empties the outbox into the provider.

It reads pending messages, waits a few milliseconds to fill a batch, and
sends up to 100 in one ``POST /whatsapp/messages``. A batch the provider did
not answer (transport error, timeout, 5xx after the client's own retries) is
retried with backoff before anything newer is read. Entries are acknowledged
only after the provider answered; entries another instance read and never
acknowledged are claimed after ``claim_idle`` seconds.

Status callbacks are receipts. A batch that may have reached the provider
without its answer reaching botkit (the request went out and timed out, or
the connection dropped; or a sender died with it in flight and another
claimed it) is not simply sent again: the sender first looks for a receipt
of each message (any status callback naming its reference) and waits up to
``receipt_grace`` seconds for one; a message with a receipt is acknowledged,
not resent. ``claim_idle`` is derived from the client's longest send (every
attempt's timeouts and backoffs) plus that grace, and a sender retrying a
batch restarts its entries' idle time first, so a live slow sender is never
overtaken and a dead one's receipts have had their grace when it is claimed.
Without status callbacks (no ``callback_url``) there are no receipts: such a
batch is sent again (at least once).

A user's replies keep their order across senders: each is numbered when its
turn commits, and a sender holds a message back until the provider answered
the one before it, whichever sender had it (``order_wait`` bounds the wait).

Bulk sends (campaigns) come from a :class:`BulkSource` and only fill the room
the outbox leaves in a batch: replies to users always go first. The source
paces them, and the sender hands their answers back to it
(:meth:`BulkSource.settle`) instead of acknowledging outbox entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from botkit import _metrics as metrics
from botkit._clock import Clock, SystemClock
from botkit._outbound import OutboundMessage, SentRecord
from botkit._retry import RetryPolicy
from botkit.delivery._shards import ShardOwnership
from botkit.delivery._signing import CallbackSigner
from botkit.delivery._status import furthest
from botkit.devino.client import DevinoClient
from botkit.devino.convert import to_outgoing
from botkit.devino.errors import DevinoAuthError, DevinoError, DevinoTransportError, ReasonKey
from botkit.devino.models import SendResult
from botkit.storage.base import (
    ConversationStore,
    OutboxItem,
    Receipt,
    ShardedOutbox,
    StorageError,
    StorageUnavailable,
)
from botkit.storage.outage import outage_log

log = logging.getLogger("botkit.sender")

RejectionHandler = Callable[[OutboundMessage, SendResult], Awaitable[None]]


OUTBOX_RETRY = RetryPolicy(attempts=None, base_delay=0.5, max_delay=10.0)
"""The outbox worker's default backoff (the service's comes from its settings)."""


class BulkSource(Protocol):
    """Messages sent after the replies, paced by their source (campaigns).

    Their items' ids are the source's own (:meth:`owns`); the sender asks
    the source, not the outbox, to touch and settle them.
    """

    def owns(self, item_id: str) -> bool:
        """True for an id of this source's items."""
        ...

    def ready_in(self) -> float:
        """Seconds until the source may have something to send (inf: nothing running)."""
        ...

    async def take(
        self, room: int, consumer: str, live: Collection[str] | None = None
    ) -> list[OutboxItem]:
        """Up to ``room`` items that may go now; ``live`` are the live senders, if known."""
        ...

    async def touch(self, consumer: str, ids: Sequence[str]) -> list[str]:
        """Keep ``consumer``'s items from being taken over; the ids it still holds."""
        ...

    async def settle(self, answered: Sequence[tuple[OutboxItem, SendResult]]) -> None:
        """The provider answered these items."""
        ...

    async def settle_receipts(self, settled: Sequence[tuple[OutboxItem, Receipt]]) -> None:
        """Status callbacks showed the provider took these items: not sent again."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxWorkerConfig:
    """How the sender batches, retries and claims.

    ``linger`` is the longest it waits to fill a batch once one message is
    there. ``retry`` is the backoff between attempts at a batch the provider
    did not answer (and after a failed read or acknowledgement); it never
    gives up on a message, whatever its ``attempts``. ``claim_idle`` is how long an
    entry read by another (presumably dead) instance stays unacknowledged
    before this one takes it over; None derives it from the client: its
    longest send plus ``receipt_grace`` (see the module docstring).
    ``receipt_grace`` is how long a batch that may have reached the provider
    waits for status callbacks naming its messages before what has none is
    sent again. ``order_wait`` is the longest a message
    waits for the one before it to the same user (sent by another process)
    to be answered; after that it goes anyway, and a warning says so.
    ``heartbeat_ttl``: with a sharded outbox (Redis), how long a sender
    counts as live after its last heartbeat (it beats every third of it); the
    shards of a sender that stopped beating move to the others after that.
    """

    batch_size: int = 100
    linger: float = 0.005
    block: float = 0.5
    retry: RetryPolicy = OUTBOX_RETRY
    claim_idle: float | None = None
    receipt_grace: float = 10.0
    housekeeping_every: float = 1.0
    order_wait: float = 10.0
    heartbeat_ttl: float = 6.0


_REASON_KEYS = frozenset(ReasonKey)

# The claim delay when the client's sends are unbounded (a timeout of None).
_UNBOUNDED_CLAIM_IDLE = 600.0
# How often a sender waiting for receipts looks again.
_RECEIPT_POLL = 0.1

# How often a sender that holds only messages waiting for earlier ones looks again.
_ORDER_POLL = 0.005


def _outbox_order(item: OutboxItem) -> tuple[int, int]:
    """An entry's place in the outbox: stream ids (``[<shard>:]<ms>-<n>``) or counters."""
    first, _, second = item.id.rpartition(":")[2].partition("-")
    return int(first), int(second or 0)


def _derived_claim_idle(client: DevinoClient, grace: float) -> float:
    """The client's longest send plus the receipt grace (see the module docstring)."""
    longest = client.longest_send
    return _UNBOUNDED_CLAIM_IDLE if longest is None else longest + grace


def default_consumer_name() -> str:
    """A name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class OutboxWorker:
    """Moves outbox entries to the provider; see the module docstring.

    ``sender_name`` is the provider's ``from``. With ``callback_url`` set,
    every message asks for status callbacks there and carries a signed
    ``callbackData``. ``on_rejected`` is called for each message the provider
    (or local validation) rejected; rejected messages are never retried.
    """

    def __init__(
        self,
        store: ConversationStore,
        client: DevinoClient,
        *,
        sender_name: str,
        signer: CallbackSigner,
        callback_url: str | None = None,
        config: OutboxWorkerConfig | None = None,
        consumer: str | None = None,
        clock: Clock | None = None,
        on_rejected: RejectionHandler | None = None,
        bulk: BulkSource | None = None,
    ) -> None:
        self.store = store
        self.bulk = bulk
        """Campaign messages that fill what room the replies leave in a batch."""
        self._outage = outage_log(store)
        self.client = client
        self.sender_name = sender_name
        self.signer = signer
        self.callback_url = callback_url
        self.config = config or OutboxWorkerConfig()
        self.claim_idle: float = self.config.claim_idle or _derived_claim_idle(
            client, self.config.receipt_grace
        )
        """Seconds an entry stays unacknowledged before another sender takes it over."""
        self.consumer = consumer or default_consumer_name()
        self.clock = clock or SystemClock()
        self.on_rejected = on_rejected
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._draining = asyncio.Event()
        self._drain_until = 0.0
        self._last_housekeeping = 0.0
        self._last_size = -1e9
        self._last_claim = 0.0
        # Read, but an earlier message to the same user has no answer yet.
        self._waiting: list[OutboxItem] = []
        self._waiting_since: dict[str, float] = {}
        # A round failed: what it had taken from the outbox and not settled (a
        # read, claim or take-over whose answer was lost, a batch dropped on the
        # way) is this sender's in the store: the next round takes it back.
        self._reread = False
        # Sent, but the acknowledgement failed for good: never re-read and resent.
        self._sent_unacked: set[str] = set()
        # With a sharded outbox: the shards this sender reads (see _shards.py).
        self._outbox = store if isinstance(store, ShardedOutbox) else None
        self._ownership = (
            None
            if self._outbox is None
            else ShardOwnership(self._outbox, self.consumer, ttl=self.config.heartbeat_ttl)
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the background task."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._draining.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="botkit-sender")
            if self._ownership is not None:
                self._ownership.start()

    async def stop(self, *, flush: float = 5.0) -> None:
        """Send what is ready for up to ``flush`` seconds, then stop.

        What is still unsent stays in the outbox: another instance claims it
        (Redis), or it is lost with the process (memory store).
        """
        if self._task is None:
            return
        self._drain_until = time.monotonic() + flush
        self._draining.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=flush + 1.0)
        except TimeoutError:
            self._stopping.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        if self._ownership is not None:
            # Only now: what it read is sent or left idle, then its shards move at once.
            await self._ownership.stop()

    def _past_drain(self) -> bool:
        return self._draining.is_set() and time.monotonic() >= self._drain_until

    # -- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set() and not self._past_drain():
            try:
                await self._housekeeping()
                items = await self._next_batch()
                if items:
                    ready = await self._in_order(items)
                    if ready:
                        await self._deliver(ready)
                    elif not await self._pause(_ORDER_POLL):
                        return
                elif self._draining.is_set():
                    return
                failures = 0
                self._outage.recovered()
            except asyncio.CancelledError:
                raise
            except StorageUnavailable as exc:
                # Redis down: the outage is a line when it starts and one when it
                # ends, not a traceback per retry.
                failures += 1
                self._reread = True
                self._outage.failed(exc)
                await self._pause(self._backoff(failures))
            except Exception:
                failures += 1
                self._reread = True
                delay = self._backoff(failures)
                log.exception("sender loop failed; retrying in %.1fs", delay)
                await self._pause(delay)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < self.config.housekeeping_every:
            return
        self._last_housekeeping = now
        if self._ownership is not None and not self._draining.is_set():
            taken = await self._ownership.take_over(self.config.batch_size)
            if taken:
                log.warning("took over %d outbox entries of a sender that left", len(taken))
                # The sender that left may have had them at the provider when it
                # died: what a receipt names within the grace is settled, not resent.
                rest = await self._without_receipts(taken, grace=self.config.receipt_grace)
                if rest is None:
                    return
                self._waiting = sorted([*self._waiting, *rest], key=_outbox_order)
        await self.store.outbox_release_due(self.clock.now())
        # A gauge: measuring every shard of a Redis outbox costs more than the
        # release above, so at most every 10 s (or housekeeping_every).
        if now - self._last_size >= max(10.0, self.config.housekeeping_every):
            self._last_size = now
            metrics.OUTBOX_SIZE.set(await self.store.outbox_size())

    async def _next_batch(self) -> list[OutboxItem]:
        """Messages still waiting for earlier ones, then claimed or new ones, in outbox order.

        When a read fails, the entries it took may be this sender's without
        it knowing (the reply was lost with the connection): the next round
        takes them back (:meth:`ConversationStore.outbox_unacked`) instead of
        leaving them, and every later reply to their users, to a claim.
        """
        waiting, self._waiting = self._waiting, []
        try:
            if self._reread:
                waiting = await self._take_back(waiting)
            size = self.config.batch_size - len(waiting)
            if size <= 0:
                cap = self.config.batch_size
                waiting, self._waiting = waiting[:cap], waiting[cap:]
                return waiting
            claimed = await self._claim(size)
            if claimed:
                return sorted([*waiting, *claimed], key=_outbox_order)
            block = 0.0 if self._draining.is_set() or waiting else self.config.block
            bulk = None if self._draining.is_set() else self.bulk
            if bulk is not None:
                block = min(block, bulk.ready_in())
            items = await self._read(size, block)
            if items and len(items) < size and self.config.linger > 0:
                await asyncio.sleep(self.config.linger)
                items += await self._read(size - len(items), 0)
        except BaseException:
            self._waiting = waiting
            self._reread = True
            raise
        if bulk is not None and len(items) < size:
            # The replies first: bulk sends only fill the room they leave.
            live = None if self._ownership is None else self._ownership.steady_live
            items += await bulk.take(size - len(items), self.consumer, live)
        return [*waiting, *items]

    async def _read(self, count: int, block: float) -> list[OutboxItem]:
        """New entries: from the shards this sender owns, or all (not sharded, or unknown)."""
        owned = None if self._ownership is None else self._ownership.shards
        if owned is None or self._outbox is None:
            return await self.store.outbox_read(self.consumer, count, block)
        if not owned:  # more senders than shards: this one has none for now
            await self._pause(block)
            return []
        return await self._outbox.outbox_read(self.consumer, count, block, shards=owned)

    async def _take_back(self, waiting: list[OutboxItem]) -> list[OutboxItem]:
        """``waiting`` plus the entries this sender read without hearing of them."""
        held = {item.id for item in waiting} | self._sent_unacked
        room = self.config.batch_size - len(waiting)
        found = await self.store.outbox_unacked(self.consumer, room + len(held))
        again = [item for item in found if item.id not in held][:room]
        # All of them fitted, or another round takes the rest.
        self._reread = len(found) >= room + len(held)
        if again:
            log.warning("took back %d outbox entries a failed round had taken", len(again))
            # Some may be a departed sender's, taken over with the answer lost:
            # what a receipt names reached the provider already.
            again = await self._without_receipts(again, grace=0.0) or []
        return sorted([*waiting, *again], key=_outbox_order)

    async def _in_order(self, items: list[OutboxItem]) -> list[OutboxItem]:
        """The items that may go now; the others wait for the messages before them.

        Each user's replies are numbered at commit, and the provider must
        have answered a user's message before the next one goes, whichever
        process sends it: with several senders, that keeps every user's
        replies in order.
        """
        try:
            flags = await self.store.outbox_ready(items)
        except BaseException:
            # Read but not sent: keep them for the next round rather than leave
            # them to a claim after claim_idle.
            self._waiting = items
            raise
        ready: list[OutboxItem] = []
        now = time.monotonic()
        for item, go in zip(items, flags, strict=True):
            if not go:
                since = self._waiting_since.setdefault(item.id, now)
                if now - since < self.config.order_wait:
                    self._waiting.append(item)
                    continue
                log.warning(
                    "sending a message to user ...%s out of order: the one before it had no "
                    "answer from the provider after %.0fs",
                    item.message.user[-4:],
                    self.config.order_wait,
                )
            self._waiting_since.pop(item.id, None)
            ready.append(item)
        return ready

    async def _claim(self, size: int) -> list[OutboxItem]:
        if time.monotonic() - self._last_claim < self.claim_idle / 4:
            return []
        self._last_claim = time.monotonic()
        claimed = await self.store.outbox_claim(self.consumer, self.claim_idle, size)
        if not claimed:
            return []
        log.warning("claimed %d outbox entries left by another sender", len(claimed))
        # Idle for claim_idle: the dead sender's last request is older than the
        # receipt grace, so its receipts are in if the provider took it.
        return await self._without_receipts(claimed, grace=0.0) or []

    async def _deliver(self, items: Sequence[OutboxItem]) -> None:
        """Send one batch until the provider answers; then acknowledge and record it."""
        answered = await self._send_until_answered(items)
        if answered is None:
            return  # stopping: the entries stay pending for a claim or a restart
        items, results = answered
        sent: list[SentRecord] = []
        rejected: list[tuple[OutboundMessage, SendResult]] = []
        bulk: list[tuple[OutboxItem, SendResult]] = []
        now = self.clock.now()
        for item, result in zip(items, results, strict=True):
            if self.bulk is not None and self.bulk.owns(item.id):
                bulk.append((item, result))
                if result.ok:
                    metrics.count(metrics.SENT, item.message.mode.value)
                continue
            if result.ok and result.message_id:
                sent.append(
                    SentRecord(message_id=result.message_id, message=item.message, sent_at=now)
                )
                metrics.count(metrics.SENT, item.message.mode.value)
                if item.message.created_at:
                    metrics.observe(
                        metrics.DELIVERY_SECONDS, max(0.0, now - item.message.created_at)
                    )
            else:
                rejected.append((item.message, result))
                for reason in result.reasons or []:
                    metrics.REJECTED.labels(metrics.bounded(reason.key, _REASON_KEYS)).inc()
        if bulk:
            await self._settle_bulk(bulk)
        outbox = [item for item in items if self.bulk is None or not self.bulk.owns(item.id)]
        if outbox:
            await self._acknowledge([item.id for item in outbox], sent, outbox)
        for message, result in rejected:
            log.warning(
                "provider rejected a message to user ...%s: %s",
                message.user[-4:],
                "; ".join(str(r) for r in result.reasons) or result.code,
            )
            if self.on_rejected is not None:
                try:
                    await self.on_rejected(message, result)
                except Exception:
                    log.exception("reporting a rejected message failed")

    async def _acknowledge(
        self, ids: list[str], sent: list[SentRecord], answered: Sequence[OutboxItem]
    ) -> None:
        """Acknowledge, retrying for a while: an entry left unacknowledged would be sent twice."""
        failures = 0
        while True:
            try:
                await self.store.outbox_ack(ids, sent, answered=answered)
                return
            except StorageError:
                failures += 1
                if failures >= 8:
                    log.error(
                        "could not acknowledge %d sent messages; they may be sent again", len(ids)
                    )
                    self._sent_unacked.update(ids)
                    raise
                await asyncio.sleep(self._backoff(failures))

    async def _settle_bulk(self, answered: Sequence[tuple[OutboxItem, SendResult]]) -> None:
        """Hand the provider's answers to the bulk source, retrying for a while as acks do."""
        assert self.bulk is not None
        failures = 0
        while True:
            try:
                await self.bulk.settle(answered)
                return
            except StorageError:
                failures += 1
                if failures >= 8:
                    log.error(
                        "could not record %d sent campaign messages; they may be sent again",
                        len(answered),
                    )
                    raise
                await asyncio.sleep(self._backoff(failures))

    async def _touch(self, ids: list[str]) -> set[str]:
        """The ids of ``ids`` this sender still holds, their idle time restarted."""
        bulk = self.bulk
        theirs = [i for i in ids if bulk is not None and bulk.owns(i)]
        ours = [i for i in ids if bulk is None or not bulk.owns(i)]
        held = set(await self.store.outbox_touch(self.consumer, ours)) if ours else set()
        if theirs and bulk is not None:
            held |= set(await bulk.touch(self.consumer, theirs))
        return held

    async def _without_receipts(
        self, items: Sequence[OutboxItem], *, grace: float
    ) -> list[OutboxItem] | None:
        """Acknowledge the items the provider took (a status callback named them); the rest.

        Waits up to ``grace`` seconds for receipts while some items have none.
        Without status callbacks there are no receipts: all items are returned.
        None when it is time to stop.
        """
        if self.callback_url is None:
            return list(items)
        deadline = time.monotonic() + grace
        rest = list(items)
        while True:
            found = await self.store.receipts(rest)
            settled = [(item, got) for item, got in zip(rest, found, strict=True) if got]
            bulk = self.bulk
            if settled and bulk is not None:
                theirs = [(item, got) for item, got in settled if bulk.owns(item.id)]
                if theirs:
                    await bulk.settle_receipts(theirs)
                    metrics.RECEIPTED.inc(len(theirs))
                    settled = [(item, got) for item, got in settled if not bulk.owns(item.id)]
            if settled:
                now = self.clock.now()
                records = [
                    SentRecord(
                        message_id=got.message_id,
                        message=item.message,
                        sent_at=now,
                        status=furthest(got.statuses),
                    )
                    for item, got in settled
                    if got is not None
                ]
                done = [item for item, _ in settled]
                await self._acknowledge([item.id for item in done], records, done)
                metrics.RECEIPTED.inc(len(done))
                log.info(
                    "%d messages the provider had taken already (status callbacks named "
                    "them) are acknowledged, not sent again",
                    len(done),
                )
                rest = [item for item, got in zip(rest, found, strict=True) if not got]
            if not rest or time.monotonic() >= deadline:
                return rest
            if not await self._pause(min(_RECEIPT_POLL, max(0.0, deadline - time.monotonic()))):
                return None

    async def _send_until_answered(
        self, items: Sequence[OutboxItem]
    ) -> tuple[list[OutboxItem], list[SendResult]] | None:
        """The items the provider answered and its results (others were settled by receipts)."""
        pending = list(items)
        failures = 0
        while True:
            if failures:
                # A live sender keeps its entries: nobody claims them while it retries.
                held = await self._touch([i.id for i in pending])
                pending = [item for item in pending if item.id in held]
                if not pending:
                    return [], []
            payloads = [
                to_outgoing(
                    item.message,
                    sender=self.sender_name,
                    callback_url=self.callback_url,
                    callback_data=self.signer.sign(
                        item.message.user, item.message.ref, item.message.fallback
                    ),
                )
                for item in pending
            ]
            started = time.perf_counter()
            try:
                results = await self.client.send(payloads)
                metrics.observe(metrics.SEND_SECONDS, time.perf_counter() - started)
                return pending, results
            except DevinoAuthError:
                failures += 1
                delay = self.config.retry.max_delay
                log.error(
                    "the provider refused botkit's credentials; check BOTKIT_DEVINO_API_KEY. "
                    "Holding %d messages and retrying in %.0fs",
                    len(items),
                    delay,
                )
            except DevinoError as exc:
                failures += 1
                delay = self._backoff(failures)
                if isinstance(exc, DevinoTransportError) and exc.unanswered:
                    # It may have reached the provider: what has a receipt is not resent.
                    rest = await self._without_receipts(pending, grace=self.config.receipt_grace)
                    if rest is None:
                        return None
                    if not rest:
                        return [], []
                    pending, delay = rest, 0.0
                metrics.RETRIED.labels("transport").inc(len(pending))
                log.warning(
                    "provider did not answer a batch of %d (%s); retrying in %.1fs",
                    len(pending),
                    exc,
                    delay,
                )
            if not await self._pause(delay):
                return None

    def _backoff(self, failures: int) -> float:
        return self.config.retry.delay(failures - 1)

    async def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; False when it is time to stop instead."""
        if self._draining.is_set():
            delay = min(delay, max(0.0, self._drain_until - time.monotonic()))
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return not self._past_drain()
        return False
