"""Logging: one structured line per turn, users masked, secrets never printed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from botkit import Bot, Context, ManualClock
from botkit.devtools.emulator import Emulator
from botkit.service import (
    ConsoleFormatter,
    JsonFormatter,
    LoopBatchedHandler,
    configure_logging,
)
from botkit.storage.memory import MemoryStore
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import API_KEY, API_TOKEN, SECRETS, WEBHOOK_TOKEN, incoming

ANNA = "79031234567"


def turn_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "botkit.turn" and hasattr(r, "fields")]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as both formatters would write it."""
    lines = []
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        lines += [formatter.format(r) for r in caplog.records]
    return "\n".join(lines)


async def test_one_line_per_turn_with_the_user_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with LiveBot(echo.bot) as live:
        await live.say(ANNA, "hi")
        await live.say(ANNA, content_url="https://cdn.example/a.png", content_type="image/png")
        async with httpx.AsyncClient() as http:
            url = f"{live.url}/whatsapp/incoming/{live.token}"
            message = incoming(ANNA, "twice")
            await http.post(url, json=message)
            await http.post(url, json=message)
        await live.replies(3)

    turns = [r.fields for r in turn_records(caplog) if r.fields["kind"] != "status"]  # type: ignore[attr-defined]
    assert [(t["kind"], t["handler"], t["outcome"]) for t in turns] == [
        ("text", "echo_text", "handled"),
        ("media", "echo_media", "handled"),
        ("text", "echo_text", "handled"),
        ("text", None, "duplicate"),
    ]
    assert {t["user"] for t in turns} == {"...4567"}
    assert all(t["ms"] >= 0 for t in turns)
    assert ANNA not in everything_logged(caplog)


def test_the_json_and_console_formats_of_a_turn_line() -> None:
    record = logging.LogRecord("botkit.turn", logging.INFO, __file__, 1, "turn %s", ("ok",), None)
    record.fields = {  # type: ignore[attr-defined]
        "user": "...4567",
        "kind": "text",
        "handler": "echo_text",
        "outcome": "handled",
        "ms": 1.25,
        "error": None,
    }
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["logger"] == "botkit.turn" and data["level"] == "info"
    assert data["message"] == "turn ok"
    assert data["pid"] == os.getpid()  # which of botkit run's workers wrote it
    assert (data["user"], data["kind"], data["handler"], data["outcome"], data["ms"]) == (
        "...4567",
        "text",
        "echo_text",
        "handled",
        1.25,
    )
    console = ConsoleFormatter().format(record)
    assert "\n" not in console
    assert "turn ok user=...4567 kind=text handler=echo_text outcome=handled ms=1.25" in console
    assert "error=" not in console


async def test_a_failed_turn_logs_its_error_and_outcome(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bot = Bot("fails")

    @bot.text()
    async def explode(ctx: Context) -> None:
        raise ValueError("no good")

    async with LiveBot(bot) as live:
        await live.say(ANNA, "hi")
    [turn] = [r.fields for r in turn_records(caplog)]  # type: ignore[attr-defined]
    assert turn["handler"].endswith("explode") and turn["outcome"] == "error"
    assert "no good" in turn["error"]


class _BrokenStore(MemoryStore):
    """A store with a bug of its own (not a StorageError): a fault tests cannot cause for real."""

    async def begin_turn(self, user: str, key: str | None, **kw: Any) -> Any:
        raise KeyError("a bug in the store")


async def test_secrets_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The test's own HTTP clients (the provider's side) log their URLs; botkit's
    # configure_logging keeps httpx at WARNING too.
    caplog.set_level(logging.WARNING, logger="httpx")
    redis_url = "redis://:svc-redis-pw-Hq4nT0@127.0.0.1:1/0"
    clock = ManualClock()
    async with LiveBot(
        echo.bot,
        clock=clock,
        emulator=Emulator(api_key=API_KEY, clock=clock.now),
        store=_BrokenStore(),
        webhook_token=WEBHOOK_TOKEN,
        api_token=API_TOKEN,
        devino_api_key=API_KEY,
        redis_url=redis_url,
    ) as live:
        async with httpx.AsyncClient(base_url=live.url) as http:
            # A bug of ours: 503 so the provider retries, and a logged traceback.
            answer = await http.post(
                f"/whatsapp/incoming/{WEBHOOK_TOKEN}", json=incoming(ANNA, "hi")
            )
            assert answer.status_code == 503
            await http.post("/whatsapp/incoming/wrong", json=incoming(ANNA, "hi"))
            await http.post(f"/whatsapp/status/{WEBHOOK_TOKEN}", json=[{"messageId": 1}])
            await http.post("/api/send", json={"to": ANNA, "text": "x"}, headers={})
            await http.post(
                "/api/send",
                json={"to": ANNA, "text": "x"},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )
        settings = live.service.settings
        logging.getLogger("test").info("settings: %s / %r", settings, settings)

    logged = everything_logged(caplog)
    assert "unexpected error in the incoming endpoint" in logged
    assert "a bug in the store" in logged
    for secret in SECRETS:
        assert secret not in logged, secret


class _Writes:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _logger(stream: _Writes) -> logging.Logger:
    handler = LoopBatchedHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("botkit.turn")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@pytest.fixture(autouse=True)
def _turn_logger_restored() -> Iterator[None]:
    turn = logging.getLogger("botkit.turn")
    before = turn.handlers[:], turn.propagate, turn.level
    yield
    turn.handlers[:], turn.propagate, level = before
    turn.setLevel(level)


async def test_the_turn_lines_of_one_loop_step_are_written_together_and_in_order() -> None:
    stream = _Writes()
    logger = _logger(stream)
    logger.info("turn 1")
    logger.info("turn 2")
    assert stream.writes == []  # held until the step's callbacks are done
    await asyncio.sleep(0)
    assert stream.writes == ["INFO turn 1\nINFO turn 2\n"]
    logger.info("turn 3")
    logger.warning("turn failed")  # at once, after the lines before it
    assert stream.writes[1:] == ["INFO turn 3\nWARNING turn failed\n"]
    await asyncio.sleep(0)
    assert len(stream.writes) == 2


async def test_other_loggers_lines_are_written_at_once_after_the_held_ones() -> None:
    stream = _Writes()
    turns = _logger(stream)
    other = logging.getLogger("uvicorn.error")
    before = other.handlers[:], other.propagate, other.level
    other.handlers[:], other.propagate = turns.handlers[:], False
    other.setLevel(logging.INFO)
    try:
        turns.info("turn 1")
        other.info("Finished server process")  # a worker may end in this very step
        assert stream.writes == ["INFO turn 1\nINFO Finished server process\n"]
    finally:
        other.handlers[:], other.propagate, level = before
        other.setLevel(level)


def test_outside_an_event_loop_each_line_is_written_at_once() -> None:
    stream = _Writes()
    logger = _logger(stream)
    logger.info("starting")
    assert stream.writes == ["INFO starting\n"]


def test_botkit_run_logs_through_the_batched_handler() -> None:
    root = logging.getLogger()
    before = root.handlers[:], root.level
    try:
        configure_logging("json", "INFO")
        assert isinstance(root.handlers[0], LoopBatchedHandler)
    finally:
        root.handlers[:], level = before
        root.setLevel(level)


def test_a_line_held_when_its_loop_closed_does_not_hold_back_the_next_loops() -> None:
    stream = _Writes()
    logger = _logger(stream)

    async def log_last(message: str) -> None:
        # Logged in the loop's last step: the flush it asks for would come after.
        asyncio.get_running_loop().call_soon(logger.info, message)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(log_last("first loop"))
    loop.close()
    assert stream.writes == []

    async def log_and_yield() -> None:
        logger.info("second loop")
        await asyncio.sleep(0)

    asyncio.run(log_and_yield())
    assert stream.writes == ["INFO first loop\nINFO second loop\n"]
