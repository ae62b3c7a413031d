"""Prometheus metrics: what the service counts, served at ``GET /metrics``.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``botkit run``
does it for you) so every worker's numbers are added up.
"""

from __future__ import annotations

import os

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
STATUSES = Counter("botkit_statuses_total", "Status callbacks handled, by status.", ["status"])
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
OUTBOX_SIZE = Gauge(
    "botkit_outbox_size", "Outbox entries waiting or in flight.", multiprocess_mode="max"
)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
