"""serve_app: any ASGI app over real HTTP in the running event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from botkit.service import ServingError, serve_app


def make_app(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)


async def test_serves_on_a_free_port_and_runs_the_lifespan() -> None:
    events: list[str] = []
    async with serve_app(make_app(events)) as first, serve_app(make_app(events)) as second:
        assert first != second and first.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            assert (await http.get(first)).text == "hello"
            assert (await http.get(second)).text == "hello"
    assert events == ["startup", "startup", "shutdown", "shutdown"]
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(first)


async def test_a_taken_port_is_a_clear_error() -> None:
    async with serve_app(make_app([])) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(ServingError, match="port"):
            async with serve_app(make_app([]), port=port):
                pass
