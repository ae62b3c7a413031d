"""OutageLog: an outage is a line when it starts, a reminder per period, a line when it ends."""

from __future__ import annotations

import logging

import pytest

from botkit.storage.base import StorageUnavailable
from botkit.storage.outage import OutageLog


def test_failures_are_counted_not_logged_until_the_period_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = OutageLog(every=30.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="botkit.store")
    down = StorageUnavailable("Redis did not answer")

    for _ in range(50):  # a sender retrying, webhooks failing: 50 failures in 10 s
        outage.failed(down)
        now[0] += 0.2
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        "the conversation store is unavailable: Redis did not answer; "
        "retrying (one line every 30s while it lasts)"
    )
    assert caplog.records[0].exc_info is None

    now[0] = 131.0
    outage.failed(down)
    assert caplog.records[-1].getMessage() == (
        "the conversation store is still unavailable after 31s "
        "(50 failures since the last line): Redis did not answer"
    )

    now[0] = 140.0
    outage.recovered()
    outage.recovered()  # a success while nothing was failing says nothing
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]
    assert caplog.records[-1].getMessage() == (
        "the conversation store answers again after 40.0s (51 failures)"
    )
    assert not outage.ongoing

    outage.failed(down)  # the next outage starts with a line of its own
    assert len(caplog.records) == 4 and caplog.records[-1].levelname == "WARNING"
