"""The conversation store contract shared by the memory and Redis backends.

One inbound turn costs two calls: :meth:`ConversationStore.begin_turn`
(dedupe, take the user's lock, load the conversation) and
:meth:`ConversationStore.commit_turn` (save, mark the message done, append the
replies to the outbox, release the lock). The outbox and the sent-message log
live in the same store so that a committed reply is never lost.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from botkit._errors import BotkitError
from botkit._events import Timer
from botkit._outbound import OutboundMessage, SentRecord
from botkit._retry import RetryPolicy
from botkit._transcript import Handoff, TranscriptEntry, TranscriptPage

if TYPE_CHECKING:
    from botkit.storage.campaigns import CampaignStore

DAY = 86_400.0


class StorageError(BotkitError):
    """Base class of the conversation store's errors."""


class StorageUnavailable(StorageError):
    """The store cannot be reached, timed out or refuses writes.

    Nothing was half written. The webhook answers 503 so the provider retries.
    """


class UserBusy(StorageError):
    """Another turn of the same user held the lock past the acquire timeout.

    The webhook answers 503 so the provider retries the message later.
    """


class LockLost(StorageError):
    """The turn's lock expired and another turn took it; this turn's changes were not saved.

    Raise the lock TTL (``StoreConfig.lock_ttl``) if handlers legitimately run
    this long, or make them faster.
    """


class DuplicateMessage(StorageError):
    """The message (or status) was already handled, or is being handled right now.

    ``state`` is ``"done"`` or ``"in_progress"``.
    """

    def __init__(self, key: str, state: str) -> None:
        super().__init__(f"{key} is a duplicate ({state})")
        self.key = key
        self.state = state


RECONNECT_RETRY = RetryPolicy(attempts=None, base_delay=0.05, max_delay=2.0)
"""A store's default backoff when it reconnects."""


@dataclass(slots=True)
class StoreConfig:
    """Timings of a conversation store.

    ``conversation_ttl`` is the sliding lifetime of a user's record (default
    30 days; never less than the session window, so the window is never
    forgotten while open). ``lock_ttl`` bounds how long a crashed turn blocks
    its user; a running turn renews its lock. ``acquire_timeout`` is how long a
    second message of the same user waits for the first turn before it is
    refused as busy.

    Memory grows with users, not with messages: a user's handled messages
    are remembered for dedupe as their last ``seen_per_user`` keys (for
    ``done_ttl`` after the last one), and the records status callbacks need
    as their last ``sent_per_user`` sent messages (for ``sent_ttl`` after the
    last one). A provider retry of a message older than that runs again.

    ``reconnect`` is the backoff of the store's own reconnecting (the Redis
    store's wake-up listener); it never gives up.
    """

    lock_ttl: float = 30.0
    acquire_timeout: float = 10.0
    conversation_ttl: float = 30 * DAY
    done_ttl: float = 2 * DAY
    sent_ttl: float = 7 * DAY
    seen_per_user: int = 32
    sent_per_user: int = 32
    reconnect: RetryPolicy = RECONNECT_RETRY
    transcript_length: int = 500
    """Entries kept per user's transcript (the oldest go first); 0 keeps no transcript."""
    transcript_ttl: float = 30 * DAY
    """How long a transcript is kept after its last entry."""


@dataclass(slots=True)
class Conversation:
    """A user's conversation record, as loaded at the start of a turn.

    ``state`` is ``"<flow>:<state>"`` while the user is in a flow, else None.
    ``last_inbound`` (unix seconds) is the user's last message, which opens
    the 24-hour session window; ``last_active`` is the last handled message,
    for flow inactivity timeouts.
    """

    user: str
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    last_inbound: float | None = None
    last_active: float | None = None
    opted_out: bool = False
    not_on_whatsapp: bool = False
    timers: dict[str, Timer] = field(default_factory=dict)
    handoff: Handoff | None = None
    """Set while the conversation is handed off to a person (see ``ctx.handoff``)."""

    def next_due(self) -> float | None:
        """When the earliest pending timer is due (None: no timer)."""
        return min((t.due for t in self.timers.values()), default=None)

    def copy(self) -> Conversation:
        """A deep copy that a handler may change freely."""
        return Conversation(
            user=self.user,
            state=self.state,
            data=copy_json(self.data),
            version=self.version,
            last_inbound=self.last_inbound,
            last_active=self.last_active,
            opted_out=self.opted_out,
            not_on_whatsapp=self.not_on_whatsapp,
            timers=dict(self.timers),  # timers are immutable
            handoff=self.handoff,
        )


def copy_json(value: Any) -> Any:
    """A deep copy of ``value``: several times faster than ``copy.deepcopy`` on the
    JSON values (dicts, lists, strings, numbers) a conversation's data holds."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if type(value) is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if type(value) is list:
        return [copy_json(v) for v in value]
    return copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class TurnLease:
    """Proof that a turn holds its user's lock: what ``begin_turn`` returns.

    ``key`` is the dedupe key of the message or status the turn handles (None
    for turns that are not deliveries, such as proactive sends).
    """

    user: str
    key: str | None
    token: str
    conversation: Conversation


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An outbox entry read by a sender; acknowledge it by ``id`` once the provider answered."""

    id: str
    message: OutboundMessage
    deliveries: int = 1
    seq: int | None = None
    """The message's place in its user's send order (None: sent as it comes)."""
    attempted_ago: float | None = None
    """Seconds since a sender last started to post it (:meth:`ConversationStore.outbox_attempt`),
    when it was taken from the pending entries (claimed, taken over, taken back): it may be
    at the provider. None when no sender did; a fresh read is never attempted."""

    @property
    def attempted(self) -> bool:
        """A sender started to post it and did not acknowledge it: it may be at the provider."""
        return self.attempted_ago is not None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What status callbacks said of a message not yet acknowledged: the provider took it."""

    message_id: str
    statuses: frozenset[str]


@dataclass(frozen=True, slots=True)
class TimerClaim:
    """A user whose timer came due, claimed by :meth:`ConversationStore.timers_claim`.

    ``until`` is the end of the lease (what the claim wrote in the index).
    """

    user: str
    until: float


class ConversationStore(ABC):
    """Where conversations, the outbox and the sent-message log live."""

    config: StoreConfig

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (idempotent)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (idempotent)."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers (the readiness probe)."""

    # -- turns ---------------------------------------------------------------

    @abstractmethod
    async def begin_turn(
        self, user: str, key: str | None, *, inbound_at: float | None = None
    ) -> TurnLease:
        """Dedupe ``key``, take ``user``'s lock and load the conversation.

        ``inbound_at`` (unix seconds) is the time of the user's message; it
        moves ``last_inbound`` forward at once, because the platform's window
        opened whatever the handler does.

        Raises :class:`DuplicateMessage` when ``key`` is done or in progress,
        :class:`UserBusy` when the lock stays taken past the acquire timeout,
        :class:`StorageUnavailable` when the store cannot be reached.
        """

    @abstractmethod
    async def renew(self, lease: TurnLease) -> bool:
        """Extend the lease's lock; False when it was lost."""

    @abstractmethod
    async def commit_turn(
        self,
        lease: TurnLease,
        conversation: Conversation | None,
        outbox: Sequence[OutboundMessage] = (),
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        """Save ``conversation`` (None: keep the stored one), mark the key done,
        append ``outbox`` and ``transcript`` (to the user's transcript, unless
        ``config.transcript_length`` is 0) and release the lock, all at once.
        The user's place in the handoff list follows ``conversation.handoff``.

        Raises :class:`LockLost` (and writes nothing) when the lease's lock
        expired and was taken or dropped.
        """

    @abstractmethod
    async def abort_turn(self, lease: TurnLease) -> None:
        """Release the lock and forget the in-progress mark, so the message can run again."""

    @abstractmethod
    def waiting_turns(self, user: str) -> int:
        """How many turns of ``user`` in this process wait for the user's lock."""

    @abstractmethod
    async def load(self, user: str) -> Conversation:
        """Read a user's conversation without locking (an empty one when unknown)."""

    async def load_many(self, users: Sequence[str]) -> list[Conversation]:
        """:meth:`load` for several users at once (a store may do it in one round trip)."""
        return [await self.load(user) for user in users]

    def campaigns(self) -> CampaignStore:
        """This store's campaigns (see :mod:`botkit.storage.campaigns`)."""
        from botkit.storage.campaigns import CampaignsNeedRedis

        raise CampaignsNeedRedis(
            f"{type(self).__name__} keeps no campaigns; use the Redis store (BOTKIT_REDIS_URL)"
        )

    # -- outbox --------------------------------------------------------------

    @abstractmethod
    async def enqueue(self, messages: Sequence[OutboundMessage]) -> None:
        """Append messages to the outbox outside a turn (proactive sends).

        A message with ``not_before`` in the future waits until then. Each
        message joins its user's transcript in the same step.
        """

    # -- transcripts and handoffs ----------------------------------------------

    @abstractmethod
    async def transcript(
        self, user: str, *, before: str | None = None, limit: int = 50
    ) -> TranscriptPage:
        """Up to ``limit`` of the user's latest transcript entries (before the entry id
        ``before`` when given), oldest first."""

    @abstractmethod
    async def transcript_append(self, user: str, entries: Sequence[TranscriptEntry]) -> None:
        """Append entries to the user's transcript outside a turn (delivery statuses)."""

    @abstractmethod
    def transcripts_since(self, since: float) -> AsyncIterator[tuple[str, TranscriptEntry]]:
        """Every user's transcript entries from ``since`` (unix seconds) on, user by user
        (for reports such as ``botkit funnel``: it reads every transcript)."""

    @abstractmethod
    async def handoffs(self, limit: int = 100) -> tuple[list[tuple[str, Handoff]], int]:
        """The users handed off to a person with their handoffs, the longest waiting first
        (up to ``limit``), and how many there are in all."""

    @abstractmethod
    async def outbox_read(self, consumer: str, count: int, block: float) -> list[OutboxItem]:
        """Take up to ``count`` new entries for ``consumer``, waiting up to ``block`` seconds."""

    @abstractmethod
    async def outbox_unacked(self, consumer: str, count: int) -> list[OutboxItem]:
        """Up to ``count`` entries already read by ``consumer`` and not acknowledged.

        After a read whose answer was lost (the connection died with the reply
        on its way), the entries it took are this consumer's and nobody
        else's: this gives them back now rather than after a claim. Each with
        :attr:`OutboxItem.attempted_ago`, which may be less than the true time
        (0 when the store cannot tell): a receipt is then waited for longer.
        """

    @abstractmethod
    async def outbox_claim(self, consumer: str, min_idle: float, count: int) -> list[OutboxItem]:
        """Take over entries another consumer read but did not acknowledge for ``min_idle`` s.

        Each with :attr:`OutboxItem.attempted_ago`.
        """

    @abstractmethod
    async def outbox_ack(
        self,
        ids: Sequence[str],
        sent: Sequence[SentRecord] = (),
        *,
        answered: Sequence[OutboxItem] = (),
    ) -> None:
        """Acknowledge entries, record the accepted messages, and move their users' send order.

        ``answered`` are the items the provider answered (accepted or
        rejected): the next message to each of their users may go now.
        """

    async def outbox_ready(self, items: Sequence[OutboxItem]) -> list[bool]:
        """For each item: may it be sent now, or is an earlier one to its user still unanswered?

        A store whose outbox has one reader (the memory store) keeps each
        user's order by itself: everything is ready.
        """
        return [True] * len(items)

    @abstractmethod
    async def outbox_attempt(self, consumer: str, ids: Sequence[str]) -> list[str]:
        """Just before ``consumer`` posts entries to the provider: those it still holds.

        Each of them has its idle time restarted, so nobody claims it while the
        send lasts, and is marked with the time of the attempt until
        acknowledged, so whoever takes it over later knows it may be at the
        provider, and since when (:attr:`OutboxItem.attempted_ago`). An entry
        another consumer claimed meanwhile is theirs: it is left alone and not
        returned, and the caller must not send it.
        """

    @abstractmethod
    async def outbox_release_due(self, now: float) -> int:
        """Move delayed messages whose time has come into the outbox; return how many."""

    @abstractmethod
    async def outbox_size(self) -> int:
        """Entries waiting or in flight (for metrics and health)."""

    # -- timers --------------------------------------------------------------

    @abstractmethod
    async def timers_claim(
        self, now: float, lease: float, count: int, *, shards: Sequence[int] | None = None
    ) -> list[TimerClaim]:
        """Claim up to ``count`` users with a timer due by ``now``, for ``lease`` seconds.

        A claimed user is not given to another claim until the lease ends:
        the claimer runs their due timers as turns, whose commits move the
        user's place in the index to their next timer (or out of it). A
        claimer that dies leaves the user to be claimed again after the lease.
        ``shards``: only users of these shards (a sharded store's, see
        :class:`ShardedOutbox`; None: all); a store without shards ignores it.
        """

    @abstractmethod
    async def timers_reschedule(self, claim: TimerClaim, due: float | None) -> None:
        """After a claim that found nothing due: put the user back at ``due`` (None: drop them).

        Does nothing when a commit moved the user since the claim.
        """

    @abstractmethod
    async def timers_pending(self) -> int:
        """Users with a pending timer (for metrics)."""

    # -- sent-message log ----------------------------------------------------

    @abstractmethod
    async def get_sent(self, message_id: str, *, user: str) -> SentRecord | None:
        """The record of a message sent to ``user``, by the provider's ``messageId``.

        The user comes from the status callback's signed ``callbackData``;
        records are kept per user (the last ``StoreConfig.sent_per_user``).
        """

    @abstractmethod
    async def update_sent(self, record: SentRecord) -> None:
        """Replace a sent-message record (its status moved)."""

    # -- shared secrets ------------------------------------------------------

    @abstractmethod
    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret called ``name`` that every process on this store uses.

        The first caller's ``candidate`` is kept, atomically and without
        expiry; every later caller (another worker, another instance, a
        restart) gets that same value back. A store private to one process
        keeps it for that process's lifetime.
        """

    # -- receipts --------------------------------------------------------------

    @abstractmethod
    async def record_receipt(self, user: str, ref: str, message_id: str, status: str) -> None:
        """Remember that the provider took the message ``ref``: a status callback named it.

        Kept for ``done_ttl``: the first ``message_id`` given, and every status seen.
        """

    @abstractmethod
    async def receipts(self, items: Sequence[OutboxItem]) -> list[Receipt | None]:
        """For each item: the receipt of its reference, or None.

        A sender asks before it sends an entry again that may have reached
        the provider already (claimed from a dead sender, or unanswered).
        """


@runtime_checkable
class SharedNotices(Protocol):
    """A store every worker shares, that carries agent notices between them (the Redis store).

    A worker appends the notices of its turns; each worker reads everyone's,
    for the agents' live pages it serves. The agent webhook posts them from
    the same stream through a consumer group: each notice is acknowledged
    once posted, and one a dead worker held is taken by another.
    """

    async def notices_append(self, payloads: Sequence[str], *, group: str = "") -> int:
        """Append notices (JSON); the last thousand or so are kept, and those ``group``
        has not acknowledged up to a hard cap. Returns how many un-acknowledged
        notices that cap dropped."""
        ...

    async def notices_read(self, after: str, block: float) -> tuple[str, list[str]]:
        """The notices after the position ``after``, waiting up to ``block`` s for one;
        returns the new position and the notices. ``"$"`` returns the position of now."""
        ...

    async def notices_group(self, group: str) -> None:
        """Create the consumer group ``group``, reading from now on (kept if it exists)."""
        ...

    async def notices_take(
        self, group: str, consumer: str, *, idle: float, block: float, count: int = 50
    ) -> list[tuple[str, str]]:
        """``(entry id, payload)`` pairs for ``consumer``: entries idle ``idle`` s on any
        consumer first, else new ones (waiting up to ``block`` s)."""
        ...

    async def notices_prune(self, group: str, idle: float) -> int:
        """Forget the consumers idle ``idle`` s that hold nothing; returns how many."""
        ...

    async def notices_hold(self, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Restart the idle time of entries ``consumer`` is still handling."""
        ...

    async def notices_ack(self, group: str, ids: Sequence[str]) -> None:
        """Acknowledge entries: they are not taken again."""
        ...


@runtime_checkable
class ShardedOutbox(Protocol):
    """An outbox split into shards that several senders share out (the Redis store).

    Senders announce themselves with :meth:`senders_heartbeat` and read the
    shards they own (see ``botkit.delivery``'s shard ownership).
    """

    def outbox_shards(self) -> Sequence[int]:
        """The shards' numbers."""
        ...

    async def senders_heartbeat(self, consumer: str, ttl: float) -> list[str]:
        """Announce ``consumer`` as a live sender for ``ttl`` s; return every live sender."""
        ...

    async def senders_leave(self, consumer: str) -> None:
        """Take ``consumer`` out of the live senders at once."""
        ...

    async def outbox_read(
        self,
        consumer: str,
        count: int,
        block: float,
        *,
        shards: Sequence[int] | None = None,
    ) -> list[OutboxItem]:
        """Like :meth:`ConversationStore.outbox_read`, new entries from ``shards`` only when given.

        Entries an earlier read of ``consumer`` took beyond its count come
        first, from whatever shard: they are the consumer's already.
        """
        ...

    async def outbox_take_over(
        self,
        consumer: str,
        live: Collection[str],
        count: int,
        *,
        shards: Sequence[int],
        min_idle: float,
    ) -> list[OutboxItem]:
        """Take up to ``count`` entries of ``shards`` that senders not in ``live`` read and
        did not acknowledge, idle for ``min_idle`` s at least, now (not after a claim)."""
        ...

    async def outbox_prune(self, idle: float, *, shards: Sequence[int]) -> int:
        """Forget the consumers of ``shards`` that hold no entry and were idle ``idle`` s
        (senders gone): returns how many."""
        ...
