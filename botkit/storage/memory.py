"""The in-process conversation store: development, tests and single-process bots.

It keeps the same contract as the Redis store, including per-user
serialisation: a second turn of the same user queues (first come, first
served) until the first commits, aborts or lets its lock expire. The lock
entry of a user exists only while a turn holds or awaits it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from botkit._clock import Clock, ManualClock, SystemClock
from botkit._outbound import OutboundMessage, SentRecord, new_ref
from botkit._transcript import Handoff, TranscriptEntry, TranscriptPage, outgoing_entry
from botkit.storage.base import (
    Conversation,
    ConversationStore,
    DuplicateMessage,
    LockLost,
    OutboxItem,
    Receipt,
    StoreConfig,
    TimerClaim,
    TurnLease,
    UserBusy,
)
from botkit.storage.campaigns import MemoryCampaigns

_IN_PROGRESS = "in_progress"
_DONE = "done"


@dataclass(slots=True)
class _Waiter:
    token: str
    # True: the lock is this waiter's; False: the clock moved, look again.
    granted: asyncio.Future[bool]


@dataclass(slots=True)
class _UserLock:
    token: str
    expires_at: float  # on the store's clock
    waiters: deque[_Waiter] = field(default_factory=deque)


@dataclass(slots=True)
class _Pending:
    message: OutboundMessage
    consumer: str
    read_at: float  # time.monotonic()
    deliveries: int
    attempted_at: float | None = None  # time.monotonic()

    def ago(self, now: float) -> float | None:
        """Seconds since a send of it was attempted (None: never)."""
        return None if self.attempted_at is None else now - self.attempted_at


@dataclass(slots=True)
class _Transcript:
    entries: deque[TranscriptEntry]
    expires_at: float


@dataclass(slots=True)
class _Record:
    conversation: Conversation
    expires_at: float


class MemoryStore(ConversationStore):
    """Conversations, locks, dedupe marks, outbox and sent log in this process's memory.

    ``clock`` decides when conversations, dedupe marks and locks expire and
    how long a busy user's next turn waits (``acquire_timeout``): with a
    :class:`~botkit.ManualClock` (the test kit's), a lock held past its
    ``lock_ttl`` is taken over as soon as the clock is advanced past it,
    without waiting in real time. Outbox idle times (``outbox_claim``) follow
    real time: they tell whether a process is alive.
    """

    def __init__(self, config: StoreConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or StoreConfig()
        self._clock = clock or SystemClock()
        self._unwatch_clock: Callable[[], None] | None = None
        self._watch_clock()
        self._records: dict[str, _Record] = {}
        self._locks: dict[str, _UserLock] = {}
        self._marks: dict[str, tuple[str, float]] = {}
        self._marks_swept_at = 0
        self._sent: dict[str, tuple[SentRecord, float]] = {}
        self._secrets: dict[str, str] = {}
        self._receipts: dict[str, tuple[str, set[str], float]] = {}
        self._ids = itertools.count(1)
        self._unread: deque[tuple[str, OutboundMessage]] = deque()
        self._pending: dict[str, _Pending] = {}
        self._delayed: list[tuple[float, int, OutboundMessage]] = []
        self._arrived = asyncio.Event()
        # Users with a pending timer: when the earliest is due (or their claim
        # ends), and a heap over it whose stale entries are skipped.
        self._timer_index: dict[str, float] = {}
        self._timer_heap: list[tuple[float, str]] = []
        self._transcripts: dict[str, _Transcript] = {}
        self._entry_ids = itertools.count(1)
        self._handoffs: dict[str, float] = {}
        self._campaigns: MemoryCampaigns | None = None

    def campaigns(self) -> MemoryCampaigns:
        """This process's campaigns (``botkit dev``, tests): kept as long as the store."""
        if self._campaigns is None:
            self._campaigns = MemoryCampaigns()
        return self._campaigns

    async def ping(self) -> bool:
        """Always True: memory is always there."""
        return True

    async def open(self) -> None:
        """Follow a manual clock's advances again after :meth:`close`."""
        self._watch_clock()

    def _watch_clock(self) -> None:
        if self._unwatch_clock is None and isinstance(self._clock, ManualClock):
            self._unwatch_clock = self._clock.on_advance(self._clock_moved)

    async def close(self) -> None:
        """Stop following the manual clock (the store keeps its data until dropped)."""
        if self._unwatch_clock is not None:
            self._unwatch_clock()
            self._unwatch_clock = None

    # -- turns ---------------------------------------------------------------

    async def begin_turn(
        self, user: str, key: str | None, *, inbound_at: float | None = None
    ) -> TurnLease:
        """Dedupe, lock and load; see :meth:`ConversationStore.begin_turn`."""
        if key is not None:
            self._check_mark(key)
        token = new_ref()
        await self._acquire(user, token)
        if key is not None:
            try:
                self._check_mark(key)
            except DuplicateMessage:
                self._release(user, token)
                raise
            self._marks[key] = (_IN_PROGRESS, self._clock.now() + self.config.lock_ttl)
        conversation = self._conversation(user)
        if inbound_at is not None and (
            conversation.last_inbound is None or inbound_at > conversation.last_inbound
        ):
            conversation.last_inbound = inbound_at
            self._save(conversation)
        return TurnLease(user=user, key=key, token=token, conversation=conversation.copy())

    async def renew(self, lease: TurnLease) -> bool:
        """Push the lock's expiry back by ``lock_ttl``."""
        lock = self._locks.get(lease.user)
        if lock is None or lock.token != lease.token or lock.expires_at <= self._clock.now():
            return False
        lock.expires_at = self._clock.now() + self.config.lock_ttl
        if lease.key is not None and lease.key in self._marks:
            self._marks[lease.key] = (_IN_PROGRESS, self._clock.now() + self.config.lock_ttl)
        return True

    async def commit_turn(
        self,
        lease: TurnLease,
        conversation: Conversation | None,
        outbox: Sequence[OutboundMessage] = (),
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        """Save, mark done, queue replies and unlock; see :meth:`ConversationStore.commit_turn`."""
        lock = self._locks.get(lease.user)
        if lock is None or lock.token != lease.token or lock.expires_at <= self._clock.now():
            raise LockLost(
                f"the lock of user ...{lease.user[-4:]} expired before the turn committed; "
                "nothing was saved. Raise StoreConfig.lock_ttl or make the handler faster"
            )
        if conversation is not None:
            stored = self._conversation(lease.user)
            saved = conversation.copy()
            saved.version = stored.version + 1
            # The window only moves forward, even if a newer message arrived meanwhile.
            saved.last_inbound = _latest(stored.last_inbound, conversation.last_inbound)
            self._save(saved)
            self._index_timers(saved.user, saved.next_due())
            if saved.handoff is None:
                self._handoffs.pop(saved.user, None)
            else:
                self._handoffs[saved.user] = saved.handoff.since
        if lease.key is not None:
            self._marks[lease.key] = (_DONE, self._clock.now() + self.config.done_ttl)
        self._append(outbox)
        self._record(lease.user, transcript)
        self._release(lease.user, lease.token)

    async def abort_turn(self, lease: TurnLease) -> None:
        """Unlock and forget the in-progress mark."""
        lock = self._locks.get(lease.user)
        if lock is None or lock.token != lease.token:
            return
        if lease.key is not None and self._marks.get(lease.key, ("", 0.0))[0] == _IN_PROGRESS:
            del self._marks[lease.key]
        self._release(lease.user, lease.token)

    def waiting_turns(self, user: str) -> int:
        """How many turns of ``user`` wait for the user's lock."""
        lock = self._locks.get(user)
        return 0 if lock is None else sum(1 for w in lock.waiters if not w.granted.done())

    async def load(self, user: str) -> Conversation:
        """A copy of the user's conversation."""
        return self._conversation(user).copy()

    # -- outbox --------------------------------------------------------------

    async def enqueue(self, messages: Sequence[OutboundMessage]) -> None:
        """Append to the outbox (delayed ones wait for their time) and the transcripts."""
        self._append(messages)
        now = self._clock.now()
        for message in messages:
            self._record(message.user, [outgoing_entry(message, now)])

    # -- transcripts and handoffs ----------------------------------------------

    async def transcript(
        self, user: str, *, before: str | None = None, limit: int = 50
    ) -> TranscriptPage:
        """The user's latest entries before ``before``, oldest first."""
        cut = None
        if before is not None:
            if not before.isdigit():
                raise ValueError(f"before={before!r} is not an entry id of this store")
            cut = int(before)
        found = self._transcripts.get(user)
        if found is None or found.expires_at <= self._clock.now():
            return TranscriptPage((), None)
        entries = list(found.entries)
        if cut is not None:
            entries = [e for e in entries if int(e.id) < cut]
        page = entries[-limit:] if limit > 0 else []
        older = bool(page) and len(entries) > len(page)
        return TranscriptPage(tuple(page), page[0].id if older else None)

    async def transcripts_since(self, since: float) -> AsyncIterator[tuple[str, TranscriptEntry]]:
        """Every kept transcript's entries at or after ``since``."""
        now = self._clock.now()
        for user, found in list(self._transcripts.items()):
            if found.expires_at > now:
                for entry in list(found.entries):
                    if entry.at >= since:
                        yield user, entry

    async def transcript_append(self, user: str, entries: Sequence[TranscriptEntry]) -> None:
        """Append to the user's transcript."""
        self._record(user, entries)

    async def handoffs(self, limit: int = 100) -> tuple[list[tuple[str, Handoff]], int]:
        """Handed-off users and their handoffs, the longest waiting first."""
        for user in [u for u in self._handoffs if self._conversation(u).handoff is None]:
            del self._handoffs[user]  # expired with its conversation
        ordered = sorted(self._handoffs.items(), key=lambda item: (item[1], item[0]))
        found = [(u, self._conversation(u).handoff) for u, _ in ordered[:limit]]
        return [(u, h) for u, h in found if h is not None], len(ordered)

    def _record(self, user: str, entries: Sequence[TranscriptEntry]) -> None:
        length = self.config.transcript_length
        if not entries or length <= 0:
            return
        now = self._clock.now()
        found = self._transcripts.get(user)
        if found is None or found.expires_at <= now:
            found = self._transcripts[user] = _Transcript(deque(maxlen=length), 0.0)
        for entry in entries:
            found.entries.append(dataclasses.replace(entry, id=str(next(self._entry_ids))))
        found.expires_at = now + self.config.transcript_ttl

    async def outbox_read(self, consumer: str, count: int, block: float) -> list[OutboxItem]:
        """Take new entries, waiting up to ``block`` seconds for the first."""
        if not self._unread and block > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), block)
            except TimeoutError:
                return []
        items: list[OutboxItem] = []
        now = time.monotonic()
        while self._unread and len(items) < count:
            entry_id, message = self._unread.popleft()
            self._pending[entry_id] = _Pending(message, consumer, now, 1)
            items.append(OutboxItem(entry_id, message, 1))
        return items

    async def outbox_attempt(self, consumer: str, ids: Sequence[str]) -> list[str]:
        """Of ``ids``, those ``consumer`` still holds, marked attempted, idle from now."""
        held = []
        for entry_id in ids:
            pending = self._pending.get(entry_id)
            if pending is not None and pending.consumer == consumer:
                pending.read_at = pending.attempted_at = time.monotonic()
                held.append(entry_id)
        return held

    async def outbox_unacked(self, consumer: str, count: int) -> list[OutboxItem]:
        """Entries ``consumer`` read and did not acknowledge, oldest first."""
        now = time.monotonic()
        return [
            OutboxItem(
                entry_id, pending.message, pending.deliveries, attempted_ago=pending.ago(now)
            )
            for entry_id, pending in self._pending.items()
            if pending.consumer == consumer
        ][:count]

    async def outbox_claim(self, consumer: str, min_idle: float, count: int) -> list[OutboxItem]:
        """Take over other consumers' entries left unacknowledged for ``min_idle`` seconds."""
        now = time.monotonic()
        items: list[OutboxItem] = []
        for entry_id, pending in self._pending.items():
            if len(items) >= count:
                break
            if pending.consumer != consumer and now - pending.read_at >= min_idle:
                pending.consumer = consumer
                pending.read_at = now
                pending.deliveries += 1
                items.append(
                    OutboxItem(
                        entry_id,
                        pending.message,
                        pending.deliveries,
                        attempted_ago=pending.ago(now),
                    )
                )
        return items

    async def outbox_ack(
        self,
        ids: Sequence[str],
        sent: Sequence[SentRecord] = (),
        *,
        answered: Sequence[OutboxItem] = (),
    ) -> None:
        """Drop acknowledged entries and record the accepted messages (one reader: in order)."""
        for entry_id in ids:
            self._pending.pop(entry_id, None)
        expires = self._clock.now() + self.config.sent_ttl
        for record in sent:
            self._sent[record.message_id] = (record, expires)

    async def outbox_release_due(self, now: float) -> int:
        """Move delayed messages due by ``now`` into the outbox."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now:
            _, _, message = heapq.heappop(self._delayed)
            self._unread.append((str(next(self._ids)), message))
            moved += 1
        if moved:
            self._arrived.set()
        return moved

    async def outbox_size(self) -> int:
        """Unread, in-flight and delayed entries."""
        return len(self._unread) + len(self._pending) + len(self._delayed)

    # -- receipts --------------------------------------------------------------

    async def record_receipt(self, user: str, ref: str, message_id: str, status: str) -> None:
        """Keep the first ``message_id`` seen for ``ref``, and every status."""
        now = self._clock.now()
        found = self._receipts.get(ref)
        if found is None or found[2] <= now:
            found = (message_id, set(), now + self.config.done_ttl)
            self._receipts[ref] = found
        found[1].add(status)

    async def receipts(self, items: Sequence[OutboxItem]) -> list[Receipt | None]:
        """The receipts of the items' references."""
        now = self._clock.now()
        found = [self._receipts.get(item.message.ref) for item in items]
        return [None if f is None or f[2] <= now else Receipt(f[0], frozenset(f[1])) for f in found]

    # -- timers --------------------------------------------------------------

    async def timers_claim(
        self, now: float, lease: float, count: int, *, shards: Sequence[int] | None = None
    ) -> list[TimerClaim]:
        """Users whose earliest timer is due by ``now``, each claimed until ``now + lease``
        (one process, no shards: ``shards`` is ignored)."""
        claims: list[TimerClaim] = []
        heap = self._timer_heap
        while heap and heap[0][0] <= now and len(claims) < count:
            due, user = heapq.heappop(heap)
            if self._timer_index.get(user) != due:
                continue  # moved since: a newer entry stands for it
            claims.append(TimerClaim(user, now + lease))
        for claim in claims:
            self._index_timers(claim.user, claim.until)
        return claims

    async def timers_reschedule(self, claim: TimerClaim, due: float | None) -> None:
        """Put the claimed user back at ``due`` unless a commit moved them since."""
        if self._timer_index.get(claim.user) == claim.until:
            self._index_timers(claim.user, due)

    async def timers_pending(self) -> int:
        """Users with a pending timer."""
        return len(self._timer_index)

    def _index_timers(self, user: str, due: float | None) -> None:
        if due is None:
            self._timer_index.pop(user, None)
            return
        if self._timer_index.get(user) != due:
            self._timer_index[user] = due
            heapq.heappush(self._timer_heap, (due, user))
            if len(self._timer_heap) > 2 * len(self._timer_index) + 1000:
                # Stale entries pile up when users re-arm often: rebuild from the index.
                self._timer_heap = [(d, u) for u, d in self._timer_index.items()]
                heapq.heapify(self._timer_heap)

    # -- shared secrets ------------------------------------------------------

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret ``name`` of this process (the first ``candidate``)."""
        return self._secrets.setdefault(name, candidate)

    # -- sent-message log ----------------------------------------------------

    async def get_sent(self, message_id: str, *, user: str) -> SentRecord | None:
        """The record by provider ``messageId``, unless expired (or another user's)."""
        found = self._sent.get(message_id)
        if found is None or found[0].user != user:
            return None
        record, expires = found
        if expires <= self._clock.now():
            del self._sent[message_id]
            return None
        return record

    async def update_sent(self, record: SentRecord) -> None:
        """Replace the record, keeping its expiry."""
        found = self._sent.get(record.message_id)
        expires = found[1] if found else self._clock.now() + self.config.sent_ttl
        self._sent[record.message_id] = (record, expires)

    # -- internals -----------------------------------------------------------

    def _check_mark(self, key: str) -> None:
        mark = self._marks.get(key)
        if mark is None:
            return
        state, expires = mark
        if expires <= self._clock.now():
            del self._marks[key]
            return
        raise DuplicateMessage(key, state)

    def _sweep_marks(self) -> None:
        now = self._clock.now()
        for key in [k for k, (_, expires) in self._marks.items() if expires <= now]:
            del self._marks[key]
        for mid in [m for m, (_, expires) in self._sent.items() if expires <= now]:
            del self._sent[mid]
        for ref in [r for r, (_, _, expires) in self._receipts.items() if expires <= now]:
            del self._receipts[ref]
        for user in [u for u, r in self._records.items() if r.expires_at <= now]:
            del self._records[user]
        for user in [u for u, t in self._transcripts.items() if t.expires_at <= now]:
            del self._transcripts[user]

    def _conversation(self, user: str) -> Conversation:
        record = self._records.get(user)
        if record is None or record.expires_at <= self._clock.now():
            return Conversation(user=user)
        return record.conversation

    def _save(self, conversation: Conversation) -> None:
        ttl = self.config.conversation_ttl
        last_due = max((t.due for t in conversation.timers.values()), default=None)
        if last_due is not None:  # kept until its last timer fired, and as long after
            ttl = max(ttl, last_due - self._clock.now() + ttl)
        self._records[conversation.user] = _Record(conversation, self._clock.now() + ttl)
        # Expired marks, records and sent entries go in bulk, not one timer each.
        writes = len(self._marks) + len(self._records)
        if writes - self._marks_swept_at > 10_000:
            self._sweep_marks()
            self._marks_swept_at = len(self._marks) + len(self._records)

    def _append(self, messages: Sequence[OutboundMessage]) -> None:
        now = self._clock.now()
        for message in messages:
            if message.not_before > now:
                heapq.heappush(self._delayed, (message.not_before, next(self._ids), message))
            else:
                self._unread.append((str(next(self._ids)), message))
        if self._unread:
            self._arrived.set()

    async def _acquire(self, user: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._clock.now() + self.config.acquire_timeout
        while True:
            now = self._clock.now()
            lock = self._locks.get(user)
            if lock is None:
                self._locks[user] = _UserLock(token, now + self.config.lock_ttl)
                return
            if lock.expires_at <= now:
                # The holder died or hung past its lease: take the lock over.
                lock.token = token
                lock.expires_at = now + self.config.lock_ttl
                return
            if now >= deadline:
                raise UserBusy(
                    f"user ...{user[-4:]} has a turn running for longer than "
                    f"{self.config.acquire_timeout:g}s; try again later"
                )
            waiter = _Waiter(token, loop.create_future())
            lock.waiters.append(waiter)
            try:
                # Seconds of the clock, waited in real time; a manual clock's
                # advance wakes the waiter early (False) to look again.
                if await asyncio.wait_for(
                    asyncio.shield(waiter.granted), min(deadline, lock.expires_at) - now
                ):
                    return
            except TimeoutError:
                if waiter.granted.done() and waiter.granted.result():
                    return
                if waiter in lock.waiters:
                    lock.waiters.remove(waiter)
            except BaseException:
                if waiter.granted.done() and waiter.granted.result():
                    self._release(user, token)
                elif waiter in lock.waiters:
                    lock.waiters.remove(waiter)
                raise

    def _release(self, user: str, token: str) -> None:
        lock = self._locks.get(user)
        if lock is None or lock.token != token:
            return
        while lock.waiters:
            waiter = lock.waiters.popleft()
            if waiter.granted.done():
                continue
            lock.token = waiter.token
            lock.expires_at = self._clock.now() + self.config.lock_ttl
            waiter.granted.set_result(True)
            return
        del self._locks[user]

    def _clock_moved(self) -> None:
        """Wake every waiter to look at the locks again: some may have expired."""
        for lock in self._locks.values():
            while lock.waiters:
                waiter = lock.waiters.popleft()
                if not waiter.granted.done():
                    waiter.granted.set_result(False)

    @property
    def locks_held(self) -> int:
        """How many users have a lock entry right now (0 when idle)."""
        return len(self._locks)


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
