"""Fixtures for the provider edge: the emulator served over real HTTP, a client
pointed at it, and a tiny HTTP receiver for callbacks and webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from botkit.devino import DevinoClient, RetryPolicy
from botkit.devtools.emulator import Emulator
from botkit.service import serve_app

API_KEY = "test-key-Zq81xW"
"""Distinctive, so a test can search any output for it."""

SENDER = "MyCompany"
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


class Receiver:
    """An HTTP endpoint that records every JSON body posted to it.

    `failures` makes it answer 500 to that many posts first (to see retries).
    """

    def __init__(self) -> None:
        self.url = ""
        self.posts: list[tuple[str, Any]] = []
        self.failures = 0
        self._changed = asyncio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])

    async def _record(self, request: Request) -> Response:
        self.posts.append((request.url.path, await request.json()))
        self._changed.set()
        if self.failures > 0:
            self.failures -= 1
            return Response(status_code=500)
        return Response(status_code=200)

    def bodies(self, path: str) -> list[Any]:
        """The bodies posted to `path`, oldest first."""
        return [body for posted_path, body in self.posts if posted_path == path]

    async def wait_for(self, count: int, path: str, within: float = 5.0) -> list[Any]:
        """Wait until `count` bodies were posted to `path`; return them."""
        async with asyncio.timeout(within):
            while len(self.bodies(path)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.bodies(path)


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(api_key=API_KEY)


@pytest.fixture
async def emulator_url(emulator: Emulator) -> AsyncIterator[str]:
    async with emulator.serve() as url:
        yield url


@pytest.fixture
async def client(emulator_url: str) -> AsyncIterator[DevinoClient]:
    async with DevinoClient(emulator_url, api_key=API_KEY, retry=FAST_RETRY) as devino:
        yield devino


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serve_app(receiver.app) as url:
        receiver.url = url
        yield receiver
