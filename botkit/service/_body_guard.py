"""Request bodies within limits of size and time, and answers the client can read.

:class:`BodyGuard` is ASGI middleware in front of the service. For each
request that carries a body:

- a ``Content-Length`` over ``max_bytes`` is answered **413** at once,
  before anything is kept;
- while the endpoint reads the body, a body that grows past ``max_bytes``
  raises :class:`BodyRefused` (413), one not complete within ``timeout``
  seconds of the request's start raises it with 408, and one still arriving
  when the service begins to stop (:meth:`BodyGuard.stop`) with 503. The
  endpoint turns it into its answer; if it does not, the guard answers;
- before any answer goes out, the rest of a body the endpoint did not read
  (a 413, a 401 for a wrong token...) is read and thrown away, at most
  :data:`DRAIN_MAX_BYTES` within :data:`DRAIN_MAX_SECONDS` (else the
  connection is closed after the answer). A client that writes its whole
  body before reading (Python's urllib, many HTTP libraries) otherwise gets
  a connection reset instead of the answer;
- a request the server cancels at the end of its graceful shutdown is
  answered **503**, where uvicorn would answer 500.

Only what an endpoint chooses to read is kept in memory: a request refused
on its token costs no buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from botkit._errors import BotkitError

__all__ = ["DRAIN_MAX_BYTES", "DRAIN_MAX_SECONDS", "BodyGuard", "BodyRefused"]

DRAIN_MAX_BYTES = 16 * 1024 * 1024
"""At most this much of an unread body is read and thrown away, so the client sees the answer."""

DRAIN_MAX_SECONDS = 5.0
"""At most this long is spent on that."""

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any


class BodyRefused(BotkitError):
    """The request's body is refused: over the size limit (413), too slow (408), or the
    service is stopping (503). ``status`` and ``error`` are the answer's."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class _Body:
    """One request's body as the guard follows it."""

    __slots__ = ("complete", "deadline", "expects_continue", "read", "size", "started", "timed_out")

    def __init__(self, deadline: float, expects_continue: bool) -> None:
        self.deadline = deadline
        self.expects_continue = expects_continue
        self.size = 0
        self.read = False
        self.complete = False
        self.timed_out = False
        self.started = False


class BodyGuard:
    """ASGI middleware: a request's body within size and time, and answers clients can read.

    ``max_bytes`` is the largest body accepted, ``timeout`` the seconds a
    client has to send the whole body. :meth:`wrap` puts it in front of an
    application (a Starlette middleware factory); call :meth:`stop` when the
    service begins to stop.
    """

    def __init__(self, *, max_bytes: int, timeout: float) -> None:
        self.app: Any = None
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stopping = False
        # The tasks waiting for more of a body, checked by one sweeper task: a
        # timer per request would cost more than the rest of the guard.
        self._waiting: dict[asyncio.Task[Any], _Body] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def wrap(self, app: Any) -> BodyGuard:
        """Guard ``app``: ``Starlette(middleware=[Middleware(guard.wrap)])``."""
        self.app = app
        return self

    def stop(self) -> None:
        """Refuse (503) every body still arriving, now and from now on."""
        self.stopping = True
        self._expire(float("inf"))

    async def aclose(self) -> None:
        """Stop the task that enforces the body timeout."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def _expire(self, now: float) -> None:
        """Interrupt every body read past its deadline (all of them while stopping)."""
        for task, body in list(self._waiting.items()):
            if (self.stopping or body.deadline <= now) and not body.timed_out:
                body.timed_out = True
                task.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        every = min(0.5, self.timeout / 4)
        while True:
            await asyncio.sleep(every)
            self._expire(loop.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        expects_continue = _expects_continue(scope)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            drained = False
            if declared <= DRAIN_MAX_BYTES and not expects_continue:
                drained = await _drain(receive)
            await _answer(send, self._too_large(), close=not drained)
            return
        loop = asyncio.get_running_loop()
        body = _Body(loop.time() + self.timeout, expects_continue)
        try:
            await self.app(scope, self._receive(body, receive), self._send(body, receive, send))
        except BodyRefused as refused:
            if body.started:
                raise
            await _answer(send, refused, close=True)
        except asyncio.CancelledError:
            # The server gave up waiting at shutdown: say "retry", not uvicorn's 500.
            if body.started:
                raise
            await _answer(send, _stopping(), close=True)

    def _receive(self, body: _Body, receive: Receive) -> Receive:
        async def guarded() -> Message:
            if body.complete:
                return await receive()  # type: ignore[no-any-return]
            body.read = True
            task = asyncio.current_task()
            assert task is not None
            if self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep(), name="botkit-body-timeouts")
            self._waiting[task] = body
            if self.stopping:
                # Whatever already arrived is taken; nothing more is waited for.
                asyncio.get_running_loop().call_soon(self._expire, 0.0)
            try:
                message: Message = await receive()
            except asyncio.CancelledError:
                if not body.timed_out:
                    raise
                task.uncancel()
                if self.stopping:
                    raise _stopping() from None
                raise BodyRefused(
                    408, "body_timeout", f"the body did not arrive within {self.timeout:g} seconds"
                ) from None
            finally:
                del self._waiting[task]
            if message["type"] != "http.request":
                body.complete = True  # the client went away
                return message
            body.size += len(message.get("body", b""))
            body.complete = not message.get("more_body", False)
            if body.size > self.max_bytes:
                raise self._too_large()
            return message

        return guarded

    def _send(self, body: _Body, receive: Receive, send: Send) -> Send:
        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.started:
                body.started = True
                if not body.complete:
                    # Read what is left of the body first, or the client may never see this.
                    drained = False
                    waits = body.expects_continue and not body.read
                    if not (body.timed_out or self.stopping or waits):
                        drained = await _drain(receive)
                    if not drained:
                        headers = [*message.get("headers", ()), (b"connection", b"close")]
                        message = {**message, "headers": headers}
            await send(message)

        return guarded

    def _too_large(self) -> BodyRefused:
        return BodyRefused(413, "body_too_large", f"the body is over {self.max_bytes} bytes")


def _stopping() -> BodyRefused:
    return BodyRefused(503, "unavailable", "the service is stopping; retry")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _expects_continue(scope: Scope) -> bool:
    # Such a client waits for an answer before it sends its body.
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
    )


async def _drain(receive: Receive) -> bool:
    """Read and discard the rest of the body; True when it ended within the bounds."""
    read = 0
    try:
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            while read <= DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    except TimeoutError:
        pass
    return False


async def _answer(send: Send, refused: BodyRefused, *, close: bool) -> None:
    payload = json.dumps({"error": refused.error, "message": str(refused)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if refused.status == 503:
        headers.append((b"retry-after", b"5"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
