"""The agent API: people taking over conversations from the bot.

Behind ``BOTKIT_AGENT_TOKEN`` (a bearer token of its own, separate from the
send API's; unset, every route here answers 404):

==================================================  ======================================
``GET /api/handoffs``                               handed-off conversations, longest waiting
                                                    first (``?limit=``)
``GET /api/conversations/{user}``                   the transcript, newest last (``?before=``,
                                                    ``?limit=``), the handoff and the window
``POST /api/conversations/{user}/claim``            ``{"agent"}``: take it (409 if taken)
``POST /api/conversations/{user}/reply``            ``{"agent", "text"}`` or a ``"template"``
``POST /api/conversations/{user}/release``          ``{"agent"}``: back to the bot
``POST /api/conversations/{user}/handoff``          ``{"reason", "note"}``: an operator takes
                                                    over a conversation the bot is handling
``GET /api/agent/events``                           server-sent events of the notices below
==================================================  ======================================

The ``/agent`` inbox page (:mod:`botkit.service._agent_page`) uses the same
endpoints with the HttpOnly cookie its login form sets instead of the header.

:class:`AgentDesk` hears every committed turn's notices (``handoff.started``,
``handoff.claimed``, ``message.received``, ``message.sent``,
``handoff.ended``): it streams them to the page and posts the webhook ones to
``BOTKIT_AGENT_WEBHOOK_URL``, signed with HMAC-SHA256 over the body
(``X-Botkit-Signature: sha256=<hex>``), retried with backoff. Each post carries
a stable event id (``"id"`` in the body, ``X-Botkit-Event-Id``): delivery is at
least once, so a helpdesk de-duplicates by it.

With Redis the webhook posts from the shared notices stream through one
consumer group: a notice is acknowledged only once the helpdesk answered 2xx
(or refused it with a 4xx other than 429), and one pending on a worker that
died is taken by another after :data:`CLAIM_AFTER` s, so a killed worker loses
nothing that reached the stream. With the memory store the queue is this
process's: what it has not posted is lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from botkit import _metrics as metrics
from botkit._handoff import HandoffError, Notice
from botkit._outbound import Template
from botkit._policy import DeliveryRefused, OutsideSessionWindow, ReplyTooLong
from botkit._retry import RetryPolicy
from botkit._runtime import Runtime
from botkit._transcript import EntryKind, Handoff, TranscriptEntry, latest_statuses
from botkit._turn import Outcome, TurnOutcome
from botkit.devino.errors import InvalidPhoneNumber
from botkit.devino.validation import normalize_phone
from botkit.service._http import bearer_refusal, error, json_body, unavailable
from botkit.service._serving import server_stopping
from botkit.storage.base import SharedNotices, StorageError

if TYPE_CHECKING:
    from botkit.service._settings import Settings

log = logging.getLogger("botkit.agent")

WEBHOOK_EVENTS = frozenset({"handoff.started", "message.received", "handoff.ended"})
"""The notices posted to ``BOTKIT_AGENT_WEBHOOK_URL``."""

SIGNATURE_HEADER = "X-Botkit-Signature"
"""The webhook's signature header: ``sha256=<hex HMAC-SHA256 of the body>``."""

EVENT_ID_HEADER = "X-Botkit-Event-Id"
"""The post's stable event id (also ``"id"`` in the body): the same on every retry."""

WEBHOOK_GROUP = "webhook"
"""The consumer group of the shared notices stream the webhook posts from."""

CLAIM_AFTER = 30.0
"""Seconds a notice stays pending on a worker before another takes it (that worker died)."""

SESSION_COOKIE = "botkit_agent"
"""The cookie the ``/agent`` login form sets (HttpOnly, SameSite=Strict)."""

_M = TypeVar("_M", bound=BaseModel)

WEBHOOK_ATTEMPTS = 8
"""Tries of one agent webhook notice before it is dropped (and logged)."""
_QUEUE_LIMIT = 10_000
_SSE_HEARTBEAT = 10.0
_POLL = 0.25
_PRUNE_EVERY = 600.0
_PRUNE_IDLE = 86_400.0  # a consumer idle a day holding nothing: its worker is gone

STREAM_LIFETIME = 25.0
"""Seconds before an event stream ends by itself; the browser reconnects at once."""


def sign(secret: str, body: bytes) -> str:
    """The webhook signature of ``body``: ``sha256=<hex>`` (check it with hmac.compare_digest)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """What the login cookie holds: derived from the agent token, never the token itself."""
    return hmac.new(token.encode(), b"botkit agent session", hashlib.sha256).hexdigest()


class AgentDesk:
    """The agents' side of a running service: the page's live events and the webhook.

    ``runtime.on_turn`` feeds it; :meth:`start` and :meth:`stop` run the
    webhook's sender. Each worker posts its own turns' notices to the
    webhook. The pages' event streams get every worker's notices when the
    store is shared (Redis: a capped stream every worker appends to and
    reads), else this process's.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        token: str | None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        claim_after: float = CLAIM_AFTER,
    ) -> None:
        self.runtime = runtime
        self.token = token or None
        self.webhook_url = webhook_url or None
        self.webhook_secret = webhook_secret or token or ""
        self.retry = retry or RetryPolicy(WEBHOOK_ATTEMPTS, base_delay=0.5, max_delay=60.0)
        self._transport = transport
        self._listeners: set[asyncio.Queue[Notice]] = set()
        self.claim_after = claim_after
        self._outgoing: asyncio.Queue[tuple[str, Notice]] = asyncio.Queue(_QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self._started = False
        # With a store every worker shares, the pages hear every worker's turns
        # and the webhook posts from the shared stream (durable).
        store = runtime.store
        wanted = self.token or self.webhook_url
        self._shared = store if wanted and isinstance(store, SharedNotices) else None
        self._durable = self._shared is not None and self.webhook_url is not None
        self._reader: asyncio.Task[None] | None = None
        self._posting: asyncio.Task[None] | None = None
        self._sharing: set[asyncio.Task[None]] = set()
        self.caught_up = asyncio.Event()
        """Set while every notice from now on reaches this process's open streams."""
        if self._shared is None:
            self.caught_up.set()
        runtime.on_turn.append(self._heard)

    # -- notices -------------------------------------------------------------

    def _heard(self, outcome: TurnOutcome) -> None:
        notices = [n for n in outcome.notices if isinstance(n, Notice)]
        if not notices:
            return
        if self._shared is not None and self._started:
            task = asyncio.get_running_loop().create_task(self._share(notices))
            self._sharing.add(task)
            task.add_done_callback(self._sharing.discard)
            return
        self._tell(notices)
        self._queue(notices)

    def _queue(self, notices: list[Notice]) -> None:
        """Queue webhook notices in this process (memory store, or Redis failing)."""
        for notice in notices:
            if self.webhook_url and notice.event in WEBHOOK_EVENTS:
                try:
                    self._outgoing.put_nowait((uuid.uuid4().hex, notice))
                except asyncio.QueueFull:
                    metrics.AGENT_NOTICES_DROPPED.labels("queue full").inc()
                    log.warning("agent webhook queue full; dropped a %s notice", notice.event)

    def _tell(self, notices: list[Notice]) -> None:
        """Give notices to this process's open event streams."""
        for queue in self._listeners:
            for notice in notices:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(notice)

    async def _share(self, notices: list[Notice]) -> None:
        """Append the notices to the store's shared stream (this process's pages read them
        back from there); when the store fails, tell this process's pages at least."""
        assert self._shared is not None
        payloads = [json.dumps(n.to_dict(), separators=(",", ":")) for n in notices]
        group = WEBHOOK_GROUP if self._durable else ""
        try:
            dropped = await self._shared.notices_append(payloads, group=group)
        except StorageError:
            if self._reader is not None:
                self._tell(notices)
            self._queue(notices)  # not durable, but posted if this process lives
            return
        if dropped:
            metrics.AGENT_NOTICES_DROPPED.labels("stream full").inc(dropped)
            log.warning("the agent notices stream is full: dropped %d un-posted notices", dropped)

    async def _read_shared(self) -> None:
        """Every worker's notices, from the shared stream, to this process's open streams."""
        assert self._shared is not None
        position, failures = "$", 0
        while True:
            if not self._listeners:
                position = "$"  # nobody listens: nothing to catch up on later
                self.caught_up.clear()
                await asyncio.sleep(0.1)
                continue
            try:
                position, payloads = await self._shared.notices_read(position, 1.0)
                self.caught_up.set()
            except StorageError as exc:
                failures += 1
                if failures == 1:
                    log.warning("cannot read the agents' shared notices: %s", exc)
                await asyncio.sleep(self.retry.delay(min(failures, 10) - 1))
                continue
            failures = 0
            self._tell([Notice.from_dict(json.loads(p)) for p in payloads])

    def listen(self) -> asyncio.Queue[Notice]:
        """A queue of the notices of this process's turns as they commit; :meth:`unlisten` it."""
        queue: asyncio.Queue[Notice] = asyncio.Queue(1000)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Notice]) -> None:
        """Stop filling ``queue``."""
        self._listeners.discard(queue)

    # -- the webhook -----------------------------------------------------------

    def start(self) -> None:
        """Start posting webhook notices (when a URL is set) and reading the shared ones."""
        self._started = True
        if self.webhook_url and self._task is None:
            self._task = asyncio.create_task(self._post_forever(), name="botkit-agent-webhook")
        if self._durable:
            self._posting = asyncio.create_task(self._post_shared(), name="botkit-agent-posts")
        if self.token and self._shared is not None and self._reader is None:
            self._reader = asyncio.create_task(self._read_shared(), name="botkit-agent-notices")

    async def stop(self, grace: float = 5.0) -> None:
        """Post what is queued (for up to ``grace`` s), then stop.

        With Redis, notices being appended get ``grace`` s to reach the stream;
        what is not posted yet stays there for the other or the next worker.
        """
        self._started = False
        if self._sharing:
            await asyncio.wait(set(self._sharing), timeout=grace)
        reader, self._reader = self._reader, None
        posting, self._posting = self._posting, None
        for running in (reader, posting, *self._sharing):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, StorageError):
                    await running
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._outgoing.join()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _post_forever(self) -> None:
        async with httpx.AsyncClient(timeout=10.0, transport=self._transport) as client:
            while True:
                event_id, notice = await self._outgoing.get()
                try:
                    await self._post(client, event_id, notice)
                finally:
                    self._outgoing.task_done()

    async def _post_shared(self) -> None:
        """Post the webhook notices of every worker from the shared stream, as one consumer
        of the webhook's group; acknowledge each once the helpdesk took it."""
        assert self._shared is not None
        store = self._shared
        consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        failures = 0
        ready = False
        prune_at = time.monotonic() + _PRUNE_EVERY
        async with httpx.AsyncClient(timeout=10.0, transport=self._transport) as client:
            while True:
                try:
                    if not ready:
                        await store.notices_group(WEBHOOK_GROUP)
                        ready = True
                    entries = await store.notices_take(
                        WEBHOOK_GROUP, consumer, idle=self.claim_after, block=1.0
                    )
                except StorageError as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("cannot read the agent notices to post: %s", exc)
                    await asyncio.sleep(self.retry.delay(min(failures, 10) - 1))
                    continue
                failures = 0
                if time.monotonic() >= prune_at:  # consumers of workers gone long ago
                    prune_at = time.monotonic() + _PRUNE_EVERY
                    with contextlib.suppress(StorageError):
                        await store.notices_prune(WEBHOOK_GROUP, _PRUNE_IDLE)
                for entry_id, payload in entries:
                    notice = Notice.from_dict(json.loads(payload))
                    done = True
                    if notice.event in WEBHOOK_EVENTS:

                        async def hold(entry: str = entry_id) -> None:
                            with contextlib.suppress(StorageError):
                                await store.notices_hold(WEBHOOK_GROUP, consumer, [entry])

                        done = await self._post(client, entry_id, notice, hold=hold)
                    if done:
                        # Unacknowledged (Redis failing): posted again later, at least once.
                        with contextlib.suppress(StorageError):
                            await store.notices_ack(WEBHOOK_GROUP, [entry_id])

    async def _post(
        self,
        client: httpx.AsyncClient,
        event_id: str,
        notice: Notice,
        hold: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """POST one notice, retrying transport errors, 429 and 5xx with backoff; False when
        the retries gave up (a pending stream entry is then taken again later).

        ``hold`` is called between tries so that no other worker takes it meanwhile.
        """
        assert self.webhook_url is not None
        data = {"id": event_id, **notice.to_dict()}
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Botkit-Event": notice.event,
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: sign(self.webhook_secret, body),
        }
        failed = 0
        while True:
            try:
                answer = await client.post(self.webhook_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if answer.status_code < 300:
                    return True
                if answer.status_code != 429 and answer.status_code < 500:
                    metrics.AGENT_NOTICES_DROPPED.labels("refused").inc()
                    log.warning(
                        "the agent webhook refused a %s notice (HTTP %s); not retried",
                        notice.event,
                        answer.status_code,
                    )
                    return True
                problem = f"HTTP {answer.status_code}"
            failed += 1
            if self.retry.gives_up(after=failed):
                log.warning(
                    "gave up posting a %s notice to the agent webhook after %d attempts (%s)",
                    notice.event,
                    failed,
                    problem,
                )
                return False
            log.info("agent webhook attempt %d failed (%s); retrying", failed, problem)
            delay = self.retry.delay(failed - 1)
            while delay > 0:  # hold the entry at least three times per claim_after
                step = min(delay, self.claim_after / 3)
                if hold is not None:
                    await hold()
                await asyncio.sleep(step)
                delay -= step
            if hold is not None:
                await hold()


# -- the HTTP API ----------------------------------------------------------------


class _AgentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str = Field(default="agent", min_length=1, max_length=64)


class _ReplyTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    params: dict[str, str] | list[str] | None = None
    language: str | None = None


class _ReplyBody(_AgentBody):
    text: str | None = Field(default=None, min_length=1)
    template: _ReplyTemplate | None = None


class _HandoffBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=200)
    note: str = Field(default="", max_length=2000)


def desk_of(request: Request) -> AgentDesk:
    """The running service's :class:`AgentDesk`."""
    desk: AgentDesk = request.app.state.service.agents
    return desk


def refusal(request: Request) -> Response | None:
    """404 when the agent API is off, 401 without the token (header or login cookie)."""
    token = desk_of(request).token
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if (
        token
        and cookie
        and not request.headers.get("authorization")
        and hmac.compare_digest(cookie.encode(), session_value(token).encode())
    ):
        # A form on another site cannot send JSON with the cookie (SameSite=Strict
        # already keeps it home); a state-changing call must be JSON.
        if request.method == "POST" and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return error(415, "json_required", "send the body as application/json")
        return None
    return bearer_refusal(request, token, "BOTKIT_AGENT_TOKEN")


async def _body(request: Request, model: type[_M]) -> _M | Response:
    data = await json_body(request) if (await request.body()).strip() else {}
    if isinstance(data, Response):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": str(e["msg"])} for e in exc.errors()
        ]
        return error(422, "invalid_body", "see errors", errors=errors)


def _user(request: Request) -> str | Response:
    try:
        return normalize_phone(request.path_params["user"])
    except InvalidPhoneNumber as exc:
        return error(422, "invalid_phone", str(exc))


def _int_param(request: Request, name: str, default: int, most: int) -> int | Response:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        return error(422, "invalid_query", f"{name} must be a whole number from 1 to {most}")
    return int(raw)


def handoff_json(handoff: Handoff, now: float) -> dict[str, Any]:
    """A handoff as the API shows it: its fields, its status and how long it has waited."""
    out: dict[str, Any] = {
        "status": handoff.status.value,
        "since": handoff.since,
        "waiting": max(0.0, now - handoff.since),
        "reason": handoff.reason,
        "note": handoff.note,
        "by": handoff.by,
        "agent": handoff.agent,
        "last_agent_at": handoff.last_agent_at,
        "last_message": None
        if handoff.last_at is None
        else {"text": handoff.last_text, "at": handoff.last_at},
    }
    return out


def entries_json(entries: tuple[TranscriptEntry, ...]) -> list[dict[str, Any]]:
    """Entries as the API shows them; each outgoing message gets its latest known ``status``."""
    latest = latest_statuses(entries)
    shown = []
    for entry in entries:
        item = entry.to_dict()
        if entry.kind is EntryKind.OUT:
            item["status"] = latest.get(str(entry.data.get("ref")), "queued")
        shown.append(item)
    return shown


async def list_handoffs(request: Request) -> Response:
    """``GET /api/handoffs``: the waiting and taken conversations, longest waiting first."""
    refused = refusal(request)
    if refused is not None:
        return refused
    limit = _int_param(request, "limit", 100, 1000)
    if isinstance(limit, Response):
        return limit
    runtime = desk_of(request).runtime
    try:
        found, total = await runtime.store.handoffs(limit)
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    now = runtime.clock.now()
    items = [{"user": user, **handoff_json(handoff, now)} for user, handoff in found]
    return JSONResponse({"total": total, "handoffs": items})


async def conversation(request: Request) -> Response:
    """``GET /api/conversations/{user}``: a transcript page, the handoff, the window."""
    refused = refusal(request)
    if refused is not None:
        return refused
    user = _user(request)
    if isinstance(user, Response):
        return user
    limit = _int_param(request, "limit", 50, 500)
    if isinstance(limit, Response):
        return limit
    runtime = desk_of(request).runtime
    try:
        page = await runtime.store.transcript(
            user, before=request.query_params.get("before"), limit=limit
        )
        record = await runtime.store.load(user)
    except ValueError as exc:
        return error(422, "invalid_query", str(exc))
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    now = runtime.clock.now()
    window = runtime.policy.window
    return JSONResponse(
        {
            "user": user,
            "entries": entries_json(page.entries),
            "before": page.before,
            "handoff": None if record.handoff is None else handoff_json(record.handoff, now),
            "state": record.state,
            "opted_out": record.opted_out,
            "window": {
                "open": window.is_open(record.last_inbound, now),
                "closes_at": window.closes_at(record.last_inbound),
            },
            "now": now,
        }
    )


async def claim(request: Request) -> Response:
    """``POST .../claim``: the agent takes the conversation; 409 when another has it."""
    refused, user, body = await _prepare(request, _AgentBody)
    if refused is not None:
        return refused
    runtime = desk_of(request).runtime
    try:
        handoff = await runtime.claim(user, body.agent)
    except HandoffError as exc:
        return error(409, exc.reason, str(exc))
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    return JSONResponse({"handoff": handoff_json(handoff, runtime.clock.now())})


async def reply(request: Request) -> Response:
    """``POST .../reply``: the agent's message, through the outbox and the window policy."""
    refused, user, body = await _prepare(request, _ReplyBody)
    if refused is not None:
        return refused
    if body.text is None and body.template is None:
        return error(422, "invalid_body", "give text or a template")
    template = None
    if body.template is not None:
        t = body.template
        template = Template(t.id, t.params, language=t.language)
    runtime = desk_of(request).runtime
    try:
        queued = await runtime.agent_reply(user, body.agent, body.text, template=template)
    except HandoffError as exc:
        return error(409, exc.reason, str(exc))
    except OutsideSessionWindow as exc:
        return error(
            409,
            exc.reason,
            "the 24-hour window is closed: only a template can reach the user now",
            last_inbound=exc.last_inbound,
        )
    except DeliveryRefused as exc:
        return error(409, exc.reason, str(exc))
    except ReplyTooLong as exc:
        return error(422, exc.reason, str(exc), length=exc.length, limit=exc.limit)
    except ValueError as exc:
        return error(422, "invalid_body", str(exc))
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    return JSONResponse(
        {"status": "queued", "mode": queued[0].mode.value, "messages": [m.ref for m in queued]},
        status_code=202,
    )


async def release(request: Request) -> Response:
    """``POST .../release``: back to the bot; its ``handoff_ended`` handlers run."""
    refused, user, body = await _prepare(request, _AgentBody)
    if refused is not None:
        return refused
    try:
        outcome = await desk_of(request).runtime.release(user, body.agent)
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    if outcome.outcome is Outcome.IGNORED:
        return error(409, "not_handed_off", "the conversation is not handed off")
    return JSONResponse({"status": "released", "replies": len(outcome.replies)})


async def hand_off(request: Request) -> Response:
    """``POST .../handoff``: an operator takes over a conversation the bot is handling."""
    refused, user, body = await _prepare(request, _HandoffBody)
    if refused is not None:
        return refused
    try:
        started = await desk_of(request).runtime.hand_off(user, reason=body.reason, note=body.note)
    except StorageError:
        return unavailable("the conversation store is unavailable; retry")
    if not started:
        return error(409, "already_handed_off", "the conversation is handed off already")
    return JSONResponse({"status": "handed_off"})


async def events(request: Request) -> Response:
    """``GET /api/agent/events``: server-sent events, one per notice; a comment as heartbeat.

    A stream ends after :data:`STREAM_LIFETIME` (the browser reconnects at
    once) and as soon as the server begins to shut down.
    """
    refused = refusal(request)
    if refused is not None:
        return refused
    desk = desk_of(request)
    stopping = server_stopping(request)

    async def stream() -> AsyncIterator[str]:
        queue = desk.listen()
        try:
            # Once this worker reads every worker's notices: none is missed from here on.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(desk.caught_up.wait(), 2.0)
            yield "retry: 1000\n: connected\n\n"
            started = last = time.monotonic()
            while not stopping():
                try:
                    notice = await asyncio.wait_for(queue.get(), _POLL)
                except TimeoutError:
                    notice = None
                now = time.monotonic()
                if notice is not None:
                    data = json.dumps(notice.to_dict(), separators=(",", ":"), ensure_ascii=False)
                    yield f"event: {notice.event}\ndata: {data}\n\n"
                    last = now
                elif now - last > _SSE_HEARTBEAT:
                    yield ": heartbeat\n\n"
                    last = now
                if now - started > STREAM_LIFETIME:
                    break
        finally:
            desk.unlisten(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _prepare(request: Request, model: type[_M]) -> tuple[Response | None, str, _M]:
    """Auth, the user of the path and the JSON body: the refusal, or the user and body."""
    refused = refusal(request)
    if refused is None:
        user = _user(request)
        if isinstance(user, Response):
            refused = user
        else:
            body = await _body(request, model)
            if isinstance(body, Response):
                refused = body
            else:
                return None, user, body
    return refused, "", model.model_construct()


def routes() -> list[BaseRoute]:
    """The agent API's routes."""
    base = "/api/conversations/{user}"
    return [
        Route("/api/handoffs", list_handoffs, methods=["GET"]),
        Route(base, conversation, methods=["GET"]),
        Route(f"{base}/claim", claim, methods=["POST"]),
        Route(f"{base}/reply", reply, methods=["POST"]),
        Route(f"{base}/release", release, methods=["POST"]),
        Route(f"{base}/handoff", hand_off, methods=["POST"]),
        Route("/api/agent/events", events, methods=["GET"]),
    ]


def desk_for(runtime: Runtime, settings: Settings) -> AgentDesk:
    """The :class:`AgentDesk` the settings describe.

    Raises :class:`~botkit.service.SettingsError` for a webhook URL with no key to sign
    its posts with.
    """
    from botkit.service._settings import SettingsError

    if settings.agent_webhook_url and not (
        settings.secret("agent_webhook_secret") or settings.secret("agent_token")
    ):
        raise SettingsError(
            "BOTKIT_AGENT_WEBHOOK_URL: set BOTKIT_AGENT_WEBHOOK_SECRET (or BOTKIT_AGENT_TOKEN), "
            "the key its posts are signed with"
        )
    return AgentDesk(
        runtime,
        token=settings.secret("agent_token"),
        webhook_url=settings.agent_webhook_url,
        webhook_secret=settings.secret("agent_webhook_secret"),
        retry=settings.retry_policy(attempts=WEBHOOK_ATTEMPTS),
        claim_after=settings.agent_webhook_claim_after,
    )
