"""Request bodies against the real service: too large, too slow, cut short by a shutdown.

Clients here behave as real ones do: Python's urllib writes its whole body
before it reads the answer; a slow or hostile client trickles its body a few
bytes at a time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from botkit import Bot, Context
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import (
    WEBHOOK_TOKEN,
    BotProcess,
    free_port,
    incoming,
    run_env,
)
from tests.service.conftest import Provider

ANNA = "79031234567"
MIB = 1024 * 1024


@pytest.fixture
async def live() -> AsyncIterator[LiveBot]:
    async with LiveBot(echo.bot, body_timeout=1.0) as live:
        yield live


def _urllib_post(url: str, body: bytes) -> tuple[int, bytes]:
    """POST as urllib does (the whole body first, then the answer): the status and body read."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def _botkit_run(
    provider: Provider, processes: list[BotProcess], tmp_path: Path, **env: str
) -> str:
    """``botkit run bots.echo`` on a free port, healthy; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = BotProcess(
        ["run", "bots.echo", "--host", "127.0.0.1", "--port", str(port)],
        run_env(provider.url, **env),
        tmp_path / "botkit.log",
    )
    processes.append(service)
    service.start()
    await service.wait_healthy(url)
    return url


async def test_twenty_urllib_posts_of_3_mib_all_read_the_413(
    provider: Provider, processes: list[BotProcess], tmp_path: Path
) -> None:
    url = f"{await _botkit_run(provider, processes, tmp_path)}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    body = json.dumps(incoming(ANNA, "x" * (3 * MIB))).encode()
    answers = [await asyncio.to_thread(_urllib_post, url, body) for _ in range(20)]
    assert [status for status, _ in answers] == [413] * 20
    assert all(json.loads(text)["error"] == "body_too_large" for _, text in answers)
    # A body within the limit that nobody reads (a wrong token) is drained too.
    wrong = url.replace(WEBHOOK_TOKEN, "not-the-token")
    within = json.dumps(incoming(ANNA, "x" * (900 * 1024))).encode()
    unread = [await asyncio.to_thread(_urllib_post, wrong, within) for _ in range(20)]
    assert [status for status, _ in unread] == [401] * 20
    # The service still takes a body within the limit.
    fits = json.dumps(incoming(ANNA, "hi")).encode()
    assert await asyncio.to_thread(_urllib_post, url, fits) == (200, b"")
    [reply] = await provider.emulator.wait_for_messages(1)
    assert reply.received["text"] == "echo #1: hi"


async def _exchange(url: str, head: bytes, body: bytes) -> bytes:
    """Write a request whole, without reading meanwhile (as urllib does); return the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(20):
            return await reader.read()
    finally:
        writer.close()


async def test_a_chunked_body_growing_past_the_limit_is_read_to_its_end_and_answered_413(
    live: LiveBot,
) -> None:
    head = (
        f"POST /whatsapp/incoming/{live.token} HTTP/1.1\r\nHost: botkit\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    chunk = b" " * 64 * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(48)) + b"0\r\n\r\n"
    answers = [await _exchange(live.url, head, body) for _ in range(5)]
    assert all(a.startswith(b"HTTP/1.1 413 ") and b"body_too_large" in a for a in answers)


async def _trickle(url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a request whose body promises 1,000 bytes and send only a few of them."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: botkit\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"incomingMessageId": '.encode()
    )
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    try:
        async with asyncio.timeout(20):
            return await reader.read()
    finally:
        writer.close()


async def test_a_body_not_complete_within_the_body_timeout_gets_408(live: LiveBot) -> None:
    path = f"/whatsapp/incoming/{live.token}"
    clients = [await _trickle(live.url, path) for _ in range(20)]
    answers = await asyncio.gather(*(_answer(r, w) for r, w in clients))
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in a for a in answers)
    assert live.emulator.messages == []


async def test_sigterm_answers_requests_still_sending_their_body_503_and_exits(
    provider: Provider, processes: list[BotProcess], tmp_path: Path
) -> None:
    url = await _botkit_run(provider, processes, tmp_path, BOTKIT_BODY_TIMEOUT="600")
    [service] = processes
    path = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"
    clients = [await _trickle(url, path) for _ in range(50)]
    # A request sent after them is answered only once the server read what came before.
    canary = b"GET /healthz HTTP/1.1\r\nHost: botkit\r\nConnection: close\r\n\r\n"
    assert (await _exchange(url, canary, b"")).startswith(b"HTTP/1.1 200 ")

    service.signal(signal.SIGTERM)
    answers = await asyncio.gather(*(_answer(r, w) for r, w in clients))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 503 Service Unavailable"] * 50
    # Far sooner than the body timeout (10 minutes here) or the server's graceful 15 s.
    # (uvicorn ends by re-raising the signal it handled: the exit code says SIGTERM.)
    assert await service.wait_exit(within=10) == -signal.SIGTERM
    assert "Traceback" not in service.log()


async def test_a_turn_the_server_cuts_off_at_the_end_of_its_graceful_shutdown_gets_503() -> None:
    entered = asyncio.Event()
    bot = Bot("stuck")

    @bot.text()
    async def stuck(ctx: Context) -> None:
        entered.set()
        await asyncio.Event().wait()  # never answers

    async with httpx.AsyncClient(timeout=30) as http:
        async with LiveBot(bot) as live:
            webhook = f"{live.url}/whatsapp/incoming/{live.token}"
            answer = asyncio.create_task(http.post(webhook, json=incoming(ANNA, "hi")))
            await asyncio.wait_for(entered.wait(), 10)
            # Leaving the block stops the server: it waits (5 s), then cancels the request.
        cut_off = await answer
    assert cut_off.status_code == 503
    assert cut_off.headers["retry-after"]
