"""Status callbacks: move each sent message's status forward and act on errors.

A status callback runs as a turn of the user the message went to (known
from the signed ``callbackData``), deduplicated on ``(messageId, status)``.
(A plain progress status, with no error code, when the bot has no status
handlers, only moves the sent record forward: no lock, no turn.)

The signature proves botkit sent the message, not that the provider sent
this status: a genuine ``callbackData`` can be replayed with any status and
error code. So what a callback may cause depends on the record kept of the
message, never on the callback alone:

* statuses only move forward: sent < delivered < read/visited; read and
  visited are final, and so are the failures (failed, undelivered, expired,
  cancelled); an older or repeated status is ignored;
* a failure status for a message already delivered or read is recorded
  (logged, counted in ``botkit_statuses_ignored_total``) and ignored;
* errorCode 2312 (sent outside the session window) on a message that was
  not delivered and had a fallback template: the template goes out, in the
  same commit that marks the callback done, and at most once, ever (the
  sent record remembers it, before the commit: at most once rather than at
  least once);
* 2301 (too many messages): the message is retried after a backoff (``RATE_RETRY``, a
  :class:`~botkit.RetryPolicy`: 3 retries, 10-20 s, 20-40 s, 40-80 s), also at
  most once per sent message;
* 2305 (not a WhatsApp user): the user is marked and nothing more is sent;
* then the bot's status handlers run with the user's context.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from botkit import _metrics as metrics
from botkit._errors import BotkitError
from botkit._events import DeliveryStatus, EventKind, StatusUpdate, masked
from botkit._outbound import OutboundMessage, SendMode, SentRecord
from botkit._retry import RetryPolicy
from botkit._transcript import status_entry
from botkit._turn import Outcome
from botkit.delivery._signing import CallbackSigner, fallback_digest
from botkit.devino.convert import to_status
from botkit.devino.errors import StatusErrorCode
from botkit.devino.models import SendResult, StatusReport

if TYPE_CHECKING:
    from botkit._context import Context
    from botkit._runtime import Runtime

log = logging.getLogger("botkit.status")


class DeliveryRejected(BotkitError):
    """The provider (or local validation) rejected a message; it is not retried.

    Error handlers receive it with the reasons, e.g.
    ``[Reason(key='invalid', ref='messages[0].to')]``.
    """

    def __init__(self, message: OutboundMessage, result: SendResult) -> None:
        reasons = "; ".join(str(r) for r in result.reasons) or result.code
        super().__init__(
            f"DeliveryRejected: message to {masked(message.user)} was rejected: {reasons}"
        )
        self.message = message
        self.reasons = list(result.reasons)
        self.description = result.description


class StatusOutcome(StrEnum):
    """What became of one status callback."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"
    STALE = "stale"
    FORGED = "forged"


RATE_RETRY = RetryPolicy(attempts=4, base_delay=20.0, max_delay=300.0, jitter=0.5)
"""When a message the platform throttled (2301) is tried again: 10-20 s, 20-40 s, 40-80 s."""


_FAILURES = frozenset(
    {
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.EXPIRED,
    }
)
_REACHED = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.READ, DeliveryStatus.VISITED})


def moves_forward(current: str, new: str) -> bool:
    """True when ``new`` may follow ``current``.

    The same status again passes (a repeat is caught by deduplication; a
    retried callback whose turn did not commit must still act). Read,
    visited and the failures are final; a failure never follows delivered;
    unknown names never move the record.
    """
    if current == new:
        return True
    new_status = DeliveryStatus.parse(new)
    if new_status is None:
        return False
    current_status = DeliveryStatus.parse(current)
    if current_status is None:  # "accepted": the provider took it, nothing more is known
        return True
    if current_status.is_final:
        return False
    if new_status in _FAILURES:
        return current_status not in _REACHED
    return new_status.rank > current_status.rank


_KNOWN_STATUSES = frozenset(DeliveryStatus)
_KNOWN_CODES = frozenset(StatusErrorCode)


def _labels(update: StatusUpdate) -> tuple[str, str]:
    """The metric labels of a status: known statuses and error codes only."""
    status = metrics.bounded(update.status, _KNOWN_STATUSES)
    code = "" if update.error_code is None else metrics.bounded(update.error_code, _KNOWN_CODES)
    return status, code


def furthest(statuses: Iterable[str]) -> str:
    """The status a message ends at after ``statuses``, whatever order they came in.

    What :func:`moves_forward` would leave: the furthest of delivered, read
    and visited if any came (a failure after delivery is ignored), else a
    failure, else sent; ``"accepted"`` when none is known.
    """
    known = [s for s in (DeliveryStatus.parse(name) for name in statuses) if s is not None]
    reached = [s for s in known if s in _REACHED]
    if reached:
        return max(reached, key=lambda s: s.rank).value
    failed = [s for s in known if s in _FAILURES]
    if failed:
        return failed[0].value
    return max(known, key=lambda s: s.rank).value if known else "accepted"


def was_delivered(status: str) -> bool:
    """True when ``status`` says the message reached the user's phone."""
    return DeliveryStatus.parse(status) in _REACHED


class StatusTracker:
    """Turns status callbacks into status turns; see the module docstring."""

    def __init__(
        self, runtime: Runtime, signer: CallbackSigner, *, rate_retry: RetryPolicy | None = None
    ) -> None:
        self.runtime = runtime
        self.signer = signer
        self.rate_retry = rate_retry or RATE_RETRY
        self.on_update: list[Callable[[StatusUpdate], Awaitable[None]]] = []
        """Called with every verified status first (campaigns record theirs here)."""
        runtime.status_hooks.append(self._on_status)

    async def handle(self, report: StatusReport) -> StatusOutcome:
        """Verify, deduplicate and run one status callback.

        A callback whose ``options`` is not a valid signature is refused and
        triggers nothing. Store errors propagate (the webhook answers 503 and
        the provider retries).
        """
        reference = self.signer.verify(report.options)
        if reference is None:
            metrics.CALLBACKS_REFUSED.labels("signature").inc()
            log.warning(
                "refused a status callback with a bad signature (messageId %s)", report.message_id
            )
            return StatusOutcome.FORGED
        update = to_status(
            report, user=reference.user, reference=reference.ref, now=self.runtime.clock.now()
        )
        for listener in self.on_update:
            await listener(update)
        if update.error_code is None and not self.runtime.index.handles(EventKind.STATUS):
            # Nothing to resend and no handler to run: the user's lock and a
            # turn are not needed, only the forward-only status record.
            return await self._advance(update)
        outcome = await self.runtime.handle_status(update)
        if outcome.outcome is Outcome.DUPLICATE:
            return StatusOutcome.DUPLICATE
        if outcome.outcome is Outcome.IN_PROGRESS:
            return StatusOutcome.IN_PROGRESS
        if outcome.outcome is Outcome.IGNORED:
            return StatusOutcome.STALE
        metrics.count(metrics.STATUSES, *_labels(update))
        return StatusOutcome.HANDLED

    async def _advance(self, update: StatusUpdate) -> StatusOutcome:
        store = self.runtime.store
        record = (
            None
            if update.user is None
            else await store.get_sent(update.message_id, user=update.user)
        )
        if record is None or record.message.ref != update.reference:
            await self._receipt(update)
            await self._transcribe(update)
        else:
            if not moves_forward(record.status, update.status):
                self._ignored(record, update)
                return StatusOutcome.STALE
            if record.status != update.status:
                await store.update_sent(dataclasses.replace(record, status=update.status))
                await self._transcribe(update)
        metrics.count(metrics.STATUSES, *_labels(update))
        return StatusOutcome.HANDLED

    async def _receipt(self, update: StatusUpdate) -> None:
        """Remember that the provider took the message: its sender must not send it again."""
        if update.user is not None and update.reference is not None and update.message_id:
            await self.runtime.store.record_receipt(
                update.user, update.reference, update.message_id, update.status
            )

    async def _transcribe(self, update: StatusUpdate) -> None:
        """Add the status to the user's transcript (outside a turn: no handler runs for it)."""
        if update.user is not None and update.reference is not None:
            entry = status_entry(
                update.reference, update.status, update.timestamp, update.error_code
            )
            await self.runtime.store.transcript_append(update.user, [entry])

    def _ignored(self, record: SentRecord, update: StatusUpdate) -> None:
        """Record a status that cannot follow the message's current one."""
        metrics.count(metrics.STATUSES_IGNORED, _labels(update)[0])
        if record.status != update.status:
            log.info(
                "ignored status %s (error %s) of a message to ...%s that is already %s",
                _labels(update)[0],
                update.error_code,
                record.user[-4:],
                record.status,
            )

    async def _on_status(self, ctx: Context) -> bool:
        """Runs in the status turn, under the user's lock, before the status handlers."""
        status = ctx.status
        store = self.runtime.store
        record = (
            None
            if status.user is None
            else await store.get_sent(status.message_id, user=status.user)
        )
        if record is None or record.message.ref != status.reference:
            # Not acknowledged yet (or older than the sent log's 7 days): a receipt
            # for the sender, then handlers only, no actions.
            await self._receipt(status)
            self._note(ctx, status)
            return True
        if not moves_forward(record.status, status.status):
            self._ignored(record, status)
            return False
        message = record.message
        code = status.error_code
        resend: OutboundMessage | None = None
        if record.resent or was_delivered(record.status):
            pass  # a fallback or retry went already, or the message arrived: never again
        elif code == StatusErrorCode.OUTSIDE_SESSION_WINDOW:
            resend = self._fallback(ctx, message, status)
        elif code == StatusErrorCode.TOO_MANY_MESSAGES:
            resend = self._retry_later(ctx, message)
        elif code == StatusErrorCode.NOT_ON_WHATSAPP:
            ctx.conversation.not_on_whatsapp = True
            log.info("user ...%s is not on WhatsApp; nothing more is sent", ctx.user[-4:])
        if status.status != record.status:
            self._note(ctx, status)
        if status.status != record.status or resend is not None:
            # Written before the commit that queues the resend: if that commit
            # fails, the resend is lost rather than sent twice by a retried callback.
            await store.update_sent(
                dataclasses.replace(
                    record, status=status.status, resent=record.resent or resend is not None
                )
            )
        if resend is not None:
            ctx.turn.queue_reply([resend])
        return True

    @staticmethod
    def _note(ctx: Context, status: StatusUpdate) -> None:
        if status.reference is not None:
            ctx.turn.note(
                status_entry(status.reference, status.status, status.timestamp, status.error_code)
            )

    def _fallback(
        self, ctx: Context, message: OutboundMessage, status: StatusUpdate
    ) -> OutboundMessage | None:
        if message.mode is SendMode.TEMPLATE or message.fallback is None:
            log.warning(
                "2312 for a message to ...%s with no fallback template; it is lost",
                ctx.user[-4:],
            )
            return None
        signed = self.signer.verify(status.raw.get("options"))
        if signed is None or signed.fallback != fallback_digest(message.fallback):
            log.warning(
                "2312 for a message to ...%s whose callbackData does not sign its fallback "
                "template; the template is not sent",
                ctx.user[-4:],
            )
            return None
        if ctx.conversation.opted_out:
            return None
        metrics.FALLBACKS.inc()
        return message.as_template(message.fallback)

    def _retry_later(self, ctx: Context, message: OutboundMessage) -> OutboundMessage | None:
        # ``attempt`` counts the retries so far: this failure is try attempt + 1.
        if self.rate_retry.gives_up(after=message.attempt + 1):
            log.warning("giving up on a message to ...%s after repeated 2301", ctx.user[-4:])
            return None
        metrics.RETRIED.labels("rate").inc()
        return message.retried(not_before=ctx.now + self.rate_retry.delay(message.attempt))

    async def report_rejected(self, message: OutboundMessage, result: SendResult) -> None:
        """Give a rejected message to the bot's error handlers, in the user's context."""
        event = StatusUpdate(
            message_id="",
            status="rejected",
            user=message.user,
            reference=message.ref,
            timestamp=self.runtime.clock.now(),
            raw=MappingProxyType({"reasons": [r.to_wire() for r in result.reasons]}),
        )
        await self.runtime.report_error(message.user, DeliveryRejected(message, result), event)
