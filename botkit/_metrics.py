"""Prometheus metrics: what the service counts, served at ``GET /metrics``.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``botkit run``
does it for you) so every worker's numbers are added up.

The updates made on every turn go through :func:`count` and :func:`observe`,
which keep them in this process until :func:`flush` adds them to the
Prometheus values: with several workers each Prometheus update is a locked
write to a shared memory-mapped file (about 1.5 us), and a turn makes
several. The service flushes four times a second, before ``/metrics``
answers and at shutdown, so another worker's numbers lag by at most 0.25 s.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Collection

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from botkit._compat import histogram_add, histogram_bounds

TURNS = Counter("botkit_turns_total", "Turns run, by event kind and outcome.", ["kind", "outcome"])
TURN_SECONDS = Histogram(
    "botkit_turn_duration_seconds",
    "Time from begin to commit of a turn.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SENT = Counter("botkit_messages_sent_total", "Messages the provider accepted, by form.", ["mode"])
REJECTED = Counter(
    "botkit_messages_rejected_total", "Messages the provider (or validation) rejected.", ["reason"]
)
RETRIED = Counter(
    "botkit_messages_retried_total",
    "Send attempts repeated: transport errors and 5xx (transport), 2301 (rate).",
    ["cause"],
)
RECEIPTED = Counter(
    "botkit_messages_settled_by_receipt_total",
    "Messages that may have reached the provider unanswered and were acknowledged, not resent, "
    "because a status callback named them.",
)
RESENT_UNCONFIRMED = Counter(
    "botkit_messages_resent_unconfirmed_total",
    "Messages that may have reached the provider, sent again because no status callback named "
    "them in time (the provider may deliver them twice).",
)
FALLBACKS = Counter(
    "botkit_template_fallbacks_total", "Messages resent as their template after a 2312."
)
REFUSED = Counter(
    "botkit_messages_refused_total",
    "Messages refused before sending: outside the window, opted out, not on WhatsApp.",
    ["reason"],
)
SEND_SECONDS = Histogram(
    "botkit_send_request_seconds",
    "Latency of one POST /whatsapp/messages to the provider.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_SECONDS = Histogram(
    "botkit_delivery_delay_seconds",
    "Time from a reply's commit to the provider's acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STATUSES = Counter(
    "botkit_statuses_total",
    "Status callbacks handled, by status and error code (known ones; anything else is other).",
    ["status", "error"],
)
STATUSES_IGNORED = Counter(
    "botkit_statuses_ignored_total",
    "Status callbacks that cannot follow the message's status (e.g. failed after read).",
    ["status"],
)
CALLBACKS_REFUSED = Counter(
    "botkit_callbacks_refused_total",
    "Status callbacks refused (bad signature, unknown).",
    ["reason"],
)
WEBHOOK_REQUESTS = Counter(
    "botkit_webhook_requests_total",
    "Webhook requests, by endpoint and HTTP status.",
    ["endpoint", "status"],
)
AGENT_NOTICES_DROPPED = Counter(
    "botkit_agent_notices_dropped_total",
    "Agent notices dropped before the agent webhook posted them (shared stream's hard cap, "
    "in-process queue full, or the helpdesk refused them with a 4xx).",
    ["reason"],
)
OUTBOX_SIZE = Gauge(
    "botkit_outbox_size", "Outbox entries waiting or in flight.", multiprocess_mode="max"
)
TIMERS_FIRED = Counter(
    "botkit_timers_fired_total",
    "Timer turns run, by outcome (ignored: cancelled meanwhile).",
    ["outcome"],
)
TIMERS_CANCELLED = Counter(
    "botkit_timers_cancelled_total", "Timers cancelled by ctx.cancel() or by a message."
)
TIMER_LAG_SECONDS = Histogram(
    "botkit_timer_lag_seconds",
    "Time from a timer's due time to the start of its turn.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TIMERS_PENDING = Gauge(
    "botkit_timers_pending_users", "Users with a pending timer.", multiprocess_mode="max"
)
FLOW_ENTRIES = Counter(
    "botkit_flow_entries_total",
    "Users entering a flow, by flow and the state they entered at.",
    ["flow", "state"],
)
FLOW_TRANSITIONS = Counter(
    "botkit_flow_transitions_total",
    "Moves within a flow, by flow and the states from and to.",
    ["flow", "from", "to"],
)
FLOW_EXITS = Counter(
    "botkit_flow_exits_total",
    "Users leaving a flow, by flow, the state they left and why (final, cancel, timeout, handoff).",
    ["flow", "state", "reason"],
)
FLOW_EXIT_REASONS = frozenset({"final", "cancel", "timeout", "handoff"})
"""The ``reason`` label values of :data:`FLOW_EXITS`."""

CAMPAIGN: dict[str, Gauge] = {
    what: Gauge(
        f"botkit_campaign_{what}",
        f"A campaign's {meaning} (from the store, every second).",
        ["campaign"],
        multiprocess_mode="mostrecent",
    )
    for what, meaning in {
        "audience": "distinct valid recipients",
        "queued": "recipients not yet sent or skipped",
        "sent": "recipients whose message the provider accepted",
        "delivered": "recipients whose message was delivered (or read)",
        "read": "recipients who read the message",
        "failed": "recipients whose message failed (any error code) or was rejected",
        "skipped": "recipients skipped (invalid, duplicate, opted out, not on WhatsApp)",
        "rate": "rate in force, messages per second (lower for a while after a 2301)",
    }.items()
}
"""Live campaign totals, one gauge per total, labelled by the campaign's name only."""


OTHER = "other"
"""The label value of anything not in a label's known set: series stay bounded."""


def bounded(value: object, known: Collection[object]) -> str:
    """``value`` as a label when it is one of ``known``, else ``"other"``.

    Label values that come from outside (a provider's status or reason) must
    go through this: each new value is a new series kept until restart.
    """
    return str(value) if value in known else OTHER


# How often the service adds the held updates to the Prometheus values (seconds).
FLUSH_EVERY = 0.25

_counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
# Per histogram: its bucket bounds, and [sum of the values, count per bucket].
_observed: dict[Histogram, tuple[list[float], list[float]]] = {}


def count(counter: Counter, *labels: str, amount: float = 1.0) -> None:
    """Add ``amount`` to ``counter`` (with these label values) at the next :func:`flush`."""
    key = (counter, labels)
    _counts[key] = _counts.get(key, 0.0) + amount


def observe(histogram: Histogram, value: float) -> None:
    """Observe ``value`` in ``histogram`` at the next :func:`flush`."""
    held = _observed.get(histogram)
    if held is None:
        bounds = histogram_bounds(histogram)
        if bounds is None:
            histogram.observe(value)  # a prometheus_client whose internals differ: no holding
            return
        held = _observed[histogram] = (bounds, [0.0] * (len(bounds) + 1))
    bounds, totals = held
    totals[0] += value
    totals[1 + bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value


def flush() -> None:
    """Add the updates held since the last flush to the Prometheus values."""
    global _counts, _observed
    counts, _counts = _counts, {}
    observed, _observed = _observed, {}
    for (counter, labels), amount in counts.items():
        (counter.labels(*labels) if labels else counter).inc(amount)
    for histogram, (_, totals) in observed.items():
        histogram_add(histogram, totals[0], totals[1:])


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format (held updates first flushed), and its content type."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
