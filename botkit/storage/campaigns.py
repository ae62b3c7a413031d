"""Campaigns in the store: one template to an audience, paced, resumable, with live totals.

What a campaign *is* lives here, beside the stores that keep it: its
definition (:class:`Campaign`), its live totals (:class:`CampaignTotals`),
one recipient's row of the report (:class:`RecipientRow`) and the contract
both backends keep (:class:`CampaignStore`). The Redis backend
(:mod:`botkit.storage.redis.campaigns`) is the production one; the memory
backend below serves ``botkit dev`` and tests, in one process.

Each recipient is taken by one sender (a consumer group in Redis), sent,
then *settled* in one atomic step that records the result and moves the
totals. A sender that dies leaves its recipients unsettled: another takes
them over and, before sending, looks for a receipt of the message (a status
callback that named it); the message reference is derived from the campaign
and the phone (:func:`campaign_ref`), so that receipt is found whoever sent
it. Status callbacks move each recipient's status forward
(:meth:`CampaignStore.record_status`).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from botkit._errors import BotkitError

RECOVER_SECONDS = 120.0
"""After a 2301 halves a campaign's rate, the full rate comes back over this long, linearly."""

THROTTLE_EVERY = 2.0
"""Two 2301s closer than this halve the rate once (a burst of them is one signal)."""

MAX_TEXT = 1000
"""The longest in-window text a campaign may carry (one WhatsApp message)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CampaignError(BotkitError):
    """Base class of the campaign errors: the message says what to do."""


class CampaignExists(CampaignError, ValueError):
    """A campaign with this name exists already; pick another name."""


class CampaignNotFound(CampaignError, LookupError):
    """No campaign has this name."""


class CampaignStateError(CampaignError, ValueError):
    """The campaign cannot do that in its current state (resume a cancelled one, say)."""


class CampaignsNeedRedis(CampaignError):
    """Campaigns created from the command line need the service's Redis (``BOTKIT_REDIS_URL``)."""


class CampaignState(StrEnum):
    """Where a campaign is in its life."""

    IMPORTING = "importing"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"

    @property
    def finished(self) -> bool:
        """Nothing more will be sent (statuses of what was sent still come in)."""
        return self in (CampaignState.CANCELLED, CampaignState.DONE)


class SkipReason(StrEnum):
    """Why a recipient of the audience got nothing."""

    INVALID = "invalid"
    DUPLICATE = "duplicate"
    OPTED_OUT = "opted_out"
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    CANCELLED = "cancelled"


def new_campaign_id() -> str:
    """A fresh campaign id: 10 hex digits."""
    return secrets.token_hex(5)


def check_name(name: str) -> str:
    """``name`` when it can name a campaign, else :class:`ValueError` saying what can."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"campaign name {name!r}: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign: ``template`` (with ``language``) to every recipient of its audience.

    ``rate`` is messages per second for the whole campaign, shared by every
    worker (0: as fast as the provider takes them). ``start_at`` (unix
    seconds) holds it until then. ``text_in_window`` is sent instead of the
    template to recipients whose 24-hour window is open (the template stays
    its fallback). ``buckets`` is how the recipients' results are spread in
    the store (fixed at creation, from the audience's size).
    """

    name: str
    id: str
    template: str
    language: str | None = None
    rate: float = 20.0
    start_at: float | None = None
    text_in_window: str | None = None
    params: tuple[str, ...] = ()
    created_at: float = 0.0
    buckets: int = 1
    state: CampaignState = CampaignState.IMPORTING

    def bucket(self, phone: str) -> int:
        """The results bucket of ``phone``."""
        return zlib.crc32(phone.encode()) % self.buckets

    def to_fields(self) -> dict[str, str]:
        """The definition as flat strings (what the Redis backend keeps)."""
        return {
            "name": self.name,
            "id": self.id,
            "template": self.template,
            "language": self.language or "",
            "rate": repr(float(self.rate)),
            "start_at": "" if self.start_at is None else repr(self.start_at),
            "text": self.text_in_window or "",
            "params": "\x1f".join(self.params),
            "created_at": repr(self.created_at),
            "buckets": str(self.buckets),
            "state": self.state.value,
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Campaign:
        """Rebuild from :meth:`to_fields`'s form."""
        return cls(
            name=fields["name"],
            id=fields["id"],
            template=fields["template"],
            language=fields.get("language") or None,
            rate=float(fields.get("rate") or 0),
            start_at=float(fields["start_at"]) if fields.get("start_at") else None,
            text_in_window=fields.get("text") or None,
            params=tuple(p for p in (fields.get("params") or "").split("\x1f") if p),
            created_at=float(fields.get("created_at") or 0),
            buckets=int(fields.get("buckets") or 1),
            state=CampaignState(fields.get("state") or CampaignState.IMPORTING.value),
        )


@dataclass(slots=True)
class CampaignTotals:
    """A campaign's live numbers.

    ``audience`` is the distinct valid recipients; ``queued`` those not yet
    sent or skipped; ``sent`` those the provider accepted; ``delivered`` and
    ``read`` those whose message reached that far (read ones count as
    delivered too); ``failed`` by error code (``"2305"``, or ``"rejected"``
    for messages the provider refused); ``skipped`` by :class:`SkipReason`.
    ``rate`` is the rate in force now (lower than the campaign's for a while
    after a 2301).
    """

    campaign: Campaign
    audience: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    rate: float = 0.0
    finished_at: float | None = None

    @property
    def state(self) -> CampaignState:
        """The campaign's state."""
        return self.campaign.state

    @property
    def processed(self) -> int:
        """Recipients of the audience that were sent, failed by rejection or skipped."""
        return self.audience - self.queued

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the API's and the dev page's)."""
        c = self.campaign
        return {
            "name": c.name,
            "state": c.state.value,
            "template": {"id": c.template, "language": c.language},
            "rate": c.rate,
            "current_rate": round(self.rate, 3),
            "start_at": c.start_at,
            "text_in_window": c.text_in_window,
            "created_at": c.created_at,
            "finished_at": self.finished_at,
            "audience": self.audience,
            "queued": self.queued,
            "sent": self.sent,
            "delivered": self.delivered,
            "read": self.read,
            "failed": dict(sorted(self.failed.items())),
            "skipped": dict(sorted(self.skipped.items())),
        }


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient taken from a campaign's audience by a sender.

    ``entry`` names it in the audience (for settling); ``deliveries`` is how
    many senders took it (more than one: the first may have sent it).
    """

    entry: str
    phone: str
    params: tuple[str, ...]
    deliveries: int = 1


class RecipientOutcome(StrEnum):
    """What became of one recipient, as settled."""

    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Settlement:
    """A recipient's result, for :meth:`CampaignStore.settle`.

    ``reason`` is the skip reason, or the failure (``"rejected"`` with the
    provider's reason key); ``status`` what is known of a sent message
    (``"accepted"``, or the furthest status its receipt named).
    """

    entry: str
    phone: str
    outcome: RecipientOutcome
    reason: str = ""
    message_id: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """One line of a campaign's report: what became of one recipient."""

    phone: str
    result: str
    message_id: str = ""
    status: str = ""
    error: str = ""


# -- statuses: forward only ----------------------------------------------------

_RANK = {"accepted": 0, "enqueued": 0, "sent": 1, "delivered": 2, "read": 3, "visited": 3}
_FAILURES = frozenset({"failed", "undelivered", "cancelled", "expired", "vp_expired", "rejected"})
RETRIED_CODE = "2301"
"""A failure with this code is not final: the message is retried (and the campaign slows)."""


def status_flags(status: str, code: str) -> tuple[bool, bool, str | None]:
    """(delivered, read, failed code) that a recipient at ``status`` counts towards."""
    rank = _RANK.get(status, -1)
    if status in _FAILURES:
        return False, False, code or status
    return rank >= 2, rank >= 3, None


def status_moves(current: str, current_code: str, new: str) -> bool:
    """True when a recipient at ``current`` may move to ``new`` (forward only).

    Read is final; a failure never follows delivered; a 2301 failure is
    followed by the retry's statuses.
    """
    if new == current:
        return False
    if current in _FAILURES:
        return current_code == RETRIED_CODE and new not in _FAILURES
    if new in _FAILURES:
        return _RANK.get(current, 0) < 2
    return _RANK.get(new, -1) > _RANK.get(current, -1)


def paced(
    *,
    rate: float,
    current: float,
    throttled_at: float | None,
    tokens: float,
    tokens_at: float,
    now: float,
    want: int,
) -> tuple[int, float, float, float]:
    """The token bucket: (granted, wait seconds, tokens left, effective rate).

    The memory backend's copy of the Redis script's arithmetic (see
    ``lua/campaign_tokens.lua``): the effective rate climbs back from
    ``current`` to ``rate`` over :data:`RECOVER_SECONDS` after a throttle;
    the bucket holds at most a second's worth (and at most 100); a grant
    waits for a quarter second's worth, so slow campaigns send small batches
    a few times a second rather than one message at a time.
    """
    if rate <= 0:
        return want, 0.0, 0.0, 0.0
    effective = rate
    if throttled_at is not None:
        effective = min(rate, current + max(0.0, now - throttled_at) * rate / RECOVER_SECONDS)
    cap = max(1.0, min(100.0, effective))
    tokens = min(cap, tokens + max(0.0, now - tokens_at) * effective)
    need = min(float(want), max(1.0, float(int(effective * 0.25))), cap)
    if tokens + 1e-9 < need:
        return 0, (need - tokens) / effective, tokens, effective
    granted = min(want, int(tokens + 1e-9))
    return granted, 0.0, tokens - granted, effective


class CampaignStore(ABC):
    """Where campaigns, their audiences, results and totals live."""

    @abstractmethod
    async def create(self, campaign: Campaign) -> Campaign:
        """Keep a new campaign (``importing``); :class:`CampaignExists` if the name is taken."""

    @abstractmethod
    async def add(
        self, campaign: Campaign, recipients: Sequence[tuple[str, tuple[str, ...]]]
    ) -> tuple[int, int]:
        """Append normalised recipients ``(phone, params)``; (added, duplicates) of them.

        A phone already in the audience is a duplicate: counted, not added.
        """

    @abstractmethod
    async def add_invalid(self, campaign: Campaign, numbers: Sequence[str]) -> None:
        """Record numbers of the audience that are not valid phone numbers (counted, reported)."""

    @abstractmethod
    async def open(self, campaign: Campaign) -> Campaign:
        """The import is complete: the campaign is scheduled (or running if its time came)."""

    @abstractmethod
    async def get(self, name: str) -> Campaign | None:
        """The campaign called ``name``, or None."""

    @abstractmethod
    async def by_id(self, campaign_id: str) -> Campaign | None:
        """The campaign with this id, or None."""

    @abstractmethod
    async def names(self) -> list[str]:
        """Every campaign's name."""

    @abstractmethod
    async def all(self) -> list[Campaign]:
        """Every campaign, as it is now (one round trip where the store can)."""

    @abstractmethod
    async def change_state(
        self, name: str, allowed: Collection[CampaignState], to: CampaignState
    ) -> Campaign:
        """Move ``name`` to ``to`` if it is in one of ``allowed``.

        Raises :class:`CampaignNotFound` or :class:`CampaignStateError`.
        """

    @abstractmethod
    async def tokens(self, campaign: Campaign, want: int) -> tuple[int, float, CampaignState]:
        """Take up to ``want`` sends from the campaign's shared budget.

        (granted, seconds until more may be granted, the campaign's state).
        A scheduled campaign whose time came starts running here; one that
        is not running grants nothing.
        """

    @abstractmethod
    async def take(self, campaign: Campaign, consumer: str, count: int) -> list[Recipient]:
        """Up to ``count`` recipients nobody has taken, now ``consumer``'s."""

    @abstractmethod
    async def claim(
        self, campaign: Campaign, consumer: str, min_idle: float, count: int
    ) -> list[Recipient]:
        """Recipients another consumer took and did not settle for ``min_idle`` s."""

    @abstractmethod
    async def take_over(
        self,
        campaign: Campaign,
        consumer: str,
        live: Collection[str],
        min_idle: float,
        count: int,
    ) -> list[Recipient]:
        """Recipients taken by consumers not in ``live`` (senders that left), idle ``min_idle``."""

    @abstractmethod
    async def touch(self, campaign: Campaign, consumer: str, entries: Sequence[str]) -> list[str]:
        """Restart the idle time of recipients ``consumer`` holds; those it still holds."""

    @abstractmethod
    async def settle(self, campaign: Campaign, results: Sequence[Settlement]) -> None:
        """Record results and move the totals, atomically; settling twice counts once.

        The campaign is done once every recipient is settled.
        """

    @abstractmethod
    async def record_status(
        self, campaign: Campaign, phone: str, status: str, code: str, message_id: str
    ) -> bool:
        """Move a recipient's status forward (a status callback); False when it cannot move."""

    @abstractmethod
    async def throttle(self, campaign: Campaign) -> float:
        """The platform said too many (2301): halve the rate in force; return it."""

    @abstractmethod
    async def totals(self, campaign: Campaign) -> CampaignTotals:
        """The campaign's live numbers (and its current state)."""

    @abstractmethod
    def report(self, campaign: Campaign) -> AsyncIterator[RecipientRow]:
        """Every recipient's row, bucket by bucket (never the whole audience in memory)."""


def _encode(result: str, message_id: str, status: str, code: str) -> str:
    return f"{result}|{message_id}|{status}|{code}"


def _decode(value: str) -> tuple[str, str, str, str]:
    parts = [*value.split("|"), "", "", ""][:4]
    return parts[0], parts[1], parts[2], parts[3]


def row_of(phone: str, value: str) -> RecipientRow:
    """A report row from a stored result (``<result>|<messageId>|<status>|<code>``)."""
    result, message_id, status, code = _decode(value)
    names = {"q": "queued", "s": "sent"}
    if result.startswith("k:"):
        name = "skipped:" + result[2:]
    elif result.startswith("f:"):
        name = "failed"
        code = code or result[2:]
    else:
        name = names.get(result, result)
    if name == "sent" and status in _FAILURES:
        name = "failed"
    return RecipientRow(phone, name, message_id, status, code)


@dataclass(slots=True)
class _MemoryCampaign:
    campaign: Campaign
    unread: list[Recipient] = field(default_factory=list)
    pending: dict[str, tuple[Recipient, str, float]] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    current: float = 0.0
    throttled_at: float | None = None
    tokens: float = 0.0
    tokens_at: float = 0.0
    finished_at: float | None = None
    ids: int = 0


class MemoryCampaigns(CampaignStore):
    """Campaigns in this process's memory: ``botkit dev`` and tests (one process)."""

    def __init__(self) -> None:
        self._by_name: dict[str, _MemoryCampaign] = {}
        self._lock = asyncio.Lock()

    def _find(self, campaign: Campaign | str) -> _MemoryCampaign:
        name = campaign if isinstance(campaign, str) else campaign.name
        found = self._by_name.get(name)
        if found is None:
            raise CampaignNotFound(f"no campaign is called {name!r}")
        return found

    async def create(self, campaign: Campaign) -> Campaign:
        if campaign.name in self._by_name:
            raise CampaignExists(
                f"a campaign called {campaign.name!r} exists already; pick another name"
            )
        self._by_name[campaign.name] = _MemoryCampaign(campaign, current=campaign.rate)
        return campaign

    async def add(
        self, campaign: Campaign, recipients: Sequence[tuple[str, tuple[str, ...]]]
    ) -> tuple[int, int]:
        held = self._find(campaign)
        added = duplicates = 0
        for phone, params in recipients:
            if phone in held.results:
                duplicates += 1
                continue
            held.results[phone] = "q"
            held.ids += 1
            held.unread.append(Recipient(str(held.ids), phone, tuple(params)))
            added += 1
        _add(held.counts, "audience", added)
        _add(held.counts, "k:duplicate", duplicates)
        return added, duplicates

    async def add_invalid(self, campaign: Campaign, numbers: Sequence[str]) -> None:
        held = self._find(campaign)
        held.invalid.extend(numbers)
        _add(held.counts, "k:invalid", len(numbers))

    async def open(self, campaign: Campaign) -> Campaign:
        held = self._find(campaign)
        state = CampaignState.SCHEDULED if campaign.start_at else CampaignState.RUNNING
        held.tokens, held.tokens_at = 0.0, time.time()
        held.campaign = replace(held.campaign, state=state)
        self._check_done(held)
        return held.campaign

    async def get(self, name: str) -> Campaign | None:
        held = self._by_name.get(name)
        return None if held is None else held.campaign

    async def by_id(self, campaign_id: str) -> Campaign | None:
        return next(
            (h.campaign for h in self._by_name.values() if h.campaign.id == campaign_id), None
        )

    async def names(self) -> list[str]:
        return list(self._by_name)

    async def all(self) -> list[Campaign]:
        return [held.campaign for held in self._by_name.values()]

    async def change_state(
        self, name: str, allowed: Collection[CampaignState], to: CampaignState
    ) -> Campaign:
        held = self._find(name)
        state = held.campaign.state
        if state not in allowed:
            raise CampaignStateError(_cannot(name, state, to))
        if to is CampaignState.RUNNING:
            held.tokens, held.tokens_at = 0.0, time.time()
            if held.campaign.start_at and held.campaign.start_at > time.time():
                to = CampaignState.SCHEDULED
        held.campaign = replace(held.campaign, state=to)
        if to is CampaignState.CANCELLED:
            held.finished_at = time.time()
        self._check_done(held)
        return held.campaign

    async def tokens(self, campaign: Campaign, want: int) -> tuple[int, float, CampaignState]:
        held = self._find(campaign)
        now = time.time()
        state = held.campaign.state
        if state is CampaignState.SCHEDULED:
            start = held.campaign.start_at or 0.0
            if now < start:
                return 0, start - now, state
            held.campaign = replace(held.campaign, state=CampaignState.RUNNING)
            held.tokens, held.tokens_at = 0.0, now
            state = CampaignState.RUNNING
        if state is not CampaignState.RUNNING:
            return 0, -1.0, state
        granted, wait, held.tokens, _ = paced(
            rate=campaign.rate,
            current=held.current,
            throttled_at=held.throttled_at,
            tokens=held.tokens,
            tokens_at=held.tokens_at,
            now=now,
            want=want,
        )
        held.tokens_at = now
        return granted, wait, state

    async def take(self, campaign: Campaign, consumer: str, count: int) -> list[Recipient]:
        held = self._find(campaign)
        taken, held.unread = held.unread[:count], held.unread[count:]
        now = time.monotonic()
        for recipient in taken:
            held.pending[recipient.entry] = (recipient, consumer, now)
        return taken

    async def claim(
        self, campaign: Campaign, consumer: str, min_idle: float, count: int
    ) -> list[Recipient]:
        return self._claim(campaign, consumer, min_idle, count, lambda _: True)

    async def take_over(
        self,
        campaign: Campaign,
        consumer: str,
        live: Collection[str],
        min_idle: float,
        count: int,
    ) -> list[Recipient]:
        return self._claim(campaign, consumer, min_idle, count, lambda c: c not in live)

    def _claim(
        self, campaign: Campaign, consumer: str, min_idle: float, count: int, whose: Any
    ) -> list[Recipient]:
        held = self._find(campaign)
        now = time.monotonic()
        found: list[Recipient] = []
        for entry, (recipient, owner, since) in list(held.pending.items()):
            if len(found) >= count:
                break
            if now - since >= min_idle and whose(owner):
                again = replace(recipient, deliveries=recipient.deliveries + 1)
                held.pending[entry] = (again, consumer, now)
                found.append(again)
        return found

    async def touch(self, campaign: Campaign, consumer: str, entries: Sequence[str]) -> list[str]:
        held = self._find(campaign)
        kept = []
        for entry in entries:
            pending = held.pending.get(entry)
            if pending is not None and pending[1] == consumer:
                held.pending[entry] = (pending[0], consumer, time.monotonic())
                kept.append(entry)
        return kept

    async def settle(self, campaign: Campaign, results: Sequence[Settlement]) -> None:
        held = self._find(campaign)
        for result in results:
            held.pending.pop(result.entry, None)
            before = held.results.get(result.phone)
            if before is None:
                continue
            kind, _, status, code = _decode(before)
            if kind != "q":
                continue  # settled already: counted once
            _add(held.counts, "done", 1)
            if result.outcome is RecipientOutcome.SKIPPED:
                held.results[result.phone] = _encode("k:" + result.reason, "", "", "")
                _add(held.counts, "k:" + result.reason, 1)
            elif result.outcome is RecipientOutcome.FAILED:
                held.results[result.phone] = _encode(
                    "f:" + result.reason, "", "rejected", result.status
                )
                _add(held.counts, "f:" + result.reason, 1)
            else:
                new = result.status or "accepted"
                if not status or status_moves(status, code, new):
                    status, code = new, ""
                held.results[result.phone] = _encode("s", result.message_id, status, code)
                _add(held.counts, "sent", 1)
                _count_flags(held.counts, status_flags(status, code), 1)
        self._check_done(held)

    def _check_done(self, held: _MemoryCampaign) -> None:
        counts = held.counts
        if held.campaign.state is CampaignState.RUNNING and counts.get("done", 0) >= counts.get(
            "audience", 0
        ):
            held.campaign = replace(held.campaign, state=CampaignState.DONE)
            held.finished_at = time.time()

    async def record_status(
        self, campaign: Campaign, phone: str, status: str, code: str, message_id: str
    ) -> bool:
        held = self._find(campaign)
        before = held.results.get(phone)
        if before is None:
            return False
        kind, known_id, current, current_code = _decode(before)
        if kind not in ("q", "s") or not status_moves(current, current_code, status):
            return False
        if kind == "s":
            _count_flags(held.counts, status_flags(current, current_code), -1)
            _count_flags(held.counts, status_flags(status, code), 1)
        held.results[phone] = _encode(kind, known_id or message_id, status, code)
        return True

    async def throttle(self, campaign: Campaign) -> float:
        held = self._find(campaign)
        now = time.time()
        _, _, _, effective = paced(
            rate=campaign.rate,
            current=held.current,
            throttled_at=held.throttled_at,
            tokens=0.0,
            tokens_at=now,
            now=now,
            want=1,
        )
        if held.throttled_at is not None and now - held.throttled_at < THROTTLE_EVERY:
            return effective
        held.current = max(min(1.0, campaign.rate), effective / 2)
        held.throttled_at = now
        return held.current

    async def totals(self, campaign: Campaign) -> CampaignTotals:
        held = self._find(campaign)
        now = time.time()
        rate = campaign.rate
        if held.throttled_at is not None and rate > 0:
            rate = min(rate, held.current + (now - held.throttled_at) * rate / RECOVER_SECONDS)
        return totals_from(held.campaign, held.counts, rate, held.finished_at)

    async def report(self, campaign: Campaign) -> AsyncIterator[RecipientRow]:
        held = self._find(campaign)
        for phone, value in list(held.results.items()):
            yield row_of(phone, value)
        for number in list(held.invalid):
            yield RecipientRow(number, "skipped:invalid")


def _add(counts: dict[str, int], key: str, amount: int) -> None:
    if amount:
        counts[key] = counts.get(key, 0) + amount


def _count_flags(counts: dict[str, int], flags: tuple[bool, bool, str | None], sign: int) -> None:
    delivered, read, failed = flags
    if delivered:
        _add(counts, "delivered", sign)
    if read:
        _add(counts, "read", sign)
    if failed is not None:
        _add(counts, "f:" + failed, sign)


def _cannot(name: str, state: CampaignState, to: CampaignState) -> str:
    verbs = {
        CampaignState.PAUSED: "pause",
        CampaignState.RUNNING: "resume",
        CampaignState.CANCELLED: "cancel",
    }
    return f"campaign {name!r} is {state.value}: it cannot {verbs.get(to, to.value)}"


def totals_from(
    campaign: Campaign, counts: dict[str, int], rate: float, finished_at: float | None
) -> CampaignTotals:
    """:class:`CampaignTotals` from the stored counters (``audience``, ``done``...)."""
    audience = counts.get("audience", 0)
    return CampaignTotals(
        campaign=campaign,
        audience=audience,
        queued=max(0, audience - counts.get("done", 0)),
        sent=counts.get("sent", 0),
        delivered=counts.get("delivered", 0),
        read=counts.get("read", 0),
        failed={k[2:]: v for k, v in counts.items() if k.startswith("f:") and v},
        skipped={k[2:]: v for k, v in counts.items() if k.startswith("k:") and v},
        rate=rate,
        finished_at=finished_at,
    )
