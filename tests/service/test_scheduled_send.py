"""Scheduled sends: ``POST /api/send`` with "at" or "after", ``DELETE /api/scheduled/{id}``.

The echo bot served for real (LiveBot: uvicorn and the provider emulator over
HTTP); its clock is a running ManualClock, so moving it makes a scheduled
message due, and the service's timer worker sends it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bots import echo
from tests.service._harness import wait_for
from tests.service.test_app import ANNA, API_TOKEN, Stack, _bearer, serve


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The echo bot, with the send API enabled."""
    async with serve(echo.bot, api_token=API_TOKEN) as s:
        yield s


async def schedule(stack: Stack, **body: object) -> str:
    answer = await stack.http.post("/api/send", json={"to": ANNA, **body}, headers=_bearer())
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "scheduled"
    scheduled: str = answer.json()["id"]
    return scheduled


async def test_a_message_scheduled_after_seconds_is_sent_when_due(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    await schedule(stack, text="your table is ready", after=0.2)
    await stack.live.replies(2, within=15)
    assert stack.replies(ANNA) == ["echo #1: hi", "your table is ready"]


async def refused_outside_the_window(stack: Stack) -> float:
    """The service's count of messages refused as outside the window (0 before the first)."""
    metrics = (await stack.http.get("/metrics")).text
    found = re.search(
        r'^botkit_messages_refused_total\{reason="outside_session_window"\} (\S+)$', metrics, re.M
    )
    return float(found[1]) if found else 0.0


async def test_the_window_is_decided_when_the_message_is_due(stack: Stack) -> None:
    refused_before = await refused_outside_the_window(stack)
    await stack.live.say(ANNA, "hi")
    await stack.live.replies(1)
    # Scheduled while the window is open; it closes before they are due.
    at = (datetime.now(UTC) + timedelta(hours=30)).isoformat()
    await schedule(stack, text="text only: refused when due", at=at)
    await schedule(
        stack,
        text="goes as its template",
        after=30 * 3600,
        template={"id": "come_back", "params": {"1": "Anna"}},
    )
    stack.live.clock.advance(hours=31)
    [_, sent] = await stack.live.replies(2, within=15)
    assert sent.received.get("templateId") == "come_back"

    async def counted() -> bool:
        return await refused_outside_the_window(stack) == refused_before + 1

    await wait_for(counted, what="the text-only message refused when due")
    await stack.settled()
    assert len(stack.live.emulator.messages) == 2, "the text-only message was not sent"


async def test_delete_cancels_a_scheduled_message(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    cancelled = await schedule(stack, text="cancelled", after=600)
    await schedule(stack, text="kept", after=601)
    answer = await stack.http.delete(f"/api/scheduled/{cancelled}")
    assert answer.status_code == 401
    answer = await stack.http.delete(f"/api/scheduled/{cancelled}", headers=_bearer())
    assert (answer.status_code, answer.json()) == (200, {"status": "cancelled"})
    answer = await stack.http.delete(f"/api/scheduled/{cancelled}", headers=_bearer())
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    stack.live.clock.advance(minutes=11)
    await stack.live.replies(2, within=15)
    await stack.settled()
    assert stack.replies(ANNA) == ["echo #1: hi", "kept"]


async def test_bad_schedules_are_422_and_schedule_nothing(stack: Stack) -> None:
    for body, what in [
        ({"text": "x", "at": "2030-01-01T09:00:00"}, "timezone"),
        ({"text": "x", "after": -1}, "after"),
        ({"text": "x", "after": 5, "at": "2030-01-01T09:00:00Z"}, "exactly one"),
        ({"after": 5}, "give text"),
    ]:
        answer = await stack.http.post("/api/send", json={"to": ANNA, **body}, headers=_bearer())
        assert answer.status_code == 422, (body, answer.text)
        assert what in answer.text, (body, answer.text)
    assert (await stack.live.service.store.load(ANNA)).timers == {}
    for bad in ("nonsense", f"{ANNA}.zz-zz", "1.2.3"):
        answer = await stack.http.delete(f"/api/scheduled/{bad}", headers=_bearer())
        assert answer.status_code == 404, bad
