"""Downloading what users send, from a real HTTP server on a free local port."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from botkit import (
    Bot,
    Context,
    MediaDownloadFailed,
    MediaError,
    MediaExpired,
    MediaKind,
    MediaTooLarge,
)
from botkit.devino.validation import MAX_BYTES
from botkit.service import serve_app
from botkit.testing import BotTester

STICKER_CAP = MAX_BYTES[MediaKind.STICKER]
PHOTO = bytes(range(256)) * 1000


class MediaServer:
    """What the provider's media host does: serve files, forget them, or hang."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/photo.jpg", self.photo),
                Route("/gone/{code:int}", self.gone),
                Route("/error", self.error),
                Route("/flaky/{failures:int}", self.flaky),
                Route("/sticker/{size:int}", self.sticker),
                Route("/streamed/{size:int}", self.streamed),
                Route("/hang", self.hang),
                Route("/stall", self.stall),
            ]
        )

    async def photo(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return Response(PHOTO, media_type="image/jpeg")

    async def gone(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return Response("expired", status_code=request.path_params["code"])

    async def error(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return Response("oops", status_code=502)

    async def flaky(self, request: Request) -> Response:
        """503 for the first ``failures`` requests, then the photo."""
        self.requests.append(request.url.path)
        if len(self.requests) <= request.path_params["failures"]:
            return Response("busy", status_code=503)
        return Response(PHOTO, media_type="image/jpeg")

    async def sticker(self, request: Request) -> Response:
        return Response(b"s" * request.path_params["size"], media_type="image/webp")

    async def streamed(self, request: Request) -> StreamingResponse:
        size = request.path_params["size"]

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                chunk = b"x" * min(64 * 1024, size - sent)
                sent += len(chunk)
                yield chunk

        # No Content-Length: the size shows only while streaming.
        return StreamingResponse(body(), media_type="image/webp")

    async def hang(self, request: Request) -> Response:
        await self.release.wait()
        return Response(b"late")

    async def stall(self, request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first bytes"
            await self.release.wait()
            yield b"the rest"

        return StreamingResponse(body(), media_type="image/jpeg")


@pytest.fixture
async def media_host() -> AsyncIterator[tuple[MediaServer, str]]:
    server = MediaServer()
    async with serve_app(server.app) as base_url:
        try:
            yield server, base_url
        finally:
            server.release.set()  # let hanging requests finish, so the server stops at once


def downloader(**options: Any) -> tuple[Bot, list[Any]]:
    """A bot that downloads every media message it gets, with ``options``."""
    bot = Bot("media")
    results: list[Any] = []

    @bot.media()
    async def download(ctx: Context) -> None:
        results.append(await ctx.download_media(**options))
        await ctx.reply("got it")

    @bot.text()
    async def text(ctx: Context) -> None:
        await ctx.download_media()

    return bot, results


async def test_media_downloads_as_bytes(media_host: tuple[MediaServer, str]) -> None:
    server, base = media_host
    bot, results = downloader()
    async with BotTester(bot) as chat:
        assert (await chat.send_media(f"{base}/photo.jpg", "image/jpeg")).texts == ["got it"]
    assert results == [PHOTO]
    assert server.requests == ["/photo.jpg"]


async def test_media_downloads_to_a_path(
    media_host: tuple[MediaServer, str], tmp_path: Path
) -> None:
    _, base = media_host
    target = tmp_path / "photo.jpg"
    bot, results = downloader(path=target)
    async with BotTester(bot) as chat:
        await chat.send_media(f"{base}/photo.jpg", "image/jpeg")
    assert results == [target]
    assert target.read_bytes() == PHOTO


async def test_a_file_exactly_at_the_cap_of_its_kind_is_accepted(
    media_host: tuple[MediaServer, str],
) -> None:
    _, base = media_host
    bot, results = downloader()
    async with BotTester(bot) as chat:
        await chat.send_media(f"{base}/sticker/{STICKER_CAP}", "image/webp")
        await chat.send_media(f"{base}/streamed/{STICKER_CAP}", "image/webp")
    assert [len(r) for r in results] == [STICKER_CAP, STICKER_CAP]


@pytest.mark.parametrize("code", [404, 410])
async def test_an_expired_url_raises_media_expired(
    media_host: tuple[MediaServer, str], code: int
) -> None:
    _, base = media_host
    bot, _ = downloader()
    async with BotTester(bot) as chat:
        with pytest.raises(MediaExpired, match=f"answered {code}") as caught:
            await chat.send_media(f"{base}/gone/{code}", "image/jpeg")
    assert isinstance(caught.value, MediaError)  # one except clause catches them all


@pytest.mark.parametrize("route", ["sticker", "streamed"], ids=["content-length", "chunked"])
async def test_a_file_over_the_cap_of_its_kind_raises_media_too_large(
    media_host: tuple[MediaServer, str], tmp_path: Path, route: str
) -> None:
    _, base = media_host
    target = tmp_path / "sticker.webp"
    bot, results = downloader(path=target)
    async with BotTester(bot) as chat:
        with pytest.raises(MediaTooLarge, match=f"sticker files are limited to {STICKER_CAP}"):
            await chat.send_media(f"{base}/{route}/{STICKER_CAP + 1}", "image/webp")
    assert results == []
    assert not target.exists()  # nothing partial is left behind


async def test_a_download_that_takes_too_long_fails_with_the_timeout_in_the_message(
    media_host: tuple[MediaServer, str], tmp_path: Path
) -> None:
    _, base = media_host
    target = tmp_path / "slow.jpg"
    bot, _ = downloader(path=target, timeout=0.2)
    async with BotTester(bot) as chat:
        with pytest.raises(MediaDownloadFailed, match=r"longer than 0\.2s"):
            await chat.send_media(f"{base}/hang", "image/jpeg")
        with pytest.raises(MediaDownloadFailed, match=r"longer than 0\.2s"):
            await chat.send_media(f"{base}/stall", "image/jpeg")
    assert not target.exists()


async def test_server_and_network_errors_raise_media_download_failed(
    media_host: tuple[MediaServer, str],
) -> None:
    _, base = media_host
    bot, _ = downloader()
    async with BotTester(bot) as chat:
        with pytest.raises(MediaDownloadFailed, match="HTTP 502"):
            await chat.send_media(f"{base}/error", "image/jpeg")
        with pytest.raises(MediaDownloadFailed):
            await chat.send_media("http://127.0.0.1:9/photo.jpg", "image/jpeg")


async def test_download_media_needs_a_media_message() -> None:
    bot, _ = downloader()
    async with BotTester(bot) as chat:
        with pytest.raises(TypeError, match="needs a media message"):
            await chat.send_text("no media here")


async def test_a_download_to_a_path_streams_without_holding_the_file_in_memory(
    media_host: tuple[MediaServer, str], tmp_path: Path
) -> None:
    _, base = media_host
    size = 8 * 1024 * 1024
    target = tmp_path / "report.pdf"
    bot, _ = downloader(path=target)
    async with BotTester(bot) as chat:
        await chat.send_media(f"{base}/streamed/1000", "application/pdf")  # opens the client
        tracemalloc.start()
        try:
            await chat.send_media(f"{base}/streamed/{size}", "application/pdf")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert target.stat().st_size == size
    assert peak < size / 4


async def test_a_server_error_is_retried_with_the_retry_policy(
    media_host: tuple[MediaServer, str],
) -> None:
    # The default policy: three tries in all (BOTKIT_RETRY_* set the backoff in the service).
    server, base = media_host
    bot, results = downloader()
    async with BotTester(bot) as chat:
        assert (await chat.send_media(f"{base}/flaky/2", "image/jpeg")).texts == ["got it"]
        assert results == [PHOTO]
        assert server.requests == ["/flaky/2"] * 3
        server.requests.clear()
        with pytest.raises(MediaDownloadFailed, match="HTTP 502") as failed:
            await chat.send_media(f"{base}/error", "image/jpeg")
    assert failed.value.transient
    assert server.requests == ["/error"] * 3  # three tries, then it gives up


async def test_an_expired_url_is_not_retried(media_host: tuple[MediaServer, str]) -> None:
    server, base = media_host
    bot, _ = downloader()
    async with BotTester(bot) as chat:
        with pytest.raises(MediaExpired):
            await chat.send_media(f"{base}/gone/404", "image/jpeg")
    assert server.requests == ["/gone/404"]
