"""Graceful shutdown: the turn in flight completes and its reply leaves; new webhooks do not get in.

Against the real command (SIGTERM to ``botkit run``), and against the
service itself (``Service.stop()``), which answers 503 to webhooks that
arrive while it stops.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from botkit import Bot, Context, RetryPolicy
from botkit.delivery import OutboxWorkerConfig
from botkit.service import create_app, load_settings, serve_app
from bots import echo
from tests.service._harness import (
    API_KEY,
    CALLBACK_SECRET,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    incoming,
    port_refuses,
    wait_for,
)
from tests.service.conftest import Provider

ANNA = "79031234567"


@dataclass
class Gate:
    """An HTTP endpoint that holds each request until the test opens it."""

    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def endpoint(self, request: Request) -> PlainTextResponse:
        self.arrived.set()
        await self.opened.wait()
        return PlainTextResponse("open")


@pytest.fixture
async def gate() -> AsyncIterator[Gate]:
    gate = Gate()
    app = Starlette(routes=[Route("/gate", gate.endpoint)])
    async with serve_app(app) as url:
        gate.url = f"{url}/gate"
        yield gate
        gate.opened.set()


async def test_sigterm_lets_the_turn_in_flight_finish_and_its_reply_leave(
    provider: Provider, gate: Gate, processes: list[BotProcess], tmp_path: Path
) -> None:
    emulator = provider.emulator
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_CALLBACK_SECRET=CALLBACK_SECRET,
        BOTKIT_DEVINO_URL=provider.url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="GateCo",
        GATE_URL=gate.url,
    )
    service = BotProcess(
        ["run", "tests.service.gatebot:bot", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "botkit.log",
    )
    processes.append(service)
    service.start()
    await service.wait_healthy(url)
    emulator.webhook_url = f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"

    in_flight = asyncio.create_task(emulator.inject(ANNA, "first"))
    await asyncio.wait_for(gate.arrived.wait(), 10)

    service.signal(signal.SIGTERM)
    await wait_for(lambda: port_refuses(port), what="the service to stop taking connections")
    async with httpx.AsyncClient() as http:
        try:
            late = await http.post(emulator.webhook_url, json=incoming(ANNA, "late"))
        except httpx.ConnectError:
            pass
        else:
            assert late.status_code == 503
    assert service.running, "the service waits for the turn in flight"

    gate.opened.set()
    answered = await in_flight
    assert (answered.status_code, answered.body) == (200, "")
    [reply] = await emulator.wait_for_messages(1)
    assert reply.received["text"] == "done: first"
    await service.wait_exit()
    log = service.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
    assert [m.received["text"] for m in emulator.messages] == ["done: first"]


async def test_service_stop_answers_503_meanwhile_and_flushes_the_reply(
    provider: Provider,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    bot = Bot("held")

    @bot.text()
    async def held(ctx: Context) -> None:
        entered.set()
        await release.wait()
        await ctx.reply(f"done: {ctx.text}")

    settings = load_settings(
        devino_url=provider.url,
        devino_api_key=API_KEY,
        webhook_token=WEBHOOK_TOKEN,
        sender="HeldCo",
    )
    app = create_app(bot, settings)
    service = app.state.service
    transport = httpx.ASGITransport(app=app)
    webhook = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"
    await service.start()
    async with httpx.AsyncClient(transport=transport, base_url="http://botkit") as http:
        first = asyncio.create_task(http.post(webhook, json=incoming(ANNA, "first")))
        await asyncio.wait_for(entered.wait(), 10)

        stopping = asyncio.create_task(service.stop())
        await wait_for(lambda: not service.accepting, what="the service to begin stopping")
        late = await http.post(webhook, json=incoming(ANNA, "late"))
        assert late.status_code == 503
        assert late.headers["retry-after"]
        assert (await http.get("/readyz")).status_code == 503
        assert not stopping.done(), "stop() waits for the turn in flight"

        release.set()
        answered = await first
        assert (answered.status_code, answered.content) == (200, b"")
        await asyncio.wait_for(stopping, 15)
    assert [m.received["text"] for m in provider.emulator.messages] == ["done: first"]


async def test_what_could_not_be_sent_at_shutdown_is_sent_by_the_next_instance(
    provider: Provider, redis_url: str, redis_prefix: str
) -> None:
    emulator = provider.emulator
    settings = load_settings(
        devino_url=provider.url,
        devino_api_key=API_KEY,
        webhook_token=WEBHOOK_TOKEN,
        sender="EchoCo",
        redis_url=redis_url,
        key_prefix=redis_prefix,
    )
    quick = OutboxWorkerConfig(
        retry=RetryPolicy(attempts=None, base_delay=0.05, max_delay=0.1), block=0.1, claim_idle=0.5
    )
    webhook = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"

    # The provider is down while the first instance runs and stops.
    emulator.fail_next(10_000, status=503)
    first = create_app(echo.bot, settings, sender_config=quick)
    await first.state.service.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=first), base_url="http://botkit"
    ) as http:
        answer = await http.post(webhook, json=incoming(ANNA, "hi"))
        assert answer.status_code == 200
    await emulator.wait_until(lambda: len(emulator.requests) >= 2, what="send attempts")
    await first.state.service.stop(grace=0.5)
    assert emulator.messages == []

    # The provider is back; another instance takes over what was left.
    emulator.clear_faults()
    second = create_app(echo.bot, settings, sender_config=quick)
    await second.state.service.start()
    try:
        [reply] = await emulator.wait_for_messages(1)
        assert reply.received["text"] == "echo #1: hi"
    finally:
        await second.state.service.stop()
