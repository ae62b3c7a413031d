"""The yardstick for ``bench_webhook.py``: the echo bot written by hand, Starlette + redis-py.

It does only the essential work of the echo bot, the way a careful
hand-written service would:

* ``POST /whatsapp/incoming/{token}``: compare the token, parse the JSON
  (one message or an array), and for each message
  1. dedupe: ``SET <p>:seen:<incomingMessageId> 1 NX EX 172800`` (a repeat is skipped),
  2. count: ``HINCRBY <p>:{<user>} n 1`` (the user's running count),
  3. queue ``echo #<n>: <text>`` in an in-process queue;
  then answer 200 with an empty body.
* a background task per worker takes up to 100 queued replies at a time and
  POSTs them in one ``/whatsapp/messages`` request to the provider.

Two Redis round trips per message, like botkit's begin and commit. What it
leaves out, and botkit does: per-user locks, state beyond one counter, the
session window and reply policy, a durable outbox (a reply queued here is
lost if the process dies before it is posted), retries, status callbacks,
metrics and logs.

Configured by ``BASELINE_REDIS_URL``, ``BASELINE_PREFIX``, ``BASELINE_DEVINO_URL``,
``BASELINE_API_KEY`` and ``BASELINE_TOKEN``; run under uvicorn::

    python -m uvicorn tests.bench.baseline_app:app --workers 2
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BASELINE_PREFIX", "baseline")
DEVINO_URL = os.environ.get("BASELINE_DEVINO_URL", "http://127.0.0.1:9000")
API_KEY = os.environ.get("BASELINE_API_KEY", "bench-key")
TOKEN = os.environ.get("BASELINE_TOKEN", "bench-token")
SENDER = "EchoCo"


class Echo:
    """The state of one worker: its Redis client, HTTP client and reply queue."""

    def __init__(self) -> None:
        self.redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.http = httpx.AsyncClient(
            base_url=DEVINO_URL, headers={"Authorization": f"Key {API_KEY}"}, timeout=30
        )
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def handle(self, message: dict[str, Any]) -> None:
        fresh = await self.redis.set(
            f"{PREFIX}:seen:{message['incomingMessageId']}", 1, nx=True, ex=172_800
        )
        if not fresh:
            return
        user = str(message["from"])
        n = await self.redis.hincrby(f"{PREFIX}:{{{user}}}", "n", 1)
        self.replies.put_nowait(
            {"from": SENDER, "to": user, "text": f"echo #{n}: {message.get('text')}"}
        )

    async def send_forever(self) -> None:
        while True:
            batch = [await self.replies.get()]
            while len(batch) < 100 and not self.replies.empty():
                batch.append(self.replies.get_nowait())
            # A real service would retry; the benchmark's provider does not fail.
            with contextlib.suppress(httpx.HTTPError):
                await self.http.post("/whatsapp/messages", json={"messages": batch})


echo: Echo | None = None


async def incoming(request: Request) -> Response:
    if not hmac.compare_digest(request.path_params["token"].encode(), TOKEN.encode()):
        return Response(status_code=401)
    try:
        body = json.loads(await request.body())
    except ValueError:
        return Response(status_code=400)
    messages = body if isinstance(body, list) else [body]
    assert echo is not None
    for message in messages:
        await echo.handle(message)
    return Response(status_code=200)


async def healthz(request: Request) -> Response:
    return Response(status_code=200)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global echo
    echo = Echo()
    echo.task = asyncio.create_task(echo.send_forever())
    yield
    echo.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await echo.task
    await echo.http.aclose()
    await echo.redis.aclose()


app = Starlette(
    routes=[
        Route("/whatsapp/incoming/{token}", incoming, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ],
    lifespan=lifespan,
)
