"""The sender: a background task per process that empties the outbox into the provider.

It reads pending messages, waits a few milliseconds to fill a batch, and
sends up to 100 in one ``POST /whatsapp/messages``. A batch the provider did
not answer (transport error, timeout, 5xx after the client's own retries) is
retried with backoff before anything newer is read. Entries are acknowledged
only after the provider answered; entries another instance read and never
acknowledged are claimed after ``claim_idle`` seconds.

Every post to the provider is preceded by :meth:`ConversationStore.outbox_attempt`:
it drops the entries this sender no longer holds (another claimed them while
they waited here), restarts the idle time of the others, so nobody claims
them while the post lasts (``claim_idle`` is the client's longest send plus a
margin), and marks them with the time of the attempt. So an entry is posted
by one sender at a time, and whoever takes an entry over later (a claim after
``claim_idle``, the take-over of a sender that left, or this sender taking
back what a failed step left) knows whether it may be at the provider:

- never attempted: it is sent at once; it cannot have reached the provider;
- attempted: it is settled by a receipt (status callbacks are receipts: any
  callback naming its reference says the provider took it), acknowledged and
  not sent again. Without one it waits aside (the sender goes on) and is
  sent again only once ``resend_after`` has passed since the attempt began:
  the client's longest send plus ``receipt_grace``, time enough for the
  provider to have answered and for its callbacks to have come.

A batch this sender posted without an answer (a read timeout, a dropped
connection) waits aside in the same way. So a reply goes out twice only when
the provider took a request, its answer was lost, and no status callback for
it reached botkit within ``receipt_grace`` after the request's deadline; or
when there are no status callbacks at all (no ``callback_url``): then such a
batch is sent again after the retry backoff (at least once).

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
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
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
    there: a reply waits at most that long, and under load each request to
    the provider, and each of the outbox's Redis calls, carries more
    messages (in the webhook benchmark, 20 ms rather than 5 took about a
    tenth off botkit's CPU per message, server and Redis together).
    ``retry`` is the backoff between attempts at a batch the provider did
    not answer (and after a failed read or acknowledgement); it never
    gives up on a message, whatever its ``attempts``. ``claim_idle`` is how long an
    entry read by another (presumably dead) instance stays unacknowledged
    before this one takes it over; None derives it from the client: its
    longest send plus a margin (see the module docstring).
    ``receipt_grace`` is how long, after the provider must have answered, a
    message that may have reached it waits for a status callback naming it
    before it is sent again. ``order_wait`` is the longest a message
    waits for the one before it to the same user (sent by another process)
    to be answered; after that it goes anyway, and a warning says so.
    ``heartbeat_ttl``: with a sharded outbox (Redis), how long a sender
    counts as live after its last heartbeat (it beats every third of it); the
    shards of a sender that stopped beating move to the others after that.
    ``consumer_idle``: with a sharded outbox, a consumer of a shard (each
    process reads as its own) that holds nothing and was idle this long is
    forgotten by the shard's owner, at most every 10 minutes: restarts do
    not pile up consumers in Redis.
    """

    batch_size: int = 100
    linger: float = 0.02
    block: float = 0.5
    retry: RetryPolicy = OUTBOX_RETRY
    claim_idle: float | None = None
    receipt_grace: float = 60.0
    housekeeping_every: float = 1.0
    order_wait: float = 10.0
    heartbeat_ttl: float = 6.0
    consumer_idle: float = 3600.0


_REASON_KEYS = frozenset(ReasonKey)

# The longest send assumed when the client's sends are unbounded (a timeout of None).
_UNBOUNDED_SEND = 600.0
# claim_idle beyond the longest send: the time between marking an attempt and
# posting, and a loaded event loop.
_CLAIM_MARGIN = 5.0
# The longest time between two prunes of the owned shards' departed consumers.
_PRUNE_EVERY = 600.0
# How often a sender that holds only messages waiting for earlier ones looks again.
_ORDER_POLL = 0.005


def _outbox_order(item: OutboxItem) -> tuple[int, int]:
    """An entry's place in the outbox: stream ids (``[<shard>:]<ms>-<n>``) or counters."""
    first, _, second = item.id.rpartition(":")[2].partition("-")
    return int(first), int(second or 0)


def _longest_send(client: DevinoClient) -> float:
    """The client's longest send (:attr:`DevinoClient.longest_send`), or a stand-in."""
    longest = client.longest_send
    return _UNBOUNDED_SEND if longest is None else longest


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
        self.claim_idle: float = self.config.claim_idle or _longest_send(client) + _CLAIM_MARGIN
        """Seconds an entry stays unacknowledged before another sender takes it over."""
        self.resend_after: float = _longest_send(client) + self.config.receipt_grace
        """Seconds after a send of an entry began before, without a receipt, it is sent again."""
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
        self._last_prune = time.monotonic()
        # Read, but an earlier message to the same user has no answer yet.
        self._waiting: list[OutboxItem] = []
        self._waiting_since: dict[str, float] = {}
        # A round failed: what it had taken from the outbox and not settled (a
        # read, claim or take-over whose answer was lost, a batch dropped on the
        # way) is this sender's in the store: the next round takes it back.
        self._reread = False
        # Posted and maybe at the provider, no receipt yet: (item, when to post it again).
        self._in_doubt: list[tuple[OutboxItem, float]] = []
        # Posts in a row the provider left unanswered (each pauses longer).
        self._unanswered = 0
        # Sent, but the acknowledgement failed for good: never re-read and resent.
        self._sent_unacked: set[str] = set()
        # Ids whose attempt mark may be written although their post never began
        # here (the mark's answer was lost): id -> when. Within claim_idle of
        # that, no other sender can have taken them, so they cannot be at the
        # provider and go at once when taken back (not after resend_after).
        self._unposted: dict[str, float] = {}
        # With a sharded outbox: the shards this sender reads (see _shards.py).
        self._outbox = store if isinstance(store, ShardedOutbox) else None
        self._ownership = (
            None
            if self._outbox is None
            else ShardOwnership(self._outbox, self.consumer, ttl=self.config.heartbeat_ttl)
        )

    @property
    def ownership(self) -> ShardOwnership | None:
        """The shards this sender owns among the live senders (None: the outbox has no
        shards); the timer worker of the same process claims due timers by it too."""
        return self._ownership

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
                self._hold(await self._settle(taken))
        if self._in_doubt:
            self._hold(await self._settle_in_doubt())
        if self._unposted:  # what was not taken back in time is another's by now
            self._unposted = {i: t for i, t in self._unposted.items() if now - t < self.claim_idle}
        await self._prune_consumers(now)
        await self.store.outbox_release_due(self.clock.now())
        # A gauge: measuring every shard of a Redis outbox costs more than the
        # release above, so at most every 10 s (or housekeeping_every).
        if now - self._last_size >= max(10.0, self.config.housekeeping_every):
            self._last_size = now
            metrics.OUTBOX_SIZE.set(await self.store.outbox_size())

    async def _prune_consumers(self, now: float) -> None:
        """Forget the departed consumers of the shards this sender owns (``consumer_idle``)."""
        idle = self.config.consumer_idle
        if self._outbox is None or self._ownership is None or self._draining.is_set():
            return
        if now - self._last_prune < min(_PRUNE_EVERY, idle):
            return
        shards = self._ownership.shards
        if not shards:
            return
        self._last_prune = now
        gone = await self._outbox.outbox_prune(idle, shards=shards)
        if gone:
            log.info("forgot %d outbox consumers of senders gone %.0fs or more", gone, idle)

    async def _next_batch(self) -> list[OutboxItem]:
        """Messages still waiting for earlier ones, then claimed or new ones, in outbox order.

        When a read fails, the entries it took may be this sender's without
        it knowing (the reply was lost with the connection): the next round
        takes them back (:meth:`ConversationStore.outbox_unacked`) instead of
        leaving them, and every later reply to their users, to a claim.
        """
        waiting, self._waiting = self._waiting, []
        cap = self.config.batch_size
        try:
            if self._reread:
                waiting = await self._take_back(waiting)
            if len(waiting) < cap:
                claimed = await self._claim(cap - len(waiting))
                if claimed:
                    # A claim round sends what it claimed (and what waited) first.
                    waiting = sorted([*waiting, *claimed], key=_outbox_order)
                    cap = min(cap, len(waiting))
            if len(waiting) >= cap:
                # At most one batch: the client would split a bigger one into
                # requests, and a lost answer to one would put them all in doubt.
                waiting, self._waiting = waiting[:cap], waiting[cap:]
                return waiting
            block = 0.0 if self._draining.is_set() or waiting else self.config.block
            bulk = None if self._draining.is_set() else self.bulk
            if bulk is not None:
                block = min(block, bulk.ready_in())
            items = await self._read(cap - len(waiting), block)
            if items and len(items) < cap - len(waiting) and self.config.linger > 0:
                await asyncio.sleep(self.config.linger)
                items += await self._read(cap - len(waiting) - len(items), 0)
        except BaseException:
            self._waiting = [*waiting, *self._waiting]
            self._reread = True
            raise
        room = cap - len(waiting) - len(items)
        if bulk is not None and room > 0:
            # The replies first: bulk sends only fill the room they leave.
            live = None if self._ownership is None else self._ownership.steady_live
            items += await bulk.take(room, self.consumer, live)
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
        """``waiting`` plus the entries pending for this sender that it does not hold.

        What a failed read took, or a failed step dropped. One that was attempted
        may be at the provider: it is settled like an entry taken over.
        """
        held = {item.id for item in waiting} | self._sent_unacked
        held |= {item.id for item, _ in self._in_doubt}
        room = self.config.batch_size - len(waiting)
        found = await self.store.outbox_unacked(self.consumer, room + len(held))
        again = [item for item in found if item.id not in held][:room]
        # All of them fitted, or another round takes the rest.
        self._reread = len(found) >= room + len(held)
        if again:
            log.warning("took back %d outbox entries a failed round had taken", len(again))
            # Some may have been posted (by this sender, or a departed one taken
            # over with the answer lost): settled like any entry taken over.
            again = await self._settle(again)
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
        return await self._settle(claimed)

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
        """Acknowledge, retrying: an entry left unacknowledged would be sent twice.

        While the store is unreachable (an outage) this retries until it comes
        back or the sender is stopped: only this sender knows the provider took
        these messages. Another storage error gives up after 8 tries.
        """
        failures = 0
        while True:
            try:
                await self.store.outbox_ack(ids, sent, answered=answered)
                return
            except StorageError as exc:
                failures += 1
                if failures >= 8 and not isinstance(exc, StorageUnavailable):
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

    async def _attempt(self, ids: list[str]) -> set[str]:
        """Of ``ids``, those this sender still holds, kept from claims while it posts them.

        Outbox entries are also marked attempted (see the module docstring);
        bulk items are kept by their source.
        """
        bulk = self.bulk
        theirs = [i for i in ids if bulk is not None and bulk.owns(i)]
        ours = [i for i in ids if bulk is None or not bulk.owns(i)]
        held = set(await self.store.outbox_attempt(self.consumer, ours)) if ours else set()
        if theirs and bulk is not None:
            held |= set(await bulk.touch(self.consumer, theirs))
        return held

    def _hold(self, items: Sequence[OutboxItem]) -> None:
        """Keep ``items`` for the next batches, in outbox order."""
        if items:
            self._waiting = sorted([*self._waiting, *items], key=_outbox_order)

    async def _settle(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Of entries that may have been posted before, those to send now (module docstring).

        Never attempted: now. Attempted: acknowledged if a receipt names it;
        otherwise set aside until ``resend_after`` has passed since the
        attempt, then sent if still without one. Without status callbacks
        there are no receipts: everything goes now.
        """
        if self.callback_url is None:
            return list(items)
        now = time.monotonic()
        items = [self._unless_unposted(item, now) for item in items]
        doubtful = [
            (item, now + self.resend_after - item.attempted_ago)
            for item in items
            if item.attempted_ago is not None
        ]
        if not doubtful:
            return list(items)
        self._in_doubt += doubtful
        return [item for item in items if not item.attempted] + await self._settle_in_doubt()

    def _unless_unposted(self, item: OutboxItem, now: float) -> OutboxItem:
        """``item``, or it as never attempted when its mark is from a post that never began."""
        since = self._unposted.pop(item.id, None)
        if since is None or item.attempted_ago is None or now - since >= self.claim_idle:
            return item
        return replace(item, attempted_ago=None)

    async def _settle_in_doubt(self) -> list[OutboxItem]:
        """Acknowledge the entries set aside that a receipt names; return those whose wait
        is over without one."""
        waiting, self._in_doubt = self._in_doubt, []
        try:
            rest = {item.id for item in await self._acknowledge_receipted(i for i, _ in waiting)}
        except BaseException:
            self._in_doubt = waiting
            raise
        now = time.monotonic()
        due = [item for item, until in waiting if item.id in rest and until <= now]
        self._in_doubt = [(i, until) for i, until in waiting if i.id in rest and until > now]
        if due:
            metrics.RESENT_UNCONFIRMED.inc(len(due))
            log.warning(
                "sending %d messages again that may have reached the provider: no status "
                "callback named them within %.0fs of the attempt",
                len(due),
                self.resend_after,
            )
        return due

    async def _acknowledge_receipted(self, items: Iterable[OutboxItem]) -> list[OutboxItem]:
        """Acknowledge the items a status callback named (the provider took them); the rest."""
        rest = list(items)
        found = await self.store.receipts(rest)
        settled = [(item, got) for item, got in zip(rest, found, strict=True) if got is not None]
        if not settled:
            return rest
        bulk = self.bulk
        if bulk is not None:
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
            ]
            done = [item for item, _ in settled]
            await self._acknowledge([item.id for item in done], records, done)
            metrics.RECEIPTED.inc(len(done))
            log.info(
                "%d messages the provider had taken already (status callbacks named them) are "
                "acknowledged, not sent again",
                len(done),
            )
        return [item for item, got in zip(rest, found, strict=True) if got is None]

    async def _send_until_answered(
        self, items: Sequence[OutboxItem]
    ) -> tuple[list[OutboxItem], list[SendResult]] | None:
        """The items the provider answered and its results.

        ``([], [])`` when it answered none: they were claimed by another sender,
        or set aside after a post without an answer. None when it is time to stop.
        """
        pending = list(items)
        failures = 0
        while True:
            # Only what this sender still holds, marked attempted and kept from
            # claims while the post lasts (see the module docstring).
            ids, marking = [i.id for i in pending], time.monotonic()
            try:
                held = await self._attempt(ids)
            except BaseException:
                # The marks may be written, but nothing was posted: taken back,
                # these go at once (_settle), not after resend_after with every
                # later reply to their users waiting behind them.
                self._unposted.update(dict.fromkeys(ids, marking))
                raise
            if self._unposted:  # nearly always empty: nothing to do per batch
                for posted in ids:
                    self._unposted.pop(posted, None)
            if len(held) < len(pending):
                log.info(
                    "%d outbox entries this sender held were claimed by another; not sent here",
                    len(pending) - len(held),
                )
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
                self._unanswered = 0
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
                metrics.RETRIED.labels("transport").inc(len(pending))
                if isinstance(exc, DevinoTransportError) and exc.unanswered:
                    # It may have reached the provider: set aside until a receipt
                    # settles it or resend_after passes (module docstring). The
                    # next post waits longer after each one left unanswered in a
                    # row, as a retry would: a hanging provider is not flooded.
                    self._unanswered += 1
                    delay = self._backoff(self._unanswered)
                    log.warning(
                        "provider did not answer a batch of %d (%s); the messages no status "
                        "callback names within %.0fs go again; next post in %.1fs",
                        len(pending),
                        exc,
                        self.resend_after,
                        delay,
                    )
                    ago = time.perf_counter() - started
                    self._hold(await self._settle([replace(i, attempted_ago=ago) for i in pending]))
                    return ([], []) if await self._pause(delay) else None
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
