"""The service's smaller edges, against the real service (uvicorn, the emulator over HTTP).

A provider time far in the future, a webhook URL with a trailing slash,
guessable references, a runaway reply, phone numbers in error messages,
and what a start leaves in the temporary folder.
"""

from __future__ import annotations

import itertools
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from botkit import Bot, Context, OutsideSessionWindow, ReplyTooLong
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import (
    API_TOKEN,
    BotProcess,
    free_port,
    incoming,
    run_env,
)
from tests.service.conftest import Provider

ANNA = "79031234567"
YEAR_2100 = 4_102_444_800


@pytest.fixture
async def live() -> AsyncIterator[LiveBot]:
    async with LiveBot(echo.bot, api_token=API_TOKEN) as live:
        yield live


def _api(live: LiveBot) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    )


async def test_a_provider_time_far_in_the_future_does_not_keep_the_window_open(
    live: LiveBot,
) -> None:
    webhook = f"{live.url}/whatsapp/incoming/{live.token}"
    async with _api(live) as http:
        answer = await http.post(webhook, json=incoming(ANNA, "hi", ts=YEAR_2100))
        assert answer.status_code == 200
        await live.replies(1)
        conversation = await live.service.store.load(ANNA)
        assert conversation.last_inbound <= live.clock.now() + 300  # bounded to now + 5 min
        live.clock.advance(hours=25)
        late = await http.post("/api/send", json={"to": ANNA, "text": "still there?"})
    assert late.status_code == 409
    assert late.json()["error"] == "outside_session_window"


async def test_the_event_keeps_the_providers_own_time() -> None:
    seen: list[float] = []
    bot = Bot("times")

    @bot.text()
    async def keep(ctx: Context) -> None:
        seen.append(ctx.message.timestamp)

    async with LiveBot(bot) as live, httpx.AsyncClient(base_url=live.url) as http:
        webhook = f"/whatsapp/incoming/{live.token}"
        assert (
            await http.post(webhook, json=incoming(ANNA, "hi", ts=YEAR_2100))
        ).status_code == 200
    assert seen == [YEAR_2100]


async def test_a_trailing_slash_on_the_webhook_url_works_and_nothing_redirects(
    live: LiveBot,
) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        answer = await http.post(f"/whatsapp/incoming/{live.token}/", json=incoming(ANNA, "slash"))
        assert (answer.status_code, answer.content) == (200, b"")
        [reply] = await live.replies(1)
        assert reply.received["text"] == "echo #1: slash"
        wrong = await http.post("/whatsapp/incoming/not-the-token/", json=incoming(ANNA, "x"))
        unknown = await http.post(f"/whatsapp/nowhere/{live.token}/", json={})
    assert wrong.status_code == 401
    assert unknown.status_code == 404
    for answer in (wrong, unknown):
        assert "location" not in answer.headers
        assert live.token not in answer.text and "not-the-token" not in answer.text


async def test_message_references_from_the_send_api_are_not_guessable(live: LiveBot) -> None:
    await live.say(ANNA, "hi")
    async with _api(live) as http:
        answers = [
            await http.post("/api/send", json={"to": ANNA, "text": f"news {i}"}) for i in range(20)
        ]
    refs = [ref for a in answers for ref in a.json()["messages"]]
    assert len(set(refs)) == 20
    # No shared prefix, no counting up: one reference says nothing about the next.
    assert len({ref[:6] for ref in refs}) == 20
    numbers = [int(ref, 16) for ref in refs]
    assert all(abs(b - a) > 2**64 for a, b in itertools.pairwise(numbers))


async def test_a_runaway_reply_is_refused_before_it_is_split() -> None:
    errors: list[BaseException] = []
    bot = Bot("runaway")

    @bot.text()
    async def dump(ctx: Context) -> None:
        await ctx.reply("word " * 180_000)  # 900 KB

    @bot.error()
    async def failed(ctx: Context, error: BaseException) -> None:
        errors.append(error)
        await ctx.reply("sorry, that answer was too long")

    async with LiveBot(bot, api_token=API_TOKEN) as live, _api(live) as http:
        await live.say(ANNA, "everything please")
        [reply] = await live.replies(1)
        big = await http.post("/api/send", json={"to": ANNA, "text": "x" * 1_000_000})
        shorter = await http.post("/api/send", json={"to": ANNA, "text": "x" * 4096})
        await live.replies(1 + 5)  # 4,096 characters go as five parts of at most 1,000
    assert reply.received["text"] == "sorry, that answer was too long"
    [error] = errors
    assert isinstance(error, ReplyTooLong)
    assert (error.length, error.limit) == (900_000, 4096)
    assert big.status_code == 422
    assert big.json()["error"] == "reply_too_long"
    assert shorter.status_code == 202
    assert len(live.emulator.messages) == 6


async def test_phone_numbers_are_masked_in_error_messages_and_kept_as_attributes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = "79035550123"
    raised: list[OutsideSessionWindow] = []
    bot = Bot("notify")

    @bot.text()
    async def notify(ctx: Context) -> None:
        try:
            await ctx.bot.send(stranger, "hello")  # they never wrote: the window is closed
        except OutsideSessionWindow as exc:
            raised.append(exc)
            raise

    caplog.set_level(logging.DEBUG)
    async with LiveBot(bot, api_token=API_TOKEN) as live, _api(live) as http:
        await live.say(ANNA, "notify them")
        closed = await http.post("/api/send", json={"to": "+7 903 555-01-23", "text": "hi"})
        invalid = await http.post("/api/send", json={"to": "0903 555 0123", "text": "hi"})
    [exc] = raised
    assert exc.user == stranger and stranger not in str(exc) and "...0123" in str(exc)
    assert closed.status_code == 409
    assert invalid.status_code == 422
    for answer in (closed, invalid):
        assert "5550123" not in answer.json()["message"]
        assert "0123" in answer.json()["message"]
    assert "5550123" not in caplog.text
    assert "...0123" in caplog.text  # the unhandled error was logged, masked


async def test_botkit_run_leaves_no_metrics_folder_behind(
    provider: Provider, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    env = run_env(
        provider.url,
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        TMPDIR=str(scratch),
    )
    service = BotProcess(
        ["run", "bots.echo", "--port", str(port), "--workers", "2"], env, tmp_path / "log"
    )
    service.start()
    try:
        await service.wait_healthy(f"http://127.0.0.1:{port}", workers=2)
        assert [p.name[:15] for p in scratch.iterdir()] == ["botkit-metrics-"]
        service.signal(signal.SIGTERM)
        await service.wait_exit()
    finally:
        service.stop()
        print(service.log())
    assert list(scratch.iterdir()) == []
