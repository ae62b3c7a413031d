"""``ctx.download_media`` against the real service: where it fetches from, and how much.

The bot runs under uvicorn (:class:`~botkit.testing.LiveBot`) with the
service's own settings; users send media through the real webhook. Every
media host here is a local server, so the refusals themselves show that
loopback is refused by default, and the allowed paths use the allow-list.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from botkit import Bot, Context, MediaBlocked, MediaError
from botkit.service import serve_app
from botkit.testing import LiveBot

ANNA = "79031234567"
PHOTO = b"\xff\xd8" + bytes(range(256)) * 40


class MediaHost:
    """A media server that counts what it was asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/photo.jpg", self.photo),
                Route("/hop/{n:int}", self.hop),
                Route("/to", self.to),
                Route("/slow", self.slow),
            ]
        )
        self.release = asyncio.Event()

    async def photo(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return Response(PHOTO, media_type="image/jpeg")

    async def hop(self, request: Request) -> Response:
        """``/hop/N`` redirects N times, then serves the photo."""
        self.requests.append(request.url.path)
        n = request.path_params["n"]
        return RedirectResponse(f"/hop/{n - 1}" if n > 1 else "/photo.jpg", status_code=302)

    async def to(self, request: Request) -> Response:
        """``/to?url=U`` redirects to U."""
        self.requests.append(request.url.path)
        return RedirectResponse(request.query_params["url"], status_code=307)

    async def slow(self, request: Request) -> Response:
        """Answers only when the test lets it."""
        await self.release.wait()
        return Response(PHOTO, media_type="image/jpeg")


@contextlib.asynccontextmanager
async def media_host() -> AsyncIterator[MediaHost]:
    host = MediaHost()
    async with serve_app(host.app) as url:
        host.url = url
        try:
            yield host
        finally:
            host.release.set()


@pytest.fixture
async def host() -> AsyncIterator[MediaHost]:
    async with media_host() as host:
        yield host


def downloader() -> tuple[Bot, list[Any]]:
    """A bot that downloads each media message and keeps the bytes or the error."""
    bot = Bot("media-guard")
    outcomes: list[Any] = []

    @bot.media()
    async def download(ctx: Context) -> None:
        try:
            outcomes.append(await ctx.download_media())
        except MediaError as exc:
            outcomes.append(exc)
        await ctx.reply("seen")

    return bot, outcomes


async def _send_media(live: LiveBot, url: str, outcomes: list[Any]) -> Any:
    """The user sends a picture at ``url``; what the handler's download gave."""
    before = len(outcomes)
    answer = await live.say(ANNA, content_url=url, content_type="image/jpeg")
    assert answer.status_code == 200
    assert len(outcomes) == before + 1
    return outcomes[-1]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
    ],
)
async def test_media_on_an_inside_address_is_refused_before_any_request(
    host: MediaHost, address: str, reason: str
) -> None:
    port = host.url.rsplit(":", 1)[1]
    bot, outcomes = downloader()
    async with LiveBot(bot) as live:
        refused = await _send_media(live, f"http://{address}:{port}/photo.jpg", outcomes)
    assert isinstance(refused, MediaBlocked)
    assert refused.reason == reason
    assert "BOTKIT_MEDIA_ALLOW_HOSTS" in str(refused)
    assert host.requests == []


async def test_the_emulators_control_api_is_not_readable_through_a_media_url() -> None:
    bot, outcomes = downloader()
    async with LiveBot(bot) as live:
        control = f"{live.service.settings.devino_url}/_emulator/messages"
        refused = await _send_media(live, control, outcomes)
    assert isinstance(refused, MediaBlocked)
    assert refused.reason == "loopback"


async def test_an_allowed_host_is_fetched_and_its_redirects_are_checked_again(
    host: MediaHost,
) -> None:
    port = host.url.rsplit(":", 1)[1]
    bot, outcomes = downloader()
    # "localhost" is allowed by name; 127.0.0.1, where it redirects, is not.
    async with media_host() as inside, LiveBot(bot, media_allow_hosts="localhost") as live:
        fetched = await _send_media(live, f"http://localhost:{port}/photo.jpg", outcomes)
        assert fetched == PHOTO
        target = f"{inside.url}/photo.jpg"
        refused = await _send_media(live, f"http://localhost:{port}/to?url={target}", outcomes)
        assert isinstance(refused, MediaBlocked)
        assert (refused.url, refused.reason) == (target, "loopback")
        assert inside.requests == []
        # Only http and https, at every hop.
        sneaky = await _send_media(
            live, f"http://localhost:{port}/to?url=file:///etc/passwd", outcomes
        )
        assert isinstance(sneaky, MediaBlocked)
        assert sneaky.reason == "scheme"
    assert host.requests == ["/photo.jpg", "/to", "/to"]


async def test_at_most_five_redirects_are_followed(host: MediaHost) -> None:
    port = host.url.rsplit(":", 1)[1]
    bot, outcomes = downloader()
    async with LiveBot(bot, media_allow_hosts="localhost, 127.0.0.0/8") as live:
        assert await _send_media(live, f"http://localhost:{port}/hop/5", outcomes) == PHOTO
        too_many = await _send_media(live, f"http://127.0.0.1:{port}/hop/6", outcomes)
    assert isinstance(too_many, MediaError)
    assert "more than 5 redirects" in str(too_many)
    assert host.requests.count("/photo.jpg") == 1


async def test_the_size_cap_setting_lowers_the_providers_cap(host: MediaHost) -> None:
    bot, outcomes = downloader()
    async with LiveBot(bot, media_allow_hosts="127.0.0.1", media_max_bytes=1000) as live:
        too_large = await _send_media(live, f"{host.url}/photo.jpg", outcomes)
    assert type(too_large).__name__ == "MediaTooLarge"
    assert "limited to 1000 bytes" in str(too_large)


async def test_the_timeout_setting_bounds_a_whole_download(host: MediaHost) -> None:
    bot, outcomes = downloader()
    async with LiveBot(bot, media_allow_hosts="127.0.0.1", media_timeout=0.3) as live:
        slow = await _send_media(live, f"{host.url}/slow", outcomes)
    assert type(slow).__name__ == "MediaDownloadFailed"
    assert "longer than 0.3s" in str(slow)
