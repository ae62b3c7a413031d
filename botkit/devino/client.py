"""DevinoClient: sends WhatsApp messages through ``POST /whatsapp/messages``.

Async only. One shared :class:`httpx.AsyncClient` (connection pool, timeouts);
local validation before anything leaves; batches split at the provider's cap
and sent a few at a time; connection errors, timeouts and 5xx retried by its
:class:`~botkit.RetryPolicy` (exponential backoff, full jitter); one typed
:class:`SendResult` per message.

Delivery is *at least once*: a request that timed out may have reached the
provider, and its retry can then send the same messages again.

Example::

    async with DevinoClient(api_key=settings.devino_api_key) as devino:
        message = OutgoingMessage(sender="Shop", to="+7 903 456-78-90", text="Hi")
        [result] = await devino.send([message])
        if not result.ok:
            print(result.reasons)  # e.g. [Reason(key='invalid', ref='messages[0].to')]
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from botkit._retry import RetryPolicy
from botkit.devino.errors import (
    DevinoAuthError,
    DevinoConfigError,
    DevinoError,
    DevinoResponseError,
    DevinoTransportError,
)
from botkit.devino.models import (
    DEFAULT_BATCH_CAP,
    OutgoingMessage,
    SendRequest,
    SendResponse,
    SendResult,
)
from botkit.devino.validation import validate_message, with_normalized_phone

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "SEND_PATH",
    "DevinoClient",
    "RequestRecord",
    "RetryPolicy",
]

logger = logging.getLogger("botkit.devino")

DEFAULT_BASE_URL: Final = "https://api.devino.online"
SEND_PATH: Final = "/whatsapp/messages"
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=10.0)

# 429 is not documented by the provider; if a proxy in front of it says so, back off.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request made to the provider, for metrics.

    `status_code` is None when no answer came (`error` then says why);
    `elapsed` is in seconds; `attempt` starts at 1.
    """

    messages: int
    attempt: int
    status_code: int | None
    elapsed: float
    error: BaseException | None = None


RequestHook = Callable[[RequestRecord], None]
"""Called after each request to the provider; must be quick and must not raise."""

_REF_INDEX = re.compile(r"^messages\[(\d+)\]")


class DevinoClient:
    """Sends messages to the Devino WhatsApp API.

    Give exactly one credential: `api_key` (``Authorization: Key ...``) or
    `login` and `password` (``Authorization: Basic ...``). `transport` swaps
    the HTTP transport (tests); `on_request` observes each request.
    `batch_cap` messages go in one request, at most `concurrency` requests at
    a time from this client.

    Use it as an async context manager, or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        login: str | None = None,
        password: str | None = None,
        batch_cap: int = DEFAULT_BATCH_CAP,
        concurrency: int = 4,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
        retry: RetryPolicy | None = None,
        retry_unanswered: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: RequestHook | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DevinoConfigError(
                f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {base_url!r}: "
                "check BOTKIT_DEVINO_URL"
            )
        if batch_cap < 1 or concurrency < 1:
            raise DevinoConfigError("batch_cap and concurrency must be at least 1")
        self._auth_scheme, authorization = _authorization(api_key, login, password)
        self.base_url = base_url.rstrip("/")
        self.batch_cap = batch_cap
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        if self.retry.attempts is None:
            raise DevinoConfigError("the client's RetryPolicy needs a number of attempts")
        self.retry_unanswered = retry_unanswered
        """Retry a request that went out but got no answer (read timeout, dropped
        connection). The provider may have accepted it, so a retry may deliver
        twice; botkit's service makes one attempt per request and settles such
        a batch by its status callbacks (:attr:`DevinoTransportError.unanswered`)."""
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.on_request = on_request
        self.requests_sent = 0
        """How many HTTP requests this client made to the provider, retries included."""
        self._slots = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": authorization,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
            timeout=timeout,
            limits=limits
            or httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )

    def __repr__(self) -> str:
        # Names the auth scheme only: the credential itself never leaves the client.
        return f"DevinoClient({self.base_url!r}, auth={self._auth_scheme})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send_one(self, message: OutgoingMessage) -> SendResult:
        """Send one message; see :meth:`send`."""
        [result] = await self.send([message])
        return result

    @property
    def longest_send(self) -> float | None:
        """The longest one :meth:`send` of a batch can take, in seconds (None: unbounded).

        Every attempt waiting its full pool, connect, write and read timeouts,
        plus the longest backoffs between attempts.
        """
        phases = (self.timeout.pool, self.timeout.connect, self.timeout.write, self.timeout.read)
        if any(phase is None for phase in phases):
            return None
        per_attempt = sum(phase for phase in phases if phase is not None)
        return (self.retry.attempts or 1) * per_attempt + self.retry.longest_backoffs()

    async def send(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send `messages`; return one result per message, in the same order.

        A message that breaks the provider's rules is rejected locally
        (``result.local`` is True) with the reason the provider would give;
        the others go out in requests of at most `batch_cap` messages. Every
        ``ref`` in a result indexes the list given here (``messages[i]...``).

        Raises :class:`DevinoAuthError` when the credentials are refused,
        :class:`DevinoResponseError` when the answer is malformed and
        :class:`DevinoTransportError` when retries ran out; when some requests
        of a split batch succeeded first, the error's `partial_results` has
        their results.
        """
        batch = list(messages)
        results: list[SendResult | None] = [None] * len(batch)
        outgoing: list[tuple[int, OutgoingMessage]] = []
        for index, message in enumerate(batch):
            reasons = validate_message(message, index)
            if reasons:
                results[index] = SendResult.rejected(reasons, local=True)
            else:
                outgoing.append((index, with_normalized_phone(message)))

        chunks = [
            outgoing[start : start + self.batch_cap]
            for start in range(0, len(outgoing), self.batch_cap)
        ]
        outcomes = await asyncio.gather(
            *(self._send_chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        failure: BaseException | None = None
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                continue
            for position, ((index, _), result) in enumerate(zip(chunk, outcome, strict=True)):
                results[index] = _rebased(result, position, index)

        if failure is not None:
            if isinstance(failure, DevinoError) and len(chunks) > 1:
                failure.partial_results = results
            raise failure
        return [result for result in results if result is not None]

    async def _send_chunk(self, chunk: list[tuple[int, OutgoingMessage]]) -> list[SendResult]:
        body = SendRequest(messages=[message for _, message in chunk]).model_dump_json(
            exclude_none=True
        )
        async with self._slots:
            return await self._post(body.encode(), len(chunk))

    async def _post(self, body: bytes, count: int) -> list[SendResult]:
        policy = self.retry
        attempts = policy.attempts or 1  # never None: checked in __init__
        cause: BaseException | None = None
        status: int | None = None
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                response = await self._http.post(SEND_PATH, content=body)
            except httpx.TransportError as exc:
                self._observe(RequestRecord(count, attempt, None, _since(started), exc))
                cause, status = exc, None
                if not self.retry_unanswered and _unanswered(exc):
                    raise DevinoTransportError(
                        attempts=attempt, cause=exc, status_code=None, unanswered=True
                    ) from exc
            else:
                self._observe(RequestRecord(count, attempt, response.status_code, _since(started)))
                if response.status_code in (401, 403):
                    raise DevinoAuthError(response.status_code)
                try:
                    return _parse_results(response, count)
                except DevinoResponseError as exc:
                    if response.status_code not in _RETRYABLE_STATUS:
                        raise
                    cause, status = exc, response.status_code
            if attempt < attempts:
                delay = policy.delay(attempt - 1)
                logger.warning(
                    "provider request failed (attempt %d of %d): %s; retrying in %.2fs",
                    attempt,
                    attempts,
                    f"HTTP {status}" if status is not None else _describe(cause),
                    delay,
                )
                await asyncio.sleep(delay)
        raise DevinoTransportError(attempts=attempts, cause=cause, status_code=status) from cause

    def _observe(self, record: RequestRecord) -> None:
        self.requests_sent += 1
        if self.on_request is None:
            return
        try:
            self.on_request(record)
        except Exception:
            # Metrics must never break sending.
            logger.exception("on_request hook failed")


def _unanswered(exc: httpx.TransportError) -> bool:
    """True when the request may have reached the provider (it went out; no answer came)."""
    return isinstance(exc, httpx.ReadTimeout | httpx.ReadError | httpx.RemoteProtocolError)


def _authorization(api_key: str | None, login: str | None, password: str | None) -> tuple[str, str]:
    if api_key is not None and (login is not None or password is not None):
        raise DevinoConfigError(
            "give either api_key or login and password to DevinoClient, not both"
        )
    if api_key is not None:
        if not api_key.strip():
            raise DevinoConfigError("api_key is empty: set BOTKIT_DEVINO_API_KEY")
        return "Key", f"Key {api_key.strip()}"
    if login and password is not None:
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        return "Basic", f"Basic {token}"
    if login is not None or password is not None:
        raise DevinoConfigError("give both login and password to DevinoClient")
    raise DevinoConfigError(
        "DevinoClient needs credentials: pass api_key=... (set BOTKIT_DEVINO_API_KEY) "
        "or login=... and password=..."
    )


def _parse_results(response: httpx.Response, count: int) -> list[SendResult]:
    """The results in a response body, whatever its HTTP status."""
    try:
        parsed = SendResponse.model_validate_json(response.content)
    except ValidationError as exc:
        problem = (
            "the body is not JSON"
            if any(error["type"] == "json_invalid" for error in exc.errors())
            else "the body is not a {'result': [...]} object"
        )
        raise DevinoResponseError(
            problem, status_code=response.status_code, body=response.content
        ) from None
    if len(parsed.result) != count:
        raise DevinoResponseError(
            f"{len(parsed.result)} results for {count} messages",
            status_code=response.status_code,
            body=response.content,
        )
    return parsed.result


def _rebased(result: SendResult, position: int, index: int) -> SendResult:
    """`result` with refs naming the caller's index instead of the position in its request."""
    if position == index or not result.reasons:
        return result
    reasons = [
        reason.model_copy(update={"ref": _rebased_ref(reason.ref, position, index)})
        for reason in result.reasons
    ]
    return result.model_copy(update={"reasons": reasons})


def _rebased_ref(ref: str | None, position: int, index: int) -> str | None:
    match = _REF_INDEX.match(ref) if ref else None
    if ref is None or match is None or int(match.group(1)) != position:
        return ref
    return f"messages[{index}]{ref[match.end() :]}"


def _since(started: float) -> float:
    return time.perf_counter() - started


def _describe(cause: BaseException | None) -> str:
    if cause is None:
        return "unknown error"
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
