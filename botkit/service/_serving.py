"""Serve an ASGI app under uvicorn from inside a running event loop.

For tests and dev mode, where the program already runs an event loop and
wants a real HTTP server on a free port beside its own code::

    async with serve_app(app) as base_url:          # e.g. "http://127.0.0.1:53817"
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.get("/health")

:func:`run_app` is the long-running form for a command (Ctrl-C stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.requests import Request

from botkit._compat import embedded_server
from botkit._errors import BotkitError

__all__ = ["ServingError", "run_app", "serve_app", "server_stopping", "tune_gc"]

# Young objects the collector lets accumulate before it runs (CPython: 700).
SERVER_GC_YOUNG = 10_000

ASGIApp = Any
"""Any ASGI application (Starlette's `app`, a bare ASGI callable...)."""


class ServingError(BotkitError, RuntimeError):
    """The server could not start (the port is taken, the app's startup failed...)."""


def tune_gc(young: int = SERVER_GC_YOUNG) -> None:
    """Make the garbage collector cheaper for a long-running server process.

    Call it once the app is built. Everything alive then (modules, the app,
    its routers and models) is moved out of the collector's sight
    (``gc.freeze()``), so full collections stop walking it again and again;
    and the youngest generation is collected every ``young`` allocations
    instead of 700. A webhook request keeps a score of coroutine frames alive
    while it waits on Redis and the collector walks each of them: with
    CPython's defaults that was about a tenth of a worker's CPU under load.
    Garbage in cycles lives a little longer (a few megabytes at most).
    ``botkit run`` calls it in every worker.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def server_stopping(request: Request) -> Callable[[], bool]:
    """A check that turns true once the server starts its graceful shutdown.

    For endless responses (server-sent events): the app hears nothing until
    every connection has closed, and an event stream never closes by itself.
    uvicorn marks each open response ``keep_alive = False`` when shutdown
    begins: that flip, on the object behind ``receive``, is the earliest
    sign. Under another server the check stays false, and the stream's own
    lifetime must bound the wait instead.
    """
    cycle = getattr(request.receive, "__self__", None)
    if cycle is None or getattr(cycle, "keep_alive", None) is not True:
        return lambda: False
    return lambda: getattr(cycle, "keep_alive", True) is False


def _config(app: ASGIApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # None: leave the program's logging configuration alone (pytest's caplog too).
        log_config=None,
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=5,
    )


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process when it cannot bind or the app's startup fails;
        # a SystemExit escaping a task would stop the whole event loop instead.
        raise ServingError(
            f"the server on {server.config.host}:{server.config.port} could not start "
            f"(uvicorn exit code {exc.code}): is the port already taken? See the log above"
        ) from None


async def _started(server: uvicorn.Server, task: asyncio.Task[None], within: float) -> str:
    try:
        async with asyncio.timeout(within):
            while not server.started:
                if task.done():
                    task.result()  # raises the reason it stopped
                    raise ServingError("the server stopped before it started")
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise ServingError(f"the server did not start within {within}s") from None
    return _base_url(server)


def _base_url(server: uvicorn.Server) -> str:
    sockname = server.servers[0].sockets[0].getsockname()
    host, port = str(sockname[0]), int(sockname[1])
    # A wildcard address is where it listens, not where a client can connect.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
) -> AsyncIterator[str]:
    """Serve `app` over real HTTP in the current event loop; yield its base URL.

    `port=0` takes a free port. The app's lifespan runs on entry and exit; on
    exit the server stops accepting connections and waits (up to 5 s) for
    the requests in flight.
    """
    server, stop = embedded_server(_config(app, host, port, log_level))
    task = asyncio.create_task(_serve(server), name=f"uvicorn {host}:{port}")
    try:
        yield await _started(server, task, startup_timeout)
    finally:
        stop()
        if not task.done():
            try:
                await asyncio.wait_for(task, timeout=10.0)
            except TimeoutError:
                server.force_exit = True


async def run_app(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "info",
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve `app` until SIGINT or SIGTERM; call `on_started` with the base URL.

    For commands: unlike :func:`serve_app` it handles the signals itself.
    """
    server = uvicorn.Server(_config(app, host, port, log_level))
    task = asyncio.create_task(_serve(server), name=f"uvicorn {host}:{port}")
    url = await _started(server, task, 30.0)
    if on_started is not None:
        on_started(url)
    await task
