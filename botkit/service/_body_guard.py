"""Request bodies read within limits, before the endpoints see them.

:class:`BodyGuard` is ASGI middleware in front of the service. For each
request that carries a body it:

- answers **413** when the body is over ``max_bytes``: at once from the
  ``Content-Length`` header (nothing is buffered), or as soon as a streamed
  body grows past the limit. Either way the rest of the body is first read
  and thrown away (the *drain*, at most :data:`DRAIN_MAX_BYTES` and
  :data:`DRAIN_MAX_SECONDS`), because a client that writes its whole body
  before reading (Python's urllib, many HTTP libraries) otherwise gets a
  connection reset instead of the answer;
- answers **408** when the body is not complete within ``timeout`` seconds
  of the request's start (a client trickling its body holds a connection
  and a worker's memory);
- answers **503** (``Retry-After``) to requests still waiting for their
  body when the service begins to stop (:meth:`BodyGuard.stop`), and to a
  request the server cancels at the end of its graceful shutdown, where
  uvicorn would answer 500.

The endpoints then read the complete body from memory as usual.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["DRAIN_MAX_BYTES", "DRAIN_MAX_SECONDS", "BodyGuard"]

DRAIN_MAX_BYTES = 16 * 1024 * 1024
"""At most this much of a refused body is read (and thrown away) so the client reads the 413."""

DRAIN_MAX_SECONDS = 5.0
"""At most this long is spent draining a refused body."""

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any


class _Stopped(Exception):
    """The service began to stop while the body was still arriving."""


class BodyGuard:
    """ASGI middleware: a request's body complete, within size and time, or a clear 4xx/503.

    ``app`` is the ASGI application to protect, ``max_bytes`` the largest
    body accepted, ``timeout`` the seconds a client has to send the whole
    body. :meth:`wrap` puts it in front of an application (a Starlette
    middleware factory); call :meth:`stop` when the service begins to stop.
    """

    def __init__(self, *, max_bytes: int, timeout: float) -> None:
        self.app: Any = None
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stopping = False
        self._reading: set[asyncio.Timeout] = set()

    def wrap(self, app: Any) -> BodyGuard:
        """Guard ``app``: ``Starlette(middleware=[Middleware(guard.wrap)])``."""
        self.app = app
        return self

    def stop(self) -> None:
        """Answer 503 to every request still waiting for its body, and to any new one."""
        self.stopping = True
        now = asyncio.get_running_loop().time()
        for deadline in self._reading:
            deadline.reschedule(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            body = await self._body(scope, receive, send)
            if body is None:
                return
            await self.app(scope, _replay(body, receive), tracked_send)
        except asyncio.CancelledError:
            # The server gave up waiting at shutdown: say "retry", not uvicorn's 500.
            if started:
                raise
            await _stopping(send)

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once the refusal was sent."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            drained = False
            if declared <= DRAIN_MAX_BYTES and not _expects_continue(scope):
                drained = await _drain(receive, declared)
            await self._too_large(send, close=not drained)
            return None
        if self.stopping:
            await _stopping(send)
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                self._reading.add(deadline)
                try:
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":  # the client went away
                            return None
                        chunk = message.get("body", b"")
                        more = message.get("more_body", False)
                        size += len(chunk)
                        if size > self.max_bytes:
                            break
                        chunks.append(chunk)
                finally:
                    self._reading.discard(deadline)
        except TimeoutError:
            if self.stopping:
                await _stopping(send)
            else:
                await _answer(
                    send,
                    408,
                    "body_timeout",
                    f"the body did not arrive within {self.timeout:g} seconds",
                    close=True,
                )
            return None
        if size > self.max_bytes:
            drained = not more or await _drain(receive, DRAIN_MAX_BYTES)
            await self._too_large(send, close=not drained)
            return None
        return b"".join(chunks)

    async def _too_large(self, send: Send, *, close: bool) -> None:
        await _answer(
            send, 413, "body_too_large", f"the body is over {self.max_bytes} bytes", close=close
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _expects_continue(scope: Scope) -> bool:
    # Such a client waits for our answer before sending its body: nothing to drain.
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
    )


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and discard the rest of the body; True when it ended within the bounds."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
                if read > limit:
                    return False
    except TimeoutError:
        pass
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[no-any-return]

    return replay


async def _stopping(send: Send) -> None:
    await _answer(send, 503, "unavailable", "the service is stopping; retry", close=True)


async def _answer(send: Send, status: int, error: str, message: str, *, close: bool) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
