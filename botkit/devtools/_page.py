"""The dev chat page that ``botkit dev`` serves at ``/_dev``.

A WhatsApp-like page to talk to the bot as any phone number. What it sends
goes through the provider emulator, so it travels the real webhook path;
what the bot sends arrives at the emulator as the JSON the provider would
receive, and the emulator's status callbacks go back to the bot. Beside the
chat the page shows the user's flow and state, ``ctx.data``, the 24-hour
window (with a control to move the dev clock), and each outbound message's
JSON and statuses.

=====================================  =============================================
``GET /_dev``                          the page (HTML, CSS and JavaScript, no CDN)
``GET /_dev/static/...``               its files
``GET /_dev/api/info``                 the bot: name, flows, default template
``POST /_dev/api/send``                send as a user: ``{"user", "text"}``, or
                                       ``"media": {"url", "type", "caption"}``,
                                       ``"location": {"latitude", "longitude"}``,
                                       ``"contact": {"name", "phone"}``
``POST /_dev/api/bot-send``            the bot writes first: ``{"user", "text",
                                       "template": {"id", "params"}}`` (bot.send)
``GET /_dev/api/conversation/{user}``  state, data, last inbound, window
``POST /_dev/api/clock``               ``{"hours": 25}`` moves the dev clock
``GET /_dev/api/events``               server-sent events: the :class:`DevFeed`
``GET /_dev/api/feed?after=N``         the same entries as one JSON list
``GET /_dev/api/campaigns``             every campaign's live totals (the Campaigns card)
=====================================  =============================================
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from botkit._clock import ManualClock
from botkit._events import EventKind
from botkit._outbound import Template
from botkit._policy import DeliveryRefused
from botkit._runtime import Runtime
from botkit._turn import Outcome, TurnOutcome
from botkit.devino.errors import InvalidPhoneNumber
from botkit.devino.validation import normalize_phone
from botkit.devtools.emulator import Emulator, EmulatorEvent
from botkit.service._serving import server_stopping

if TYPE_CHECKING:
    from botkit.service._service import Service


class PageHost(Protocol):
    """What the chat page needs of the dev server (``botkit.devtools._server``)."""

    @property
    def app(self) -> Starlette: ...

    @property
    def emulator(self) -> Emulator: ...

    @property
    def clock(self) -> ManualClock: ...


__all__ = ["DevFeed", "routes"]

STATIC = Path(__file__).parent / "static"
PREFIX = "/_dev"

FEED_SIZE = 5000
"""Entries kept for replay: a page opened (or reconnected) later still sees the history."""

STREAM_LIFETIME = 25.0
"""Seconds before an event stream ends by itself; the browser reconnects and resumes.

A server that gives no sign of shutting down (see :func:`~botkit.service._serving.server_stopping`)
then still waits at most this long for the stream.
"""

POLL = 0.2
"""How often an idle stream checks whether the server is stopping."""

HEARTBEAT = 10.0
"""Seconds of silence after which a stream sends a comment, so proxies keep it open."""


class DevFeed:
    """Everything the page shows, in order: one numbered entry per thing that happened.

    Entries come from the emulator (``message``: the provider received a
    message, as JSON; ``status``: a message's status changed; ``user``: a
    user message from elsewhere, such as ``POST /_provider/_emulator/incoming``),
    from the runtime (``turn``: a turn ran, with the user's new state;
    ``refused``) and from the page's own API (``user`` before a message is
    injected and ``delivered`` once the webhook answered, ``clock``).
    Each entry is a JSON object with ``id``, ``kind``, ``at`` (dev clock)
    and, when it concerns one user, ``user``.
    """

    def __init__(self, emulator: Emulator, size: int = FEED_SIZE) -> None:
        self._emulator = emulator
        self._events = emulator.subscribe(maxsize=size)
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self.epoch = secrets.token_hex(4)
        """Names this feed in event ids, so a page open across a restart starts over."""
        self._changed = asyncio.Event()
        self._users_of: dict[str, str] = {}  # provider messageId -> user, for statuses
        self._skip_incoming: set[str] = set()
        self._runtime: Runtime | None = None

    # -- writing -------------------------------------------------------------

    def attach(self, runtime: Runtime) -> None:
        """Listen to ``runtime``'s turns and refusals (once; later calls do nothing)."""
        if self._runtime is runtime:
            return
        self._runtime = runtime
        runtime.on_turn.append(self._turn)
        runtime.on_refused.append(self._refused)

    def add(self, kind: str, **data: Any) -> dict[str, Any]:
        """Append an entry (after the emulator's pending events) and wake the readers."""
        self._pull()
        return self._add(kind, data)

    def _add(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        entry = {"id": next(self._ids), "kind": kind, "at": self._emulator.now(), **data}
        self._entries.append(entry)
        self._changed.set()
        self._changed = asyncio.Event()
        return entry

    def skip_incoming(self, incoming_id: str) -> None:
        """The page already shows this injected message: drop the emulator's copy."""
        self._skip_incoming.add(incoming_id)
        self._pull()

    def _pull(self) -> None:
        """Move the emulator's events into the feed, in the order they happened."""
        while not self._events.empty():
            self._from_emulator(self._events.get_nowait())

    def _from_emulator(self, event: EmulatorEvent) -> None:
        data = event.data
        if event.kind == "message":
            message = data.get("message") or {}
            user = str(message.get("to") or "")
            message_id = str(data.get("messageId"))
            self._users_of[message_id] = user
            self._add("message", {"user": user, "messageId": message_id, "message": message})
        elif event.kind == "status":
            message_id = str(data.get("messageId"))
            self._add("status", {"user": self._users_of.get(message_id), **data})
        elif event.kind == "incoming":
            incoming = data.get("incoming") or {}
            incoming_id = str(incoming.get("incomingMessageId"))
            if incoming_id in self._skip_incoming:
                self._skip_incoming.discard(incoming_id)
                return
            self._add(
                "user",
                {
                    "user": str(incoming.get("from") or ""),
                    "payload": incoming,
                    "incomingMessageId": incoming_id,
                    "webhookStatus": data.get("webhookStatus"),
                    "webhookError": data.get("webhookError"),
                },
            )
        elif event.kind == "reset":
            self._add("reset", {})

    def _turn(self, outcome: TurnOutcome) -> None:
        if outcome.outcome is Outcome.DUPLICATE:
            return
        if outcome.kind is EventKind.STATUS and outcome.outcome in (
            Outcome.UNHANDLED,
            Outcome.IGNORED,
        ):
            return  # three per message sent: noise unless a status handler ran
        error = None
        if outcome.error is not None:
            error = f"{type(outcome.error).__name__}: {outcome.error}"
        self.add(
            "turn",
            user=outcome.user,
            event=outcome.kind,
            outcome=outcome.outcome,
            handler=outcome.handler,
            state=outcome.state,
            error=error,
            errorHandled=outcome.error_handled,
        )

    def _refused(self, refused: DeliveryRefused) -> None:
        self.add("refused", user=refused.user, reason=refused.reason, message=str(refused))

    # -- reading -------------------------------------------------------------

    def since(self, after: int) -> list[dict[str, Any]]:
        """The entries newer than ``after``, oldest first (as many as are still kept)."""
        self._pull()
        return [e for e in self._entries if e["id"] > after]

    async def wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        """The entries newer than ``after``, waiting up to ``timeout`` s for one ([] then)."""
        found = self.since(after)
        if found:
            return found
        changed = asyncio.ensure_future(self._changed.wait())
        emulated = asyncio.ensure_future(self._events.get())
        try:
            await asyncio.wait({changed, emulated}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            changed.cancel()
            emulated.cancel()  # an event it did not take stays in the queue
        if emulated.done() and not emulated.cancelled():
            self._from_emulator(emulated.result())
        return self.since(after)

    def users(self) -> list[str]:
        """The numbers that appear in the feed, most recent first."""
        seen: dict[str, None] = {}
        for entry in reversed(self.since(0)):
            user = entry.get("user")
            if user:
                seen.setdefault(user, None)
        return list(seen)


def _sse(entry: dict[str, Any], epoch: str) -> str:
    body = json.dumps(entry, ensure_ascii=False, default=str)
    return f"id: {epoch}:{entry['id']}\ndata: {body}\n\n"


def _resume_point(last_event_id: str | None, after: str | None, feed: DevFeed) -> tuple[int, bool]:
    """Where a stream starts, and whether the page must forget what it has (another feed)."""
    if last_event_id:
        epoch, _, number = last_event_id.partition(":")
        if epoch != feed.epoch or not number.isdecimal():
            return 0, True  # the server restarted since: replay this feed from the start
        return int(number), False
    return (int(after), False) if after and after.isdecimal() else (0, False)


async def _stream(
    feed: DevFeed, after: int, reset: bool, stopping: Callable[[], bool], lifetime: float
) -> AsyncIterator[str]:
    # Reconnect quickly: the browser resumes from the last id it saw.
    hello = json.dumps({"kind": "hello", "reset": reset, "epoch": feed.epoch})
    yield f"retry: 500\ndata: {hello}\n\n"
    started = last_write = time.monotonic()
    while not stopping():
        entries = await feed.wait(after, POLL)
        for entry in entries:
            yield _sse(entry, feed.epoch)
            after = entry["id"]
        now = time.monotonic()
        if entries:
            last_write = now
        elif now - last_write > HEARTBEAT:
            yield ": keep-alive\n\n"
            last_write = now
        if now - started > lifetime:
            break


# -- request helpers -------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(data: Any) -> Response:
    """JSON that tolerates what a bot keeps in ``ctx.data`` (dates, sets... as strings)."""
    return Response(
        json.dumps(data, ensure_ascii=False, default=str), media_type="application/json"
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _incoming_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The wire fields of the user's message (ValueError says what is missing)."""
    if isinstance(body.get("media"), dict):
        media = body["media"]
        url, mime_type = _text(media.get("url")), _text(media.get("type"))
        if url is None or mime_type is None:
            raise ValueError("media needs url and type (e.g. image/jpeg)")
        fields: dict[str, Any] = {"contentUrl": url, "contentType": mime_type}
        name = _text(media.get("name")) or url.rstrip("/").rsplit("/", 1)[-1]
        if name:
            fields["contentName"] = name
        caption = _text(media.get("caption"))
        if caption:
            fields["text"] = caption
        return fields
    if isinstance(body.get("location"), dict):
        where = body["location"]
        try:
            latitude, longitude = float(where["latitude"]), float(where["longitude"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("location needs numeric latitude and longitude") from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError("latitude is -90..90 and longitude -180..180")
        geo: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        for key, wire in (("name", "addressName"), ("address", "address")):
            if _text(where.get(key)):
                geo[wire] = _text(where.get(key))
        return {"whatsAppGeoLocation": geo}
    if isinstance(body.get("contact"), dict):
        card = body["contact"]
        who, number = _text(card.get("name")), _text(card.get("phone"))
        if who is None or number is None:
            raise ValueError("contact needs name and phone")
        digits = "".join(c for c in number if c.isascii() and c.isdigit())
        contact = {
            "contactName": [{"formattedName": who, "firstName": who.split()[0]}],
            "phones": [{"phone": number, "waId": digits, "type": "CELL"}],
        }
        return {"whatsAppContacts": [contact]}
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give text, media, location or contact")
    return {"text": text}


# -- the routes ------------------------------------------------------------------


def routes(server: PageHost) -> list[BaseRoute]:
    """The page, its files and its API, for ``botkit dev`` to mount beside the bot."""
    feed = DevFeed(server.emulator)

    def service() -> Service:
        found: Service = server.app.state.service
        feed.attach(found.runtime)
        return found

    async def page(request: Request) -> Response:
        service()
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def info(request: Request) -> Response:
        svc = service()
        policy = svc.runtime.policy
        template = policy.default_template
        flows = {
            name: {
                "states": list(flow.state_names),
                "initial": flow.initial,
                "final": sorted(flow.final),
                "triggers": list(flow.triggers),
                "timeout": flow.timeout,
            }
            for name, flow in svc.runtime.flows.items()
        }
        return _json(
            {
                "bot": svc.bot.name,
                "flows": flows,
                "defaultTemplate": template.to_dict() if template else None,
                "windowLength": policy.window.length,
                "users": feed.users(),
                "now": server.clock.now(),
                "clockOffset": server.clock.offset,
            }
        )

    async def send(request: Request) -> Response:
        service()
        body = await _body(request)
        if body is None:
            return _error(400, "send a JSON object")
        try:
            user = normalize_phone(str(body.get("user") or ""))
            fields = _incoming_fields(body)
        except InvalidPhoneNumber as exc:
            return _error(422, f"user: {exc}")
        except ValueError as exc:
            return _error(422, str(exc))
        # Shown before it travels: the bot's replies may reach the emulator
        # before the webhook has answered the injection.
        entry = feed.add("user", user=user, payload={"from": user, **fields})
        result = await server.emulator.inject_payload({"from": user, **fields})
        incoming_id = str(result.incoming.get("incomingMessageId"))
        feed.skip_incoming(incoming_id)
        feed.add(
            "delivered",
            user=user,
            ref=entry["id"],
            incomingMessageId=incoming_id,
            webhookStatus=result.status_code,
            webhookError=result.error,
        )
        return _json(
            {
                "ref": entry["id"],
                "incomingMessageId": incoming_id,
                "webhookStatus": result.status_code,
                "webhookError": result.error,
            }
        )

    async def bot_send(request: Request) -> Response:
        svc = service()
        body = await _body(request)
        if body is None:
            return _error(400, "send a JSON object")
        text = _text(body.get("text"))
        template = None
        raw = body.get("template")
        if isinstance(raw, dict) and _text(raw.get("id")):
            params = raw.get("params") or []
            if not isinstance(params, list | dict):
                return _error(422, "template params are a list")
            template = Template(str(_text(raw.get("id"))), params)
        if text is None and template is None:
            return _error(422, "give text, a template, or both")
        try:
            user = normalize_phone(str(body.get("user") or ""))
            queued = await svc.runtime.send(user, text, template=template)
        except InvalidPhoneNumber as exc:
            return _error(422, f"user: {exc}")
        except DeliveryRefused as exc:  # the runtime reported it to the feed too
            return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=409)
        return _json({"queued": [m.to_dict() for m in queued]})

    async def conversation(request: Request) -> Response:
        svc = service()
        try:
            user = normalize_phone(request.path_params["user"])
        except InvalidPhoneNumber as exc:
            return _error(422, f"user: {exc}")
        stored = await svc.store.load(user)
        now = server.clock.now()
        window = svc.runtime.policy.window
        flow_name, _, state = (stored.state or "").partition(":")
        flow = svc.runtime.flows.get(flow_name) if stored.state else None
        return _json(
            {
                "user": user,
                "state": stored.state,
                "flow": flow_name or None,
                "flowState": state or None,
                "allowed": list(flow.allowed_triggers(state)) if flow else [],
                "data": stored.data,
                "lastInbound": stored.last_inbound,
                "lastActive": stored.last_active,
                "optedOut": stored.opted_out,
                "window": {
                    "open": window.is_open(stored.last_inbound, now),
                    "closesAt": window.closes_at(stored.last_inbound),
                    "length": window.length,
                },
                "timers": [
                    {"name": t.name, "due": t.due, "data": t.data}
                    for t in sorted(stored.timers.values(), key=lambda t: t.due)
                ],
                "now": now,
                "clockOffset": server.clock.offset,
            }
        )

    async def clock(request: Request) -> Response:
        service()
        body = await _body(request)
        try:
            hours = float((body or {})["hours"])
            if not 0 < hours <= 24 * 365:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            return _error(422, 'send {"hours": N} with N > 0')
        now = server.clock.advance(hours=hours)
        feed.add("clock", hours=hours, now=now, offset=server.clock.offset)
        return _json({"now": now, "offset": server.clock.offset})

    async def events(request: Request) -> Response:
        service()
        after, reset = _resume_point(
            request.headers.get("last-event-id"), request.query_params.get("after"), feed
        )
        try:  # tests ask for short streams to see the browser resume
            lifetime = min(float(request.query_params["lifetime"]), STREAM_LIFETIME)
        except (KeyError, ValueError):
            lifetime = STREAM_LIFETIME
        return StreamingResponse(
            _stream(feed, after, reset, server_stopping(request), lifetime),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def feed_json(request: Request) -> Response:
        service()
        given = request.query_params.get("after") or "0"
        return _json(feed.since(int(given) if given.isdecimal() else 0))

    async def campaigns(request: Request) -> Response:
        store = service().store.campaigns()
        found = [(await store.totals(c)).to_dict() for c in await store.all()]
        return _json(sorted(found, key=lambda c: c["created_at"]))

    return [
        Route(PREFIX, page, methods=["GET"]),
        Route(f"{PREFIX}/", page, methods=["GET"]),
        Mount(f"{PREFIX}/static", app=StaticFiles(directory=STATIC), name="dev-static"),
        Route(f"{PREFIX}/api/info", info, methods=["GET"]),
        Route(f"{PREFIX}/api/send", send, methods=["POST"]),
        Route(f"{PREFIX}/api/bot-send", bot_send, methods=["POST"]),
        Route(f"{PREFIX}/api/conversation/{{user}}", conversation, methods=["GET"]),
        Route(f"{PREFIX}/api/clock", clock, methods=["POST"]),
        Route(f"{PREFIX}/api/events", events, methods=["GET"]),
        Route(f"{PREFIX}/api/feed", feed_json, methods=["GET"]),
        Route(f"{PREFIX}/api/campaigns", campaigns, methods=["GET"]),
    ]
