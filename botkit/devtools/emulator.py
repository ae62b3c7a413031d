"""A local stand-in for the Devino WhatsApp API, for ``botkit dev`` and tests.

It answers ``POST /whatsapp/messages`` as the provider does (same auth, same
validation through :mod:`botkit.devino.validation`, same per-message results),
posts status callbacks to each message's `callbackUrl`, delivers injected user
messages to the bot's webhook, and enforces the WhatsApp rules the provider
reports asynchronously:

* free text to a user whose 24-hour window is closed → ``FAILED`` 2312 (the
  window opens and resets with each injected inbound message; the business's
  own messages never extend it);
* more than ``rate_limit.messages`` to one recipient within
  ``rate_limit.per`` seconds → ``FAILED`` 2301;
* a number configured as not on WhatsApp → ``FAILED`` 2305;
* otherwise ``SENT``, ``DELIVERED``, ``READ``, in that order.

Everything it sees is recorded and can be read back (``GET /_emulator/...`` or
the Python attributes), faults can be injected, and its clock can be moved.
Timestamps (`ts`) are UNIX time in whole **seconds**.

Serve it over real HTTP::

    emulator = Emulator(api_key="test", webhook_url="http://127.0.0.1:8000/whatsapp/incoming/t")
    async with emulator.serve() as base_url:
        client = DevinoClient(base_url, api_key="test")
        ...
        await emulator.wait_for_messages(1)

Control endpoints (no auth: the emulator is a local tool):

=======================  ==========================================================
``GET /_emulator/messages``    accepted messages, their status history and callbacks
``DELETE /_emulator/messages`` forget every message, request, callback and injection
``GET /_emulator/requests``    one entry per ``POST /whatsapp/messages``
``GET /_emulator/stats``       counts: messages, requests, requests in flight, callbacks to go
``POST /_emulator/incoming``   inject a user message: ``{"from": "7903...", "text": "hi"}``
``GET /_emulator/incoming``    the injected messages
``POST /_emulator/faults``     ``{"count": 2, "status": 500}``, ``{"delay": 3}``, ``{"garble": 1}``
``DELETE /_emulator/faults``   drop the faults not yet used
``GET/POST /_emulator/clock``  ``{"advance": 90000}`` moves the emulator's own clock
``GET/POST /_emulator/config`` ``notOnWhatsApp``, ``rateLimit``, ``sessionWindow``...
=======================  ==========================================================
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from botkit._events import DeliveryStatus
from botkit.devino.client import SEND_PATH
from botkit.devino.errors import (
    DevinoConfigError,
    InvalidPhoneNumber,
    ReasonKey,
    StatusErrorCode,
)
from botkit.devino.models import (
    DEFAULT_BATCH_CAP,
    IncomingMessage,
    OutgoingMessage,
    Reason,
    ResultCode,
    SendResponse,
    SendResult,
    StatusReport,
)
from botkit.devino.validation import batch_reasons, normalize_phone, validate_message
from botkit.service._logs import configure_logging
from botkit.service._serving import ServingError, run_app, serve_app

__all__ = [
    "AcceptedMessage",
    "CallbackAttempt",
    "Emulator",
    "EmulatorEvent",
    "InjectResult",
    "RateLimit",
    "ReceivedRequest",
    "StatusRecord",
    "main",
]

logger = logging.getLogger("botkit.devino.emulator")

Clock = Callable[[], float]
"""A zero-argument callable returning UNIX time in seconds."""

DEFAULT_SESSION_WINDOW = 86_400.0
# Status callbacks posted at once (the HTTP client's connections).
_CALLBACK_CONNECTIONS = 32
DEFAULT_BUSINESS_NUMBER = "79000000000"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `messages` to one recipient within `per` seconds; more fail with 2301."""

    messages: int = 20
    per: float = 10.0


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """A status the emulator gave a message (whether or not a callback went out)."""

    status: DeliveryStatus
    error_code: int
    ts: int

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, for ``GET /_emulator/messages``."""
        return {"status": self.status.wire, "errorCode": self.error_code, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One attempt to post a status callback; `http_status` is None when no answer came."""

    message_id: str
    status: DeliveryStatus
    url: str
    attempt: int
    http_status: int | None
    error: str | None
    at: float

    @property
    def delivered(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.http_status is not None and 200 <= self.http_status < 300

    def to_json(self) -> dict[str, Any]:
        """The attempt as JSON."""
        return {
            "messageId": self.message_id,
            "status": self.status.wire,
            "url": self.url,
            "attempt": self.attempt,
            "httpStatus": self.http_status,
            "error": self.error,
            "at": self.at,
        }


@dataclass(slots=True)
class AcceptedMessage:
    """A message the emulator accepted: as received, its id, statuses and callbacks."""

    message_id: str
    received: dict[str, Any]
    """The message exactly as it came in the request body."""
    message: OutgoingMessage
    received_at: float
    statuses: list[StatusRecord] = field(default_factory=list)
    callbacks: list[CallbackAttempt] = field(default_factory=list)

    @property
    def status(self) -> DeliveryStatus | None:
        """The latest status, or None before the first one."""
        return self.statuses[-1].status if self.statuses else None

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, for ``GET /_emulator/messages``."""
        return {
            "messageId": self.message_id,
            "message": self.received,
            "receivedAt": self.received_at,
            "statuses": [status.to_json() for status in self.statuses],
            "callbacks": [attempt.to_json() for attempt in self.callbacks],
        }


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One ``POST /whatsapp/messages`` as the emulator saw it."""

    at: float
    messages: int
    http_status: int
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request as JSON, for ``GET /_emulator/requests``."""
        return {
            "at": self.at,
            "messages": self.messages,
            "httpStatus": self.http_status,
            "fault": self.fault,
        }


@dataclass(frozen=True, slots=True)
class InjectResult:
    """What happened to an injected user message.

    `incoming` is the payload posted to the webhook; `status_code` and `body`
    are the webhook's answer (None when it gave none, `error` then says why).
    """

    incoming: dict[str, Any]
    status_code: int | None
    body: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as JSON, for ``POST /_emulator/incoming``."""
        return {
            "incoming": self.incoming,
            "webhookStatus": self.status_code,
            "webhookBody": self.body,
            "webhookError": self.error,
        }


@dataclass(frozen=True, slots=True)
class EmulatorEvent:
    """Something that happened in the emulator, for a live view (the dev chat page).

    `kind` is ``"message"`` (a message was accepted), ``"status"`` (a message got
    a status), ``"incoming"`` (a user message was injected) or ``"reset"``.
    """

    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class _Fault:
    delay: float = 0.0
    status: int | None = None
    body: str | None = None
    content_type: str = "application/json"

    @property
    def answers(self) -> bool:
        return self.status is not None or self.body is not None

    def describe(self) -> str:
        parts = [f"delay {self.delay}s"] if self.delay else []
        if self.answers:
            parts.append(f"HTTP {self.status or 200}")
        return ", ".join(parts)


_GARBLED_BODY = "<html><body><h1>502 Bad Gateway</h1></body></html>"


class _OwnClock:
    """The emulator's own clock: the wall clock plus how far it was advanced."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Emulator:
    """The provider emulator; ``.app`` is its Starlette application.

    `api_key` None accepts any ``Key`` credential; `login`/`password` set
    accept that ``Basic`` credential (with neither set, any Basic one).
    `clock` None gives the emulator its own clock, which
    :meth:`advance_clock` moves. `senders`, when given, lists the sender
    names allowed in ``from`` (others are rejected ``not.available``).
    `response_delay` makes every send request wait that many seconds before
    it is handled and answered, as a slow provider does.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        login: str | None = None,
        password: str | None = None,
        webhook_url: str | None = None,
        clock: Clock | None = None,
        session_window: float = DEFAULT_SESSION_WINDOW,
        rate_limit: RateLimit | None = None,
        not_on_whatsapp: Iterable[str] = (),
        record: bool = True,
        callback_delay: float = 0.0,
        response_delay: float = 0.0,
        callback_attempts: int = 4,
        callback_retry_delay: float = 0.05,
        batch_cap: int = DEFAULT_BATCH_CAP,
        senders: Iterable[str] | None = None,
        business_number: str = DEFAULT_BUSINESS_NUMBER,
    ) -> None:
        if (login is None) != (password is None):
            raise DevinoConfigError("give the emulator both login and password, or neither")
        self._api_key = api_key
        self._login = login
        self._password = password
        self.webhook_url = webhook_url
        self._own_clock = _OwnClock() if clock is None else None
        self._clock: Clock = clock or self._own_clock or time.time
        self.session_window = session_window
        self.rate_limit = rate_limit or RateLimit()
        self.not_on_whatsapp: set[str] = {normalize_phone(number) for number in not_on_whatsapp}
        self.callback_delay = callback_delay
        self.response_delay = response_delay
        self.record = record
        """False: accepted messages and requests are counted, not kept (and no per-recipient
        rate limit is tracked), so a benchmark's millions of messages take no memory here."""
        self.accepted_count = 0
        """Messages accepted since the start (or the last reset), kept or not."""
        self.request_count = 0
        """Send requests received since the start (or the last reset), kept or not."""
        self.in_flight = 0
        """Send requests received and not answered yet."""
        self.in_flight_from: list[tuple[str, int]] = []
        """The client address (host, port) of each of those requests."""
        self.callback_attempts = callback_attempts
        self.callback_retry_delay = callback_retry_delay
        self.batch_cap = batch_cap
        self.senders = set(senders) if senders is not None else None
        self.business_number = business_number

        self.messages: list[AcceptedMessage] = []
        """Every accepted message, oldest first."""
        self.requests: list[ReceivedRequest] = []
        """Every ``POST /whatsapp/messages``, oldest first."""
        self.incoming: list[InjectResult] = []
        """Every injected user message, oldest first."""
        self._last_inbound: dict[str, float] = {}
        self._recent_sends: dict[str, deque[float]] = {}
        self._faults: deque[_Fault] = deque()
        # Seeded from the wall clock so ids stay unique across emulator restarts
        # (a bot's store may outlive the emulator in dev mode).
        # One sequence for incoming and outgoing messages: no id names both.
        self._ids = itertools.count(int(time.time() * 1000) * 1000)
        self._subscribers: list[asyncio.Queue[EmulatorEvent]] = []
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self.app = self._build_app()

    def __repr__(self) -> str:
        auth = "any key" if self._api_key is None else "one key"
        return f"Emulator({auth}, webhook_url={self.webhook_url!r}, messages={len(self.messages)})"

    # ---------------------------------------------------------------- clock

    def now(self) -> float:
        """The emulator's current time (UNIX seconds)."""
        return self._clock()

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's own clock forward; return the new time.

        Only when the emulator owns its clock (no `clock` was given): move
        the given clock itself otherwise.
        """
        if self._own_clock is None:
            raise DevinoConfigError("this emulator was given its clock: advance that clock instead")
        if seconds < 0:
            raise DevinoConfigError("the clock only moves forward: give a positive number")
        self._own_clock.offset += seconds
        return self.now()

    # --------------------------------------------------------------- faults

    def fail_next(self, count: int = 1, *, status: int = 500, body: str | None = None) -> None:
        """Answer the next `count` send requests with HTTP `status` (and `body`)."""
        body = body if body is not None else json.dumps({"error": "emulated fault"})
        self._add_fault(count, _Fault(status=status, body=body))

    def delay_next(self, count: int = 1, *, seconds: float) -> None:
        """Hold the next `count` send requests for `seconds`, then handle them normally.

        A client that times out meanwhile will retry: the emulator then
        accepts both, as the real provider would.
        """
        self._add_fault(count, _Fault(delay=seconds))

    def garble_next(self, count: int = 1, *, status: int = 200) -> None:
        """Answer the next `count` send requests with a body that is not JSON."""
        self._add_fault(count, _Fault(status=status, body=_GARBLED_BODY, content_type="text/html"))

    def clear_faults(self) -> None:
        """Drop the faults not used yet."""
        self._faults.clear()

    def _add_fault(self, count: int, fault: _Fault) -> None:
        self._faults.extend([fault] * count)

    # ------------------------------------------------------------- windows

    def window_open(self, phone: str) -> bool:
        """True while `phone`'s 24-hour window (from its last injected message) is open."""
        last = self._last_inbound.get(_phone_key(phone))
        return last is not None and self.now() - last < self.session_window

    # ------------------------------------------------------------ records

    def reset(self) -> None:
        """Forget every message, request, callback, injection, window and rate count."""
        self.messages.clear()
        self.requests.clear()
        self.accepted_count = self.request_count = 0
        self.incoming.clear()
        self._last_inbound.clear()
        self._recent_sends.clear()
        self._publish("reset", {})

    def message(self, message_id: str) -> AcceptedMessage | None:
        """The accepted message with `message_id`, or None."""
        return next((m for m in self.messages if m.message_id == message_id), None)

    @property
    def callbacks(self) -> list[CallbackAttempt]:
        """Every callback attempt, grouped by message."""
        return [attempt for message in self.messages for attempt in message.callbacks]

    # -------------------------------------------------------------- waiting

    async def wait_until(
        self, predicate: Callable[[], bool], *, within: float = 5.0, what: str = "a condition"
    ) -> None:
        """Wait until `predicate()` holds, re-checked at each change in the emulator.

        Raises TimeoutError after `within` seconds.
        """
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    if self._changed is None:
                        self._changed = asyncio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"the emulator did not see {what} within {within}s") from None

    async def wait_for_messages(self, count: int, *, within: float = 5.0) -> list[AcceptedMessage]:
        """Wait until at least `count` messages were accepted; return them all."""
        await self.wait_until(
            lambda: len(self.messages) >= count, within=within, what=f"{count} message(s)"
        )
        return list(self.messages)

    async def wait_for_callbacks(
        self, count: int, *, within: float = 5.0, delivered: bool = True
    ) -> list[CallbackAttempt]:
        """Wait until `count` callbacks were delivered (or attempted, with `delivered=False`)."""

        def attempts() -> list[CallbackAttempt]:
            return [a for a in self.callbacks if a.delivered or not delivered]

        await self.wait_until(
            lambda: len(attempts()) >= count, within=within, what=f"{count} callback(s)"
        )
        return attempts()

    def _touch(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # --------------------------------------------------------------- events

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[EmulatorEvent]:
        """A queue that receives every :class:`EmulatorEvent` from now on.

        When it is full the oldest event is dropped, so a slow reader cannot
        make the emulator grow. Call :meth:`unsubscribe` when done.
        """
        queue: asyncio.Queue[EmulatorEvent] = asyncio.Queue(maxsize)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[EmulatorEvent]) -> None:
        """Stop sending events to `queue`."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    async def events(self) -> AsyncIterator[EmulatorEvent]:
        """Iterate over events as they happen (``async for event in emulator.events()``)."""
        queue = self.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            self.unsubscribe(queue)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        event = EmulatorEvent(kind, data, self.now())
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        self._touch()

    # ---------------------------------------------------------- injection

    async def inject(
        self,
        sender: str,
        text: str | None = None,
        *,
        content_url: str | None = None,
        content_type: str | None = None,
        content_name: str | None = None,
        profile_name: str | None = None,
        geo_location: Mapping[str, Any] | None = None,
        contacts: Sequence[Mapping[str, Any]] | None = None,
    ) -> InjectResult:
        """A user (`sender`) writes to the bot: post it to the webhook as the provider would.

        Opens (or resets) the user's 24-hour window. Returns the webhook's answer.
        """
        fields = {
            "from": sender,
            "text": text,
            "contentUrl": content_url,
            "contentType": content_type,
            "contentName": content_name,
            "profileName": profile_name,
            "whatsAppGeoLocation": dict(geo_location) if geo_location is not None else None,
            "whatsAppContacts": [dict(c) for c in contacts] if contacts is not None else None,
        }
        return await self.inject_payload({k: v for k, v in fields.items() if v is not None})

    async def inject_payload(self, fields: Mapping[str, Any]) -> InjectResult:
        """Like :meth:`inject`, from wire-named fields (``from``, ``text``, ``contentUrl``...).

        The emulator fills ``incomingMessageId``, ``to`` and ``ts``. Raises
        InvalidPhoneNumber when ``from`` is not a phone number.
        """
        [result] = await self._post_incoming([self._incoming(fields)])
        return result

    async def inject_many(self, messages: Sequence[Mapping[str, Any]]) -> list[InjectResult]:
        """Several users write at once: one webhook POST of an array, as the provider may
        deliver a batch. Each mapping as for :meth:`inject_payload`; one result each, all
        with the webhook's one answer."""
        return await self._post_incoming([self._incoming(fields) for fields in messages])

    def _incoming(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The incoming message's wire payload; opens its sender's window."""
        sender = normalize_phone(str(fields.get("from") or ""))
        now = self.now()
        payload: dict[str, Any] = {
            "incomingMessageId": next(self._ids),
            "to": self.business_number,
            **{key: value for key, value in fields.items() if key not in ("to", "ts")},
            "from": sender,
            "ts": int(now),
        }
        # The provider's shape: if it would not parse as an incoming message, it is our bug.
        IncomingMessage.model_validate(payload)
        self._last_inbound[sender] = now
        return payload

    async def _post_incoming(self, payloads: list[dict[str, Any]]) -> list[InjectResult]:
        status: int | None = None
        body: str | None = None
        error: str | None = None
        if self.webhook_url is None:
            error = "no webhook URL configured: start the emulator with --webhook URL"
        else:
            try:
                content = payloads[0] if len(payloads) == 1 else payloads
                response = await self._client().post(self.webhook_url, json=content)
                status, body = response.status_code, response.text
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        results = [InjectResult(payload, status, body, error) for payload in payloads]
        for result in results:
            self.incoming.append(result)
            self._publish("incoming", result.to_json())
        return results

    # ------------------------------------------------------------- sending

    def _authorized(self, header: str | None) -> bool:
        scheme, _, credential = (header or "").partition(" ")
        credential = credential.strip()
        if not credential:
            return False
        if scheme.lower() == "key":
            return self._api_key is None or hmac.compare_digest(
                credential.encode(), self._api_key.encode()
            )
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            login, colon, password = decoded.partition(":")
            if not colon:
                return False
            if self._login is None or self._password is None:
                return self._api_key is None
            return hmac.compare_digest(login.encode(), self._login.encode()) and (
                hmac.compare_digest(password.encode(), self._password.encode())
            )
        return False

    async def _send(self, request: Request) -> Response:
        if not self._authorized(request.headers.get("authorization")):
            self._log_request(0, 401)
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "description": "send 'Authorization: Key <api key>' "
                    "or 'Authorization: Basic <base64 login:password>'",
                },
                status_code=401,
            )
        # Read first: a delayed request must still be handled once its client gave up,
        # as the provider would (it got the whole request before the client timed out).
        raw = await request.body()
        peer = (request.client.host, request.client.port) if request.client else ("", 0)
        self.in_flight += 1
        self.in_flight_from.append(peer)
        self._touch()
        try:
            return await self._answer(raw)
        finally:
            self.in_flight -= 1
            self.in_flight_from.remove(peer)
            self._touch()

    async def _answer(self, raw: bytes) -> Response:
        fault = self._faults.popleft() if self._faults else None
        # A slow provider: it takes the whole request, then answers late (and
        # accepts the messages even when the client gave up meanwhile).
        delay = self.response_delay + (fault.delay if fault is not None else 0.0)
        if delay:
            await asyncio.sleep(delay)
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        items = payload.get("messages") if isinstance(payload, dict) else None
        count = len(items) if isinstance(items, list) else 0

        if fault is not None and fault.answers:
            self._log_request(count, fault.status or 200, fault.describe())
            return Response(fault.body, fault.status or 200, media_type=fault.content_type)
        if not isinstance(payload, dict) or not isinstance(items, list | None):
            self._log_request(count, 400)
            return JSONResponse(
                {"error": "bad request", "description": 'send {"messages": [...]} as JSON'},
                status_code=400,
            )

        results = self._results(items or [])
        accepted = any(result.ok for result in results)
        http_status = 200 if accepted else 400
        self._log_request(count, http_status, fault.describe() if fault else None)
        return Response(
            SendResponse(result=results).model_dump_json(exclude_none=True),
            http_status,
            media_type="application/json",
        )

    def _log_request(self, messages: int, status: int, fault: str | None = None) -> None:
        self.request_count += 1
        if self.record:
            self.requests.append(ReceivedRequest(self.now(), messages, status, fault))
        self._touch()

    def _results(self, items: list[Any]) -> list[SendResult]:
        whole = batch_reasons(len(items), batch_cap=self.batch_cap)
        if whole:
            return [SendResult.rejected(whole) for _ in items or [None]]
        results = []
        for index, item in enumerate(items):
            message, reasons = _parse_item(item, index)
            if message is not None and not reasons:
                reasons = validate_message(message, index)
            if message is not None and not reasons and not self._sender_available(message):
                reasons = [Reason(key=ReasonKey.NOT_AVAILABLE, ref=f"messages[{index}].from")]
            if message is None or reasons:
                results.append(SendResult.rejected(reasons))
            else:
                accepted = self._accept(message, item)
                results.append(SendResult(code=ResultCode.OK, message_id=accepted.message_id))
        return results

    def _sender_available(self, message: OutgoingMessage) -> bool:
        return self.senders is None or message.sender in self.senders

    def _accept(self, message: OutgoingMessage, received: dict[str, Any]) -> AcceptedMessage:
        record = AcceptedMessage(
            message_id=str(next(self._ids)),
            received=received,
            message=message,
            received_at=self.now(),
        )
        failure = self._failure(message)
        self.accepted_count += 1
        if self.record:
            self.messages.append(record)
        self._publish("message", record.to_json())
        task = asyncio.create_task(self._deliver(record, failure))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    def _failure(self, message: OutgoingMessage) -> StatusErrorCode | None:
        """Why WhatsApp will fail this accepted message, or None when it will be read."""
        phone = _phone_key(message.to or "")
        if phone in self.not_on_whatsapp:
            return StatusErrorCode.NOT_ON_WHATSAPP
        if not self.record:
            return None  # counting only: no per-recipient state kept
        now = self.now()
        recent = self._recent_sends.setdefault(phone, deque())
        while recent and recent[0] <= now - self.rate_limit.per:
            recent.popleft()
        if len(recent) >= self.rate_limit.messages:
            return StatusErrorCode.TOO_MANY_MESSAGES
        recent.append(now)
        if not message.is_template and not self.window_open(phone):
            return StatusErrorCode.OUTSIDE_SESSION_WINDOW
        return None

    # ----------------------------------------------------------- callbacks

    async def _deliver(self, record: AcceptedMessage, failure: StatusErrorCode | None) -> None:
        steps: list[tuple[DeliveryStatus, int]] = (
            [(DeliveryStatus.FAILED, int(failure))]
            if failure is not None
            else [(DeliveryStatus.SENT, 0), (DeliveryStatus.DELIVERED, 0), (DeliveryStatus.READ, 0)]
        )
        for status, error_code in steps:
            if self.callback_delay:
                await asyncio.sleep(self.callback_delay)
            entry = StatusRecord(status, error_code, int(self.now()))
            record.statuses.append(entry)
            self._publish("status", {"messageId": record.message_id, **entry.to_json()})
            if record.message.callback_url:
                await self._post_callback(record, entry, record.message.callback_url)

    async def _post_callback(self, record: AcceptedMessage, entry: StatusRecord, url: str) -> None:
        report = StatusReport(
            message_id=record.message_id,
            ts=entry.ts,
            status=entry.status,
            error_code=entry.error_code,
            options=record.message.callback_data,
        )
        # All nine documented keys, as in the provider's example (null when not applicable).
        body = [report.model_dump(mode="json")]
        for attempt in range(1, self.callback_attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                # At most as many posts as the pool has connections: thousands of
                # requests waiting on httpx's pool make each one slow (and time out).
                async with self._callback_slots():
                    response = await self._client().post(url, json=body)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            outcome = CallbackAttempt(
                record.message_id, entry.status, url, attempt, status, error, self.now()
            )
            record.callbacks.append(outcome)
            self._touch()
            if outcome.delivered:
                return
            if attempt < self.callback_attempts:
                await asyncio.sleep(self.callback_retry_delay * 2 ** (attempt - 1))
        logger.warning(
            "status callback %s for message %s to %s failed %d times; giving up",
            entry.status.wire,
            record.message_id,
            url,
            self.callback_attempts,
        )

    def _callback_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(_CALLBACK_CONNECTIONS)
        return self._slots

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            # Callbacks queue for a connection instead of failing with a pool
            # timeout when hundreds are due at once (the provider spreads them).
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(5.0, pool=None),
                limits=httpx.Limits(
                    max_connections=_CALLBACK_CONNECTIONS,
                    max_keepalive_connections=_CALLBACK_CONNECTIONS,
                ),
            )
        return self._http

    async def aclose(self) -> None:
        """Stop the callbacks in flight and close the emulator's HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the emulator over HTTP in the current event loop; yield its base URL."""
        try:
            async with serve_app(self.app, host, port) as base_url:
                yield base_url
        finally:
            await self.aclose()

    # -------------------------------------------------------------- control

    def _build_app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.aclose()

        return Starlette(
            routes=[
                Route(SEND_PATH, self._send, methods=["POST"]),
                Route("/_emulator/messages", self._list_messages, methods=["GET"]),
                Route("/_emulator/messages", self._reset, methods=["DELETE"]),
                Route("/_emulator/requests", self._list_requests, methods=["GET"]),
                Route("/_emulator/stats", self._stats, methods=["GET"]),
                Route("/_emulator/incoming", self._list_incoming, methods=["GET"]),
                Route("/_emulator/incoming", self._inject, methods=["POST"]),
                Route("/_emulator/faults", self._set_fault, methods=["POST"]),
                Route("/_emulator/faults", self._clear_faults, methods=["DELETE"]),
                Route("/_emulator/clock", self._clock_state, methods=["GET", "POST"]),
                Route("/_emulator/config", self._config, methods=["GET", "POST"]),
            ],
            lifespan=lifespan,
        )

    async def _list_messages(self, request: Request) -> Response:
        return JSONResponse([message.to_json() for message in self.messages])

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return Response(status_code=204)

    async def _list_requests(self, request: Request) -> Response:
        return JSONResponse([entry.to_json() for entry in self.requests])

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "messages": self.accepted_count,
                "requests": self.request_count,
                "inFlight": self.in_flight,
                "callbacksPending": len(self._tasks),
            }
        )

    async def _list_incoming(self, request: Request) -> Response:
        return JSONResponse([entry.to_json() for entry in self.incoming])

    async def _inject(self, request: Request) -> Response:
        body = await _json_object(request)
        if body is None:
            return _bad_request('send a JSON object such as {"from": "79034567890", "text": "hi"}')
        try:
            result = await self.inject_payload(body)
        except InvalidPhoneNumber as exc:
            return _bad_request(f"from: {exc}")
        except ValidationError as exc:
            return _bad_request(str(exc))
        return JSONResponse(result.to_json())

    async def _set_fault(self, request: Request) -> Response:
        body = await _json_object(request)
        try:
            if body is None:
                raise TypeError
            count = int(body.get("count", 1))
            if body.get("garble"):
                self.garble_next(count, status=int(body.get("status", 200)))
            elif "status" in body or "body" in body:
                text = body.get("body")
                self.fail_next(
                    count,
                    status=int(body.get("status", 500)),
                    body=None if text is None else str(text),
                )
            elif "delay" in body:
                self.delay_next(count, seconds=float(body["delay"]))
            else:
                raise TypeError
        except (TypeError, ValueError):
            return _bad_request(
                'send {"count": N} with {"status": 500[, "body": "..."]}, {"delay": seconds} '
                'or {"garble": true}'
            )
        return JSONResponse({"pending": len(self._faults)})

    async def _clear_faults(self, request: Request) -> Response:
        self.clear_faults()
        return Response(status_code=204)

    async def _clock_state(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _json_object(request)
            try:
                seconds = float((body or {})["advance"])
                self.advance_clock(seconds)
            except (KeyError, TypeError, ValueError) as exc:
                message = str(exc) if isinstance(exc, DevinoConfigError) else ""
                return _bad_request(message or 'send {"advance": seconds}')
        return JSONResponse({"now": self.now(), "owned": self._own_clock is not None})

    async def _config(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _json_object(request)
            if body is None:
                return _bad_request("send a JSON object")
            try:
                self._configure(body)
            except (TypeError, ValueError, KeyError) as exc:
                return _bad_request(f"bad configuration: {exc}")
        return JSONResponse(
            {
                "notOnWhatsApp": sorted(self.not_on_whatsapp),
                "rateLimit": {"messages": self.rate_limit.messages, "per": self.rate_limit.per},
                "sessionWindow": self.session_window,
                "callbackDelay": self.callback_delay,
                "responseDelay": self.response_delay,
                "webhookUrl": self.webhook_url,
            }
        )

    def _configure(self, body: Mapping[str, Any]) -> None:
        if "notOnWhatsApp" in body:
            self.not_on_whatsapp = {normalize_phone(str(n)) for n in body["notOnWhatsApp"]}
        if "rateLimit" in body:
            limit = body["rateLimit"]
            self.rate_limit = RateLimit(int(limit["messages"]), float(limit["per"]))
        if "sessionWindow" in body:
            self.session_window = float(body["sessionWindow"])
        if "callbackDelay" in body:
            self.callback_delay = float(body["callbackDelay"])
        if "responseDelay" in body:
            self.response_delay = float(body["responseDelay"])
        if "webhookUrl" in body:
            self.webhook_url = body["webhookUrl"] or None


def _phone_key(phone: str) -> str:
    try:
        return normalize_phone(phone)
    except InvalidPhoneNumber:
        return phone


def _parse_item(item: object, index: int) -> tuple[OutgoingMessage | None, list[Reason]]:
    """The message at `index` of a request, or the provider's reason it is not one."""
    if not isinstance(item, dict):
        return None, [Reason(key=ReasonKey.INVALID, ref=f"messages[{index}]")]
    try:
        return OutgoingMessage.model_validate(item), []
    except ValidationError as exc:
        first = exc.errors()[0]["loc"]
        where = f"messages[{index}].{first[0]}" if first else f"messages[{index}]"
        return None, [Reason(key=ReasonKey.INVALID, ref=where)]


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _bad_request(description: str) -> Response:
    return JSONResponse({"error": "bad request", "description": description}, status_code=400)


# ----------------------------------------------------------------- command


def add_arguments(
    parser: argparse.ArgumentParser, port_type: Callable[[str], int] = int
) -> argparse.ArgumentParser:
    """Add the emulator command's options to ``parser`` (``botkit emulator``)."""
    parser.add_argument(
        "--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on"
    )
    parser.add_argument(
        "--port", type=port_type, default=9000, help="port to listen on; 0 = any free"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("BOTKIT_DEVINO_API_KEY"),
        metavar="KEY",
        help="the only key accepted (default: $BOTKIT_DEVINO_API_KEY; unset: any key)",
    )
    parser.add_argument(
        "--webhook", metavar="URL", help="the bot's URL for incoming messages (none: not sent)"
    )
    parser.add_argument(
        "--session-window",
        type=float,
        default=DEFAULT_SESSION_WINDOW,
        metavar="SECONDS",
        help="seconds a user's message keeps the window open",
    )
    parser.add_argument(
        "--callback-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds between status callbacks",
    )
    parser.add_argument(
        "--response-delay",
        type=float,
        default=0.0,
        help="seconds before each send request is answered, as a slow provider (0)",
    )
    parser.add_argument(
        "--not-on-whatsapp",
        action="append",
        default=[],
        metavar="PHONE",
        help="a number whose messages fail with 2305 (repeatable)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="count messages and requests (GET /_emulator/stats) without keeping them: "
        "for benchmarks of millions of messages",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level",
    )
    return parser


def serve_from_args(args: argparse.Namespace, fail: Callable[[str, int], int]) -> int:
    """Serve an emulator configured by :func:`add_arguments`'s options until Ctrl-C.

    ``fail(message, exit_code)`` reports a problem and returns the exit code.
    """
    try:
        emulator = Emulator(
            api_key=args.api_key or None,
            webhook_url=args.webhook,
            session_window=args.session_window,
            callback_delay=args.callback_delay,
            response_delay=args.response_delay,
            not_on_whatsapp=args.not_on_whatsapp,
            record=not args.no_record,
        )
    except InvalidPhoneNumber as exc:
        return fail(f"--not-on-whatsapp: {exc}", 2)

    # The service's console format: one line per record, control characters
    # escaped, libraries' INFO chatter (a line per callback request) off.
    configure_logging("console", args.log_level.upper())

    def started(base_url: str) -> None:
        keys = "only the configured API key" if args.api_key else "any API key"
        print(
            f"Devino emulator listening on {base_url} (accepts {keys}); "
            f"send to {base_url}{SEND_PATH}",
            flush=True,
        )

    # uvicorn stops on Ctrl-C, then re-raises it for the caller: that is a clean stop here.
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_app(
                    emulator.app, args.host, args.port, log_level=args.log_level, on_started=started
                )
            )
    except ServingError as exc:
        return fail(str(exc), 3)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m botkit.devtools.emulator``: the same as ``botkit emulator``."""
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="python -m botkit.devtools.emulator",
            description="A local stand-in for the Devino WhatsApp API.",
        )
    )
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2

    def fail(message: str, code: int) -> int:
        for line in message.splitlines():
            print(f"botkit emulator: {line}", file=sys.stderr)
        return code

    return serve_from_args(args, fail)


if __name__ == "__main__":
    sys.exit(main())
