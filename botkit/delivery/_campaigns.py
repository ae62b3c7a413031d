"""Campaigns on the send path: the audience fed to the sender, paced, after the replies.

:class:`CampaignFeed` is what the sender (:class:`~botkit.delivery.OutboxWorker`)
tops its batches up from once the outbox's replies are in: a reply to a user
always goes before any campaign message still waiting. For each running
campaign it takes sends from the campaign's shared token bucket (one budget
for every worker), takes that many recipients nobody took yet, checks each
against their conversation (opted out and known not on WhatsApp are skipped
and counted; the in-window text goes to users whose 24-hour window is open,
the template to everyone else) and hands the messages to the sender. Each
message's reference is derived from the campaign and the phone (the
idempotency key); after the provider answered, :meth:`CampaignFeed.settle`
records the result first and the sent record second, so a sender killed in
between leaves a recipient that is settled or that a receipt settles.

Recipients a dead sender took are taken over (after its heartbeat lapsed, or
after ``claim_idle``) and sent only if no status callback named them within
the receipt grace. Status callbacks move each recipient's status forward
(:meth:`CampaignFeed.on_status`); a 2301 halves the campaign's rate, which
climbs back over two minutes.

:func:`start_campaign` creates a campaign from an audience streamed in
chunks (a CSV file read row by row, :func:`csv_audience`): numbers
normalised, invalid ones recorded, duplicates counted once.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from botkit import _metrics as metrics
from botkit._clock import Clock, SystemClock
from botkit._events import StatusUpdate
from botkit._outbound import (
    Origin,
    OutboundMessage,
    SendMode,
    SentRecord,
    Template,
    campaign_of,
)
from botkit._outbound import campaign_ref as _campaign_ref
from botkit._policy import DeliveryRefused, NotOnWhatsApp, OptedOut, ReplyPolicy
from botkit.devino.errors import InvalidPhoneNumber
from botkit.devino.models import SendResult
from botkit.devino.validation import normalize_phone
from botkit.storage.base import ConversationStore, OutboxItem, Receipt
from botkit.storage.campaigns import (
    MAX_TEXT,
    Campaign,
    CampaignError,
    CampaignState,
    CampaignStore,
    CampaignTotals,
    Recipient,
    RecipientOutcome,
    Settlement,
    SkipReason,
    check_name,
    new_campaign_id,
)

log = logging.getLogger("botkit.campaigns")

ITEM_PREFIX = "c:"
"""Outbox item ids of campaign messages: ``c:<campaign id>:<audience entry>``."""

IMPORT_CHUNK = 1000
"""Recipients written to the store per call while an audience is imported."""

RECIPIENTS_PER_BUCKET = 64
"""Recipients per results bucket (a small hash stays a compact listpack)."""

# How often the feed looks for running campaigns (a pause is seen at the next
# token request anyway, which every batch makes).
_REFRESH_EVERY = 0.25
# How often the live totals are copied into the Prometheus gauges.
_GAUGES_EVERY = 1.0


class AudienceError(CampaignError, ValueError):
    """The audience cannot be read as given (a missing column, no file); nothing was created."""


def campaign_ref(campaign: Campaign, phone: str) -> str:
    """The reference (idempotency key) of ``campaign``'s message to ``phone``."""
    return _campaign_ref(campaign.id, phone)


def csv_audience(
    path: str | Path, *, phone_column: str = "phone", param_columns: Sequence[str] = ()
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The rows of a CSV audience, one at a time: (the phone as written, its parameters).

    The first line names the columns; ``param_columns`` fill the template's
    positions 1, 2, ... in that order. Raises :class:`AudienceError` for a
    file that cannot be read or lacks a column.
    """
    try:
        handle = Path(path).open(newline="", encoding="utf-8-sig")  # noqa: SIM115 - a generator's
    except OSError as exc:
        raise AudienceError(f"cannot read the audience {str(path)!r}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise AudienceError(f"the audience {str(path)!r} is empty (no header line)")
        names = [name.strip() for name in header]
        missing = [c for c in (phone_column, *param_columns) if c not in names]
        if missing:
            raise AudienceError(
                f"the audience {str(path)!r} has no column {', '.join(map(repr, missing))}; "
                f"its columns are {', '.join(map(repr, names))}"
            )
        phone_at = names.index(phone_column)
        params_at = [names.index(c) for c in param_columns]
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            cells = row + [""] * (len(names) - len(row))
            yield cells[phone_at].strip(), tuple(cells[i] for i in params_at)


def count_rows(path: str | Path) -> int:
    """Data rows in a CSV file (lines after the header), counted without keeping them."""
    try:
        with Path(path).open("rb") as handle:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError as exc:
        raise AudienceError(f"cannot read the audience {str(path)!r}: {exc.strerror}") from None
    return max(0, lines)


def buckets_for(expected: int) -> int:
    """How many results buckets an audience of about ``expected`` recipients gets."""
    return max(1, math.ceil(expected / RECIPIENTS_PER_BUCKET))


def start_time(at: datetime | float | str | None, now: float) -> float | None:
    """``at`` (an aware datetime, ISO text with its zone, or unix seconds) as unix seconds."""
    if at is None or at == "":
        return None
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(
                f"start time {at!r} is not an ISO time such as 2026-12-01T09:00:00+01:00"
            ) from None
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError(
                "give the start time with its zone (2026-12-01T09:00:00+01:00, or Z for UTC)"
            )
        return at.timestamp()
    return float(at)


async def start_campaign(
    campaigns: CampaignStore,
    *,
    name: str,
    template: str,
    audience: Iterable[tuple[str, Sequence[str]]],
    expected: int,
    language: str | None = None,
    rate: float = 20.0,
    at: datetime | float | str | None = None,
    text_in_window: str | None = None,
    params: Sequence[str] = (),
    clock: Clock | None = None,
) -> CampaignTotals:
    """Create a campaign and import its audience, chunk by chunk; then it runs.

    ``audience`` yields (phone as written, template parameters); it is read
    once, :data:`IMPORT_CHUNK` rows at a time, never held whole.
    ``expected`` is about how many rows it has (it sizes the results
    buckets). The service's workers start sending once this returns (or at
    ``at``). Raises :class:`~botkit.storage.campaigns.CampaignExists` for a
    name in use and ValueError for a bad definition; nothing is created then.
    """
    now = (clock or SystemClock()).now()
    check_name(name)
    if not template or not isinstance(template, str):
        raise ValueError("give the template id the provider knows it by")
    if language is not None and not (2 <= len(language) <= 8):
        raise ValueError(f"language {language!r}: give a code such as en or pt_BR")
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate {rate!r}: give messages per second, 0 or more (0: unlimited)")
    if text_in_window is not None and not text_in_window.strip():
        text_in_window = None
    if text_in_window is not None and len(text_in_window) > MAX_TEXT:
        raise ValueError(
            f"the in-window text is {len(text_in_window)} characters; WhatsApp takes {MAX_TEXT}"
        )
    campaign = Campaign(
        name=name,
        id=new_campaign_id(),
        template=template,
        language=language,
        rate=float(rate),
        start_at=start_time(at, now),
        text_in_window=text_in_window,
        params=tuple(params),
        created_at=now,
        buckets=buckets_for(expected),
    )
    campaign = await campaigns.create(campaign)
    valid: list[tuple[str, tuple[str, ...]]] = []
    invalid: list[str] = []
    for raw, values in audience:
        try:
            valid.append((normalize_phone(raw), tuple(str(v) for v in values)))
        except InvalidPhoneNumber:
            invalid.append(raw)
        if len(valid) >= IMPORT_CHUNK:
            await campaigns.add(campaign, valid)
            valid = []
        if len(invalid) >= IMPORT_CHUNK:
            await campaigns.add_invalid(campaign, invalid)
            invalid = []
    await campaigns.add(campaign, valid)
    await campaigns.add_invalid(campaign, invalid)
    campaign = await campaigns.open(campaign)
    return await campaigns.totals(campaign)


@dataclass(slots=True)
class _Held:
    """Recipients taken over from a sender that left, waiting out the receipt grace."""

    campaign: Campaign
    recipients: list[Recipient]
    ready_at: float


class CampaignFeed:
    """Campaign messages for the sender's batches; see the module docstring.

    ``receipts`` says whether status callbacks come back (a callback URL is
    set): without them a recipient a dead sender may have sent is sent again
    (at least once). ``claim_idle`` and ``receipt_grace`` are the sender's.
    """

    def __init__(
        self,
        store: ConversationStore,
        policy: ReplyPolicy,
        *,
        clock: Clock | None = None,
        receipts: bool = True,
        claim_idle: float = 60.0,
        receipt_grace: float = 10.0,
    ) -> None:
        self.store = store
        self.campaigns = store.campaigns()
        self.policy = policy
        self.clock = clock or SystemClock()
        self.receipts = receipts
        self.claim_idle = claim_idle
        self.receipt_grace = receipt_grace
        self._active: list[Campaign] = []
        self._by_id: dict[str, Campaign] = {}
        self._refreshed_at = -math.inf
        self._gauges_at = -math.inf
        self._all_gauges_at = -math.inf
        self._wait_until: dict[str, float] = {}
        self._claimed_at: dict[str, float] = {}
        self._held: list[_Held] = []
        self._turn = 0

    # -- for the sender ------------------------------------------------------

    @staticmethod
    def owns(item_id: str) -> bool:
        """True for the ids of campaign items (the sender settles those here)."""
        return item_id.startswith(ITEM_PREFIX)

    def ready_in(self) -> float:
        """Seconds until a campaign may have something to send (inf: none running)."""
        if not self._active:
            return math.inf
        now = time.monotonic()
        soonest = min(self._wait_until.get(c.id, now) for c in self._active)
        return max(0.0, soonest - now)

    async def take(
        self, room: int, consumer: str, live: Collection[str] | None = None
    ) -> list[OutboxItem]:
        """Up to ``room`` campaign messages that may go now, within each campaign's rate.

        ``live`` are the live senders (a heartbeat that held): recipients of
        senders not among them are taken over.
        """
        now = time.monotonic()
        if now - self._refreshed_at >= _REFRESH_EVERY:
            await self._refresh()
        if not self._active or room <= 0:
            return []
        out: list[OutboxItem] = []
        count = len(self._active)
        self._turn = (self._turn + 1) % count
        for campaign in self._active[self._turn :] + self._active[: self._turn]:
            if room <= 0:
                break
            if self._wait_until.get(campaign.id, 0.0) > now:
                continue
            await self._recover(campaign, consumer, live)
            granted, wait, state = await self.campaigns.tokens(campaign, room)
            if state is not CampaignState.RUNNING:
                self._wait_until[campaign.id] = now + (wait if wait > 0 else _REFRESH_EVERY)
                continue
            if not granted:
                self._wait_until[campaign.id] = now + wait
                continue
            recipients = self._ready_held(campaign, granted)
            if len(recipients) < granted:
                recipients += await self.campaigns.take(
                    campaign, consumer, granted - len(recipients)
                )
            if not recipients:
                # Every recipient is taken: what is left is in flight elsewhere.
                self._wait_until[campaign.id] = now + _REFRESH_EVERY
                continue
            recipients = await self._without_receipts(campaign, recipients)
            items = await self._plan(campaign, recipients)
            out += items
            room -= len(items)
        return out

    async def touch(self, consumer: str, ids: Sequence[str]) -> list[str]:
        """Restart the idle time of campaign items ``consumer`` holds; the ids still held."""
        held: list[str] = []
        for campaign, entries in self._by_campaign(ids).items():
            kept = await self.campaigns.touch(campaign, consumer, entries)
            held += [f"{ITEM_PREFIX}{campaign.id}:{entry}" for entry in kept]
        return held

    async def settle(self, answered: Sequence[tuple[OutboxItem, SendResult]]) -> None:
        """Record what the provider answered: results first, then the sent records.

        The sent records let status callbacks act (a 2301 retry, a 2305 mark);
        written second, so a sender that dies between the two leaves a
        recipient settled (its statuses then come as receipts).
        """
        now = self.clock.now()
        records: list[SentRecord] = []
        by_campaign: dict[str, list[Settlement]] = {}
        for item, result in answered:
            entry = item.id.rsplit(":", 1)[1]
            cid = item.id[len(ITEM_PREFIX) :].split(":", 1)[0]
            phone = item.message.user
            if result.ok and result.message_id:
                settlement = Settlement(
                    entry,
                    phone,
                    RecipientOutcome.SENT,
                    message_id=result.message_id,
                    status="accepted",
                )
                records.append(
                    SentRecord(message_id=result.message_id, message=item.message, sent_at=now)
                )
            else:
                key = ",".join(str(r.key) for r in result.reasons) or str(result.code)
                settlement = Settlement(
                    entry, phone, RecipientOutcome.FAILED, "rejected", status=key
                )
                log.warning(
                    "the provider rejected a campaign message to ...%s: %s", phone[-4:], key
                )
            by_campaign.setdefault(cid, []).append(settlement)
        for cid, settlements in by_campaign.items():
            campaign = await self._campaign(cid)
            if campaign is not None:
                await self.campaigns.settle(campaign, settlements)
        if records and self.receipts:
            # Without status callbacks nothing would ever read them (7 days of Redis).
            await self.store.outbox_ack([], records)

    async def settle_receipts(self, settled: Sequence[tuple[OutboxItem, Receipt]]) -> None:
        """Settle campaign items a receipt showed the provider took (not sent again)."""
        from botkit.delivery._status import furthest

        by_campaign: dict[str, list[Settlement]] = {}
        for item, receipt in settled:
            cid = item.id[len(ITEM_PREFIX) :].split(":", 1)[0]
            by_campaign.setdefault(cid, []).append(
                Settlement(
                    item.id.rsplit(":", 1)[1],
                    item.message.user,
                    RecipientOutcome.SENT,
                    message_id=receipt.message_id,
                    status=furthest(receipt.statuses),
                )
            )
        for cid, settlements in by_campaign.items():
            campaign = await self._campaign(cid)
            if campaign is not None:
                await self.campaigns.settle(campaign, settlements)

    # -- for the status tracker ----------------------------------------------

    async def on_status(self, update: StatusUpdate) -> None:
        """A status callback for a campaign message: move its recipient forward.

        A 2301 also halves the campaign's rate for a while.
        """
        cid = campaign_of(update.reference)
        if cid is None or update.user is None:
            return
        campaign = await self._campaign(cid)
        if campaign is None:
            return
        code = "" if not update.error_code else str(update.error_code)
        await self.campaigns.record_status(
            campaign, update.user, update.status.lower(), code, update.message_id
        )
        if code == "2301":
            rate = await self.campaigns.throttle(campaign)
            log.warning(
                "campaign %r: the platform said too many messages (2301); rate now %.1f/s",
                campaign.name,
                rate,
            )

    # -- internals -----------------------------------------------------------

    async def _campaign(self, cid: str) -> Campaign | None:
        found = self._by_id.get(cid)
        if found is None:
            found = await self.campaigns.by_id(cid)
            if found is not None:
                self._by_id[cid] = found
        return found

    def _by_campaign(self, ids: Sequence[str]) -> dict[Campaign, list[str]]:
        grouped: dict[Campaign, list[str]] = {}
        for item_id in ids:
            cid, _, entry = item_id[len(ITEM_PREFIX) :].partition(":")
            campaign = self._by_id.get(cid)
            if campaign is not None:
                grouped.setdefault(campaign, []).append(entry)
        return grouped

    async def _refresh(self) -> None:
        """Which campaigns are running (or scheduled); their gauges every second."""
        self._refreshed_at = time.monotonic()
        everyone = await self.campaigns.all()
        for campaign in everyone:
            self._by_id[campaign.id] = campaign
        active = [
            c for c in everyone if c.state in (CampaignState.RUNNING, CampaignState.SCHEDULED)
        ]
        ended = {c.id for c in self._active} - {c.id for c in active}
        self._active = active
        now = time.monotonic()
        if now - self._gauges_at >= _GAUGES_EVERY or ended:
            # Statuses still come in after a campaign ends: every ten seconds for those.
            full = now - self._all_gauges_at >= 10 * _GAUGES_EVERY
            self._gauges_at = now
            if full:
                self._all_gauges_at = now
            for campaign in everyone:
                if full or campaign in active or campaign.id in ended:
                    set_gauges(await self.campaigns.totals(campaign))

    async def _recover(
        self, campaign: Campaign, consumer: str, live: Collection[str] | None
    ) -> None:
        """Recipients other senders took and left: taken over, or claimed after claim_idle."""
        now = time.monotonic()
        if now - self._claimed_at.get(campaign.id, -math.inf) < 1.0:
            return
        self._claimed_at[campaign.id] = now
        if live is not None:
            taken = await self.campaigns.take_over(campaign, consumer, live, 3.0, 100)
            if taken:
                log.warning(
                    "campaign %r: took over %d recipients of a sender that left",
                    campaign.name,
                    len(taken),
                )
                # It may have had them at the provider: wait for their receipts first.
                self._held.append(_Held(campaign, taken, now + self.receipt_grace))
        claimed = await self.campaigns.claim(campaign, consumer, self.claim_idle, 100)
        if claimed:
            log.warning(
                "campaign %r: claimed %d recipients left unsettled", campaign.name, len(claimed)
            )
            # Idle for claim_idle: their receipts had their grace.
            self._held.append(_Held(campaign, claimed, now))

    def _ready_held(self, campaign: Campaign, count: int) -> list[Recipient]:
        now = time.monotonic()
        ready: list[Recipient] = []
        for held in self._held:
            if held.campaign.id != campaign.id or held.ready_at > now:
                continue
            room = count - len(ready)
            take, held.recipients = held.recipients[:room], held.recipients[room:]
            ready += take
        self._held = [h for h in self._held if h.recipients]
        return ready

    async def _without_receipts(
        self, campaign: Campaign, recipients: list[Recipient]
    ) -> list[Recipient]:
        """Recipients taken before (by another sender) whose message a receipt names: settled."""
        again = [r for r in recipients if r.deliveries > 1]
        if not again or not self.receipts:
            return recipients
        probes = [
            OutboxItem(
                r.entry,
                OutboundMessage(
                    user=r.phone,
                    mode=SendMode.TEMPLATE,
                    ref=_campaign_ref(campaign.id, r.phone),
                    template=Template(campaign.template),
                ),
            )
            for r in again
        ]
        found = await self.store.receipts(probes)
        settled = [
            (OutboxItem(f"{ITEM_PREFIX}{campaign.id}:{p.id}", p.message), got)
            for p, got in zip(probes, found, strict=True)
            if got is not None
        ]
        if not settled:
            return recipients
        await self.settle_receipts(settled)
        metrics.RECEIPTED.inc(len(settled))
        log.info(
            "campaign %r: %d recipients the provider had taken already are settled, not resent",
            campaign.name,
            len(settled),
        )
        done = {item.id.rsplit(":", 1)[1] for item, _ in settled}
        return [r for r in recipients if r.entry not in done]

    async def _plan(self, campaign: Campaign, recipients: list[Recipient]) -> list[OutboxItem]:
        """Each recipient's message under the reply policy; the skipped ones settled now."""
        conversations = await self.store.load_many([r.phone for r in recipients])
        now = self.clock.now()
        items: list[OutboxItem] = []
        skipped: list[Settlement] = []
        for recipient, conversation in zip(recipients, conversations, strict=True):
            template = Template(campaign.template, list(recipient.params), campaign.language)
            try:
                planned = self.policy.plan(
                    conversation,
                    now,
                    text=campaign.text_in_window,
                    template=template,
                    origin=Origin.CAMPAIGN,
                    split=False,
                )
            except OptedOut:
                skipped.append(_skip(recipient, SkipReason.OPTED_OUT))
                continue
            except NotOnWhatsApp:
                skipped.append(_skip(recipient, SkipReason.NOT_ON_WHATSAPP))
                continue
            except (DeliveryRefused, ValueError) as exc:  # cannot happen for a valid campaign
                log.warning(
                    "campaign %r: not sent to ...%s: %s", campaign.name, recipient.phone[-4:], exc
                )
                skipped.append(_skip(recipient, SkipReason.CANCELLED))
                continue
            message = replace(planned[0], ref=_campaign_ref(campaign.id, recipient.phone))
            items.append(
                OutboxItem(
                    f"{ITEM_PREFIX}{campaign.id}:{recipient.entry}", message, recipient.deliveries
                )
            )
        if skipped:
            await self.campaigns.settle(campaign, skipped)
        return items


def _skip(recipient: Recipient, reason: SkipReason) -> Settlement:
    return Settlement(recipient.entry, recipient.phone, RecipientOutcome.SKIPPED, reason.value)


def set_gauges(totals: CampaignTotals) -> None:
    """Copy a campaign's totals into its Prometheus gauges (label: the campaign's name)."""
    name = totals.campaign.name
    values = {
        "audience": totals.audience,
        "queued": totals.queued,
        "sent": totals.sent,
        "delivered": totals.delivered,
        "read": totals.read,
        "failed": sum(totals.failed.values()),
        "skipped": sum(totals.skipped.values()),
        "rate": totals.rate,
    }
    for what, value in values.items():
        metrics.CAMPAIGN[what].labels(name).set(value)
