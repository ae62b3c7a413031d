"""Metric updates held in the process: nothing lost, the same numbers as direct updates."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from botkit.service import metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_held_updates_reach_prometheus_at_the_flush_as_direct_updates_would() -> None:
    held, direct = CollectorRegistry(), CollectorRegistry()
    counted = Counter("turns", "t", ["kind"], registry=held)
    counted_directly = Counter("turns", "t", ["kind"], registry=direct)
    timed = Histogram("seconds", "s", buckets=BUCKETS, registry=held)
    timed_directly = Histogram("seconds", "s", buckets=BUCKETS, registry=direct)
    values = [random.Random(3).choice([0.0, 0.001, 0.005, 0.1, 0.5, 3.0, 99.0]) for _ in range(50)]
    # Every bound itself too: a value equal to a bound belongs to that bound's bucket.
    values += list(BUCKETS)

    for i, value in enumerate(values):
        kind = "text" if i % 3 else "media"
        metrics.count(counted, kind)
        counted_directly.labels(kind).inc()
        metrics.observe(timed, value)
        timed_directly.observe(value)
    before = samples(held)  # held, not yet in Prometheus
    assert ("turns_total", (("kind", "text"),)) not in before
    assert before[("seconds_count", ())] == 0.0

    metrics.flush()
    assert samples(held) == samples(direct)
    metrics.flush()  # nothing held twice
    assert samples(held) == samples(direct)


def test_metrics_are_flushed_before_they_are_rendered() -> None:
    metrics.count(metrics.WEBHOOK_REQUESTS, "incoming", "299")
    body, _ = metrics.render()
    assert b'botkit_webhook_requests_total{endpoint="incoming",status="299"} 1.0' in body
