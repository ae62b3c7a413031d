"""Status callbacks: move each sent message's status forward and act on errors.

A status callback runs as a turn of the user the message went to (known
from the signed ``callbackData``), deduplicated on ``(messageId, status)``.
(A plain progress status, with no error code, when the bot has no status
handlers, only moves the sent record forward: no lock, no turn.)

* statuses only move forward (sent < delivered < read; failed, undelivered,
  expired and cancelled are final); an older or repeated status is ignored;
* errorCode 2312 (sent outside the session window) on a message that had a
  fallback template: the template goes out once, in the same commit that
  marks the callback done;
* 2301 (too many messages): the message is retried after a backoff;
* 2305 (not a WhatsApp user): the user is marked and nothing more is sent;
* then the bot's status handlers run with the user's context.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from botkit import _metrics as metrics
from botkit._events import EventKind, StatusUpdate
from botkit._outbound import OutboundMessage, SendMode
from botkit.delivery._signing import CallbackSigner
from botkit.devino.convert import to_status
from botkit.devino.errors import StatusErrorCode
from botkit.devino.models import MessageStatus, SendResult, StatusReport

if TYPE_CHECKING:
    from botkit._context import Context
    from botkit._runtime import Runtime

log = logging.getLogger("botkit.status")


class DeliveryRejected(Exception):
    """The provider (or local validation) rejected a message; it is not retried.

    Error handlers receive it with the reasons, e.g.
    ``[Reason(key='invalid', ref='messages[0].to')]``.
    """

    def __init__(self, message: OutboundMessage, result: SendResult) -> None:
        reasons = "; ".join(str(r) for r in result.reasons) or result.code
        super().__init__(f"DeliveryRejected: message to +{message.user} was rejected: {reasons}")
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


@dataclass(frozen=True, slots=True)
class RateRetry:
    """When to retry a message the platform throttled (2301): one delay per attempt."""

    delays: Sequence[float] = (10.0, 60.0, 300.0)


def _rank(status: str) -> tuple[int, bool]:
    known = MessageStatus.parse(status)
    if known is None:
        return -1, False
    return known.rank, known in _TERMINAL


_TERMINAL = frozenset(
    {
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.CANCELLED,
        MessageStatus.EXPIRED,
    }
)


def moves_forward(current: str, new: str) -> bool:
    """True when ``new`` may follow ``current``.

    The same status again passes (a repeat is caught by deduplication; a
    retried callback whose turn did not commit must still act). After a
    final failure nothing else follows; unknown names never move the record.
    """
    if current == new:
        return True
    new_rank, _ = _rank(new)
    current_rank, current_terminal = _rank(current)
    if new_rank < 0 or current_terminal:
        return False
    return new_rank > current_rank


class StatusTracker:
    """Turns status callbacks into status turns; see the module docstring."""

    def __init__(
        self, runtime: Runtime, signer: CallbackSigner, *, rate_retry: RateRetry | None = None
    ) -> None:
        self.runtime = runtime
        self.signer = signer
        self.rate_retry = rate_retry or RateRetry()
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
        if update.error_code is None and not self.runtime.index.handles(EventKind.STATUS):
            # Nothing to resend and no handler to run: the user's lock and a
            # turn are not needed, only the forward-only status record.
            return await self._advance(update)
        outcome = await self.runtime.handle_status(update)
        if outcome.outcome == "duplicate":
            return StatusOutcome.DUPLICATE
        if outcome.outcome == "in_progress":
            return StatusOutcome.IN_PROGRESS
        if outcome.outcome == "ignored":
            return StatusOutcome.STALE
        metrics.count(metrics.STATUSES, update.status)
        return StatusOutcome.HANDLED

    async def _advance(self, update: StatusUpdate) -> StatusOutcome:
        store = self.runtime.store
        record = await store.get_sent(update.message_id)
        if record is not None and record.message.ref == update.reference:
            if not moves_forward(record.status, update.status):
                return StatusOutcome.STALE
            if record.status != update.status:
                await store.update_sent(dataclasses.replace(record, status=update.status))
        metrics.count(metrics.STATUSES, update.status)
        return StatusOutcome.HANDLED

    async def _on_status(self, ctx: Context) -> bool:
        """Runs in the status turn, under the user's lock, before the status handlers."""
        status = ctx.status
        store = self.runtime.store
        record = await store.get_sent(status.message_id)
        if record is None or record.message.ref != status.reference:
            # Older than the sent log's 7 days, or not ours: handlers only, no actions.
            return True
        if not moves_forward(record.status, status.status):
            return False
        if status.status != record.status:
            await store.update_sent(dataclasses.replace(record, status=status.status))
        message = record.message
        code = status.error_code
        if code == StatusErrorCode.OUTSIDE_SESSION_WINDOW:
            self._fall_back(ctx, message)
        elif code == StatusErrorCode.TOO_MANY_MESSAGES:
            self._retry_later(ctx, message)
        elif code == StatusErrorCode.NOT_ON_WHATSAPP:
            ctx.conversation.not_on_whatsapp = True
            log.info("user ...%s is not on WhatsApp; nothing more is sent", ctx.user[-4:])
        return True

    def _fall_back(self, ctx: Context, message: OutboundMessage) -> None:
        if message.mode is SendMode.TEMPLATE or message.fallback is None:
            log.warning(
                "2312 for a message to ...%s with no fallback template; it is lost",
                ctx.user[-4:],
            )
            return
        if ctx.conversation.opted_out:
            return
        ctx._replies.append(message.as_template(message.fallback))
        metrics.FALLBACKS.inc()

    def _retry_later(self, ctx: Context, message: OutboundMessage) -> None:
        delays = self.rate_retry.delays
        if message.attempt >= len(delays):
            log.warning("giving up on a message to ...%s after repeated 2301", ctx.user[-4:])
            return
        ctx._replies.append(message.retried(not_before=ctx.now + delays[message.attempt]))
        metrics.RETRIED.labels("rate").inc()

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
