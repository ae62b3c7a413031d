"""The web service: the provider's webhooks, the send API, health and metrics.

``create_app(bot, settings)`` returns a Starlette application:

==========================================  =====================================
``POST /whatsapp/incoming/{token}``          incoming messages (one or an array)
``POST /whatsapp/status/{token}``            status callbacks (one or an array)
``POST /api/send``                           send from another system (Bearer token); with
                                             "at"/"after": later (202 with its id)
``DELETE /api/scheduled/{id}``               cancel a message scheduled for later
``GET /healthz``, ``/readyz``, ``/metrics``  liveness, readiness, Prometheus
==========================================  =====================================

The token may also come as ``?token=``. Every answer is 2xx or 4xx, except
503 when the store is unavailable or the user's lock stays busy: then
nothing was marked done and the provider retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import FrameType
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from botkit import _metrics as metrics
from botkit._bot import Bot
from botkit._clock import Clock, SystemClock
from botkit._events import AnyMessage, Media
from botkit._outbound import Template
from botkit._runtime import Runtime
from botkit._turn import Outcome, TurnOutcome
from botkit.delivery._policy import DeliveryRefused, OutsideSessionWindow, ReplyTooLong
from botkit.delivery._sender import OutboxWorker, SenderConfig
from botkit.delivery._signing import MIN_SECRET_BYTES, CallbackSigner
from botkit.delivery._status import RateRetry, StatusOutcome, StatusTracker
from botkit.delivery._timers import TimerConfig, TimerWorker
from botkit.devino.client import DevinoClient, RetryPolicy
from botkit.devino.convert import to_event
from botkit.devino.errors import InvalidPhoneNumber, PayloadError
from botkit.devino.models import parse_incoming, parse_statuses, repair_text
from botkit.service._body_guard import BodyGuard, BodyRefused
from botkit.service._logs import log_turn
from botkit.service._settings import Settings, SettingsError, load_settings
from botkit.storage.base import ConversationStore, StorageError, StoreConfig, UserBusy
from botkit.storage.memory import MemoryStore
from botkit.storage.outage import OutageLog, outage_log
from botkit.storage.redis import RedisStore

log = logging.getLogger("botkit.app")

_EMPTY = Response(status_code=200)

CALLBACK_SECRET_NAME = "callback"
"""The name of the callback secret a store shares when none is configured."""


def build_store(bot: Bot, settings: Settings, clock: Clock | None = None) -> ConversationStore:
    """The conversation store the settings ask for: Redis when ``BOTKIT_REDIS_URL`` is set.

    The session window is the bot's (``Bot(session_window=...)``) when it sets
    one, else the settings', as the reply policy resolves it.
    """
    window = bot.session_window or settings.session_window
    config = StoreConfig(
        lock_ttl=settings.lock_ttl,
        acquire_timeout=settings.acquire_timeout,
        conversation_ttl=max(settings.conversation_ttl_days * 86_400.0, window),
        done_ttl=settings.dedupe_ttl_hours * 3600.0,
        sent_ttl=settings.sent_ttl_days * 86_400.0,
        seen_per_user=settings.seen_per_user,
        sent_per_user=settings.sent_per_user,
    )
    url = settings.secret("redis_url")
    if not url:
        return MemoryStore(config, clock=clock)
    return RedisStore(
        url,
        bot=bot.name,
        prefix=settings.key_prefix,
        config=config,
        session_window=window,
        clock=clock,
        shards=settings.redis_shards,
    )


class Service:
    """A running bot: runtime, store, provider client, sender and status tracking.

    ``create_app`` builds one; tests and ``botkit dev`` may pass their own
    ``store``, ``client`` or ``clock``.
    """

    def __init__(
        self,
        bot: Bot,
        settings: Settings,
        *,
        store: ConversationStore | None = None,
        client: DevinoClient | None = None,
        clock: Clock | None = None,
        sender_config: SenderConfig | None = None,
        rate_retry: RateRetry | None = None,
        watch_signals: bool = False,
        timer_config: TimerConfig | None = None,
    ) -> None:
        self.bot = bot
        self.watch_signals = watch_signals
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store = store or build_store(bot, settings, self.clock)
        self.runtime = Runtime(
            bot,
            self.store,
            clock=self.clock,
            policy=bot.reply_policy(
                settings.session_window, settings.safety_margin, settings.max_reply_chars
            ),
            plugins=settings.plugins,
            media=settings.media_policy(),
        )
        token = settings.secret("webhook_token")
        self.webhook_token = token or secrets.token_urlsafe(24)
        # The configured secret, or (at start) the one the store shares: never
        # one derived from the webhook token, which would let the token sign.
        configured = settings.signing_secret()
        self.signer = CallbackSigner(configured or secrets.token_bytes(MIN_SECRET_BYTES))
        self.signer_ready = bool(configured)
        """False until the callback secret the store shares is loaded (nothing is signed before)."""
        self._loading_secret: asyncio.Task[None] | None = None
        self.client = client or _build_client(settings)
        callback_url = None
        if settings.public_url:
            callback_url = f"{settings.public_url}/whatsapp/status/{self.webhook_token}"
        self.tracker = StatusTracker(self.runtime, self.signer, rate_retry=rate_retry)
        self.sender = OutboxWorker(
            self.store,
            self.client,
            sender_name=bot.sender or settings.sender or "botkit",
            signer=self.signer,
            callback_url=callback_url,
            config=sender_config
            or SenderConfig(batch_size=settings.batch_size, receipt_grace=settings.receipt_grace),
            clock=self.clock,
            on_rejected=self.tracker.report_rejected,
        )
        self.timers = TimerWorker(
            self.runtime, timer_config or TimerConfig(lease=settings.timer_lease)
        )
        self.runtime.on_turn.append(_count_turn)
        self.runtime.on_turn.append(log_turn)
        self.runtime.on_refused.append(lambda r: metrics.REFUSED.labels(r.reason).inc())
        self.guard = BodyGuard(max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
        self.accepting = False
        self._inflight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._metrics: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None

    async def start(self) -> None:
        """Open the store, start the bot and the sender.

        With ``watch_signals`` (``botkit run``), SIGTERM and SIGINT also call
        :meth:`begin_stop` at once, before the server's own handling: requests
        still sending their body get 503 instead of holding the shutdown.
        """
        await self.runtime.start()
        self.timers.start()
        if not self.signer_ready:
            with contextlib.suppress(StorageError):  # down: retried in the background
                self._use_secret(await self._shared_secret())
        if self.signer_ready:
            self.sender.start()
        else:
            self._loading_secret = asyncio.create_task(
                self._load_shared_secret(), name="botkit-callback-secret"
            )
        self._metrics = asyncio.create_task(_flush_metrics_forever(), name="botkit-metrics")
        if self.watch_signals:
            self._unwatch = _on_stop_signals(self.begin_stop)
        self.accepting = True

    async def _load_shared_secret(self) -> None:
        """Load (or create) the callback secret the store shares, then start sending.

        A store that is down at start-up makes the service unready, not dead:
        this retries until the store answers.
        """
        delay = 0.2
        while True:
            try:
                secret = await self._shared_secret()
                break
            except StorageError as exc:
                log.warning("could not load the callback secret from the store: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._use_secret(secret)
        self.sender.start()

    async def _shared_secret(self) -> str:
        return await self.store.shared_secret(
            CALLBACK_SECRET_NAME, secrets.token_urlsafe(MIN_SECRET_BYTES)
        )

    def _use_secret(self, secret: str) -> None:
        self.signer = CallbackSigner(secret)
        self.sender.signer = self.tracker.signer = self.signer
        self.signer_ready = True

    def begin_stop(self) -> None:
        """Refuse new webhooks (503) and answer 503 to requests still sending their body."""
        self.accepting = False
        self.guard.stop()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking webhooks, finish turns in flight, flush the outbox, close connections."""
        self.begin_stop()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._loading_secret is not None:
            self._loading_secret.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading_secret
            self._loading_secret = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace)
        await self.timers.stop()
        await self.sender.stop(flush=min(grace, 5.0))
        await self.runtime.stop()
        await self.client.aclose()
        await self.guard.aclose()
        if self._metrics is not None:
            self._metrics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics
            self._metrics = None
        metrics.flush()

    def turn_slot(self) -> _TurnSlot:
        """``async with``: count a request that runs turns, so shutdown can wait for it."""
        return _TurnSlot(self)

    async def handle_messages(self, events: Sequence[AnyMessage]) -> list[TurnOutcome]:
        """Run the turns of a webhook body: users in parallel, each user's messages in order."""
        if len(events) == 1:  # the usual body
            return [await self.runtime.handle_message(events[0])]
        by_user: dict[str, list[AnyMessage]] = defaultdict(list)
        for event in events:
            by_user[event.user].append(event)

        async def run(user_events: list[AnyMessage]) -> list[TurnOutcome]:
            return [await self.runtime.handle_message(e) for e in user_events]

        if len(by_user) == 1:
            return await run(next(iter(by_user.values())))
        results = await asyncio.gather(*(run(v) for v in by_user.values()), return_exceptions=True)
        outcomes: list[TurnOutcome] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            outcomes.extend(result)
        return outcomes


def _on_stop_signals(on_stop: Callable[[], None]) -> Callable[[], None] | None:
    """Call ``on_stop`` on SIGTERM/SIGINT, then the handler installed before (uvicorn's).

    Returns what puts the previous handlers back; None off the main thread,
    where signals cannot be handled.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_stop)
        before = previous[signum]
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, before in previous.items():
            signal.signal(signum, before)

    return restore


async def _flush_metrics_forever() -> None:
    while True:
        await asyncio.sleep(metrics.FLUSH_EVERY)
        metrics.flush()


class _TurnSlot:
    """What :meth:`Service.turn_slot` returns (a class: cheaper than a generator per request)."""

    __slots__ = ("_service",)

    def __init__(self, service: Service) -> None:
        self._service = service

    async def __aenter__(self) -> None:
        self._service._inflight += 1
        self._service._drained.clear()

    async def __aexit__(self, *_: object) -> None:
        service = self._service
        service._inflight -= 1
        if service._inflight == 0:
            service._drained.set()


def _count_turn(outcome: TurnOutcome) -> None:
    metrics.count(metrics.TURNS, outcome.kind, outcome.outcome)
    if outcome.outcome is not Outcome.DUPLICATE:
        metrics.observe(metrics.TURN_SECONDS, outcome.duration)


def _build_client(settings: Settings) -> DevinoClient:
    # A request that went out unanswered is not retried by the client: the
    # sender settles it by its status callbacks first (receipts), then resends.
    options: dict[str, Any] = {
        "batch_cap": settings.batch_size,
        "retry": RetryPolicy(attempts=settings.devino_attempts, retry_unanswered=False),
    }
    if settings.devino_timeout is not None:
        options["timeout"] = settings.devino_timeout
    if settings.devino_login:
        return DevinoClient(
            settings.devino_url,
            login=settings.devino_login,
            password=settings.secret("devino_password") or "",
            **options,
        )
    api_key = settings.secret("devino_api_key")
    return DevinoClient(settings.devino_url, api_key=api_key or "", **options)


# -- request helpers ---------------------------------------------------------


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "unavailable", "message": message}, status_code=503, headers={"Retry-After": "5"}
    )


def _store_failed(what: str, exc: StorageError, outage: OutageLog) -> JSONResponse:
    """503 for a store failure; the details (hosts, users) go to the log, not the caller."""
    if isinstance(exc, UserBusy):
        log.warning("%s refused for now: %s", what, exc)
        return _unavailable("the user's previous message is still being handled; retry")
    outage.failed(exc)  # an outage is a line when it starts, not one per request
    return _unavailable("the conversation store is unavailable; retry")


def _payload_errors(body: Any, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Field errors; for a single object, named as fields of it (``from``, not ``0.from``)."""
    if isinstance(body, list):
        return errors
    return [
        {**e, "loc": str(e.get("loc", "")).removeprefix("0.").removeprefix("0")} for e in errors
    ]


def _token_ok(request: Request, expected: str) -> bool:
    given = request.path_params.get("token") or request.query_params.get("token") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


async def _json_body(request: Request) -> Any | Response:
    """The decoded JSON body, or the 4xx response that says what is wrong with it.

    The :class:`~botkit.service._body_guard.BodyGuard` in front bounds it in
    size and time.
    """
    try:
        body = await request.body()
    except BodyRefused as refused:
        if refused.status == 503:
            return _unavailable(str(refused))
        return _error(refused.status, refused.error, str(refused))
    except ClientDisconnect:
        return _error(400, "client_disconnected", "the client went away mid-body")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return _error(400, "invalid_json", "the body is not JSON (or is nested too deeply)")
    value, repaired = repair_text(body, value)
    if repaired:
        # Half a surrogate pair has no UTF-8 form: such text could be neither
        # stored nor sent, and refusing it would have the provider retry it.
        log.warning(
            "replaced lone UTF-16 surrogates (not valid text) with U+FFFD in the body's %s",
            ", ".join(repaired),
        )
    return value


# -- the API model -----------------------------------------------------------


class _ApiTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    params: dict[str, str] | list[str] | None = None
    language: str | None = None
    validity: int | None = Field(default=None, ge=1)


class _ApiMedia(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, pattern=r"^https?://")
    type: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=100)


class _ApiSend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1)
    text: str | None = Field(default=None, min_length=1)
    media: _ApiMedia | None = None
    template: _ApiTemplate | None = None
    at: AwareDatetime | float | None = None
    after: float | None = Field(default=None, ge=0, allow_inf_nan=False)


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": str(e["msg"])} for e in exc.errors()]


# -- the application ---------------------------------------------------------


def create_app(
    bot: Bot,
    settings: Settings | None = None,
    *,
    store: ConversationStore | None = None,
    client: DevinoClient | None = None,
    clock: Clock | None = None,
    sender_config: SenderConfig | None = None,
    rate_retry: RateRetry | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = (),
    watch_signals: bool = False,
) -> Starlette:
    """The bot's web service; ``app.state.service`` is its :class:`Service`.

    ``settings`` defaults to the environment (:func:`~botkit.service.load_settings`).
    ``extra_routes`` and ``on_shutdown`` let ``botkit dev`` add its pages
    and the embedded emulator. ``watch_signals`` (``botkit run``) answers 503
    at once, on SIGTERM or SIGINT, to requests still sending their body.
    """
    if settings is None:
        settings = load_settings()
    if not isinstance(bot, Bot):
        raise TypeError(f"create_app() needs a botkit.Bot, not {type(bot).__name__}")
    service = Service(
        bot,
        settings,
        store=store,
        client=client,
        clock=clock,
        sender_config=sender_config,
        rate_retry=rate_retry,
        watch_signals=watch_signals,
    )
    outage = outage_log(service.store)
    api_token = settings.secret("api_token")

    async def provider_payload(
        request: Request, parse: Callable[[Any], list[Any]], what: str
    ) -> tuple[Any, list[Any]] | Response:
        """The webhook body and what it parses into, or the 4xx/503 that says why not."""
        if not _token_ok(request, service.webhook_token):
            return _error(401, "unauthorized", "wrong or missing webhook token")
        if not service.accepting:
            return _unavailable("the service is shutting down; retry")
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            return body, parse(body)
        except PayloadError as exc:
            errors = _payload_errors(body, exc.errors)
            return _error(422, "invalid_payload", f"not {what}", errors=errors)

    async def incoming(request: Request) -> Response:
        async with service.turn_slot():
            got = await provider_payload(request, parse_incoming, "an incoming message")
            if isinstance(got, Response):
                return got
            body, messages = got
            now = service.clock.now()
            items = body if isinstance(body, list) else [body]
            events = [to_event(m, now, raw) for m, raw in zip(messages, items, strict=True)]
            try:
                outcomes = await service.handle_messages(events)
            except StorageError as exc:
                return _store_failed("incoming message", exc, outage)
            outage.recovered()
        if any(o.outcome is Outcome.IN_PROGRESS for o in outcomes):
            return _unavailable("a message in this body is still being processed; retry")
        return _EMPTY

    async def status(request: Request) -> Response:
        async with service.turn_slot():
            got = await provider_payload(request, parse_statuses, "a status report")
            if isinstance(got, Response):
                return got
            if not service.signer_ready:
                return _unavailable("the conversation store is unavailable; retry")
            try:
                results = [await service.tracker.handle(report) for report in got[1]]
            except StorageError as exc:
                return _store_failed("status callback", exc, outage)
            outage.recovered()
        if StatusOutcome.IN_PROGRESS in results:
            return _unavailable("a status in this body is still being processed; retry")
        # A report without botkit's signature was ignored (logged and counted);
        # the answer is still 200, or the provider would retry it for 24 hours.
        return _EMPTY

    def api_refusal(request: Request) -> Response | None:
        """The 404/401 for a request the API may not take, or None when it may."""
        # An empty BOTKIT_API_TOKEN (``BOTKIT_API_TOKEN=`` in an env file) disables the
        # API like an unset one: it must not accept an empty bearer token.
        if not api_token:
            return PlainTextResponse("Not Found", status_code=404)
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), api_token.encode()
        ):
            return _error(401, "unauthorized", "send 'Authorization: Bearer <BOTKIT_API_TOKEN>'")
        return None

    async def api_send(request: Request) -> Response:
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            payload = _ApiSend.model_validate(body)
        except ValidationError as exc:
            return _error(422, "invalid_body", "see errors", errors=_field_errors(exc))
        if payload.text is None and payload.media is None and payload.template is None:
            return _error(422, "invalid_body", "give text, media or template")
        template = None
        if payload.template is not None:
            t = payload.template
            template = Template(t.id, t.params, language=t.language, validity=t.validity)
        media = None
        if payload.media is not None:
            media = Media(payload.media.url, payload.media.type, payload.media.name)
        try:
            if payload.at is not None or payload.after is not None:
                scheduled = await service.runtime.send_at(
                    payload.to,
                    payload.text,
                    media=media,
                    template=template,
                    at=payload.at,
                    after=payload.after,
                )
                return JSONResponse({"status": "scheduled", "id": scheduled}, status_code=202)
            queued = await service.runtime.send(
                payload.to, payload.text, media=media, template=template
            )
        except InvalidPhoneNumber as exc:
            return _error(422, "invalid_phone", str(exc))
        except OutsideSessionWindow as exc:
            return _error(409, exc.reason, str(exc), user=exc.user, last_inbound=exc.last_inbound)
        except DeliveryRefused as exc:
            return _error(409, exc.reason, str(exc), user=exc.user)
        except ReplyTooLong as exc:
            return _error(422, exc.reason, str(exc), length=exc.length, limit=exc.limit)
        except ValueError as exc:
            return _error(422, "invalid_body", str(exc))
        except StorageError as exc:
            return _store_failed("send", exc, outage)
        return JSONResponse(
            {
                "status": "queued",
                "mode": queued[0].mode.value,
                "messages": [m.ref for m in queued],
            },
            status_code=202,
        )

    async def api_cancel_scheduled(request: Request) -> Response:
        refusal = api_refusal(request)
        if refusal is not None:
            return refusal
        try:
            cancelled = await service.runtime.cancel_scheduled(request.path_params["id"])
        except StorageError as exc:
            return _store_failed("cancel a scheduled send", exc, outage)
        if not cancelled:
            return _error(404, "not_found", "no pending scheduled message with this id")
        return JSONResponse({"status": "cancelled"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not service.accepting:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if not await service.store.ping() or not service.signer_ready:
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            for hook in on_shutdown:
                await hook()

    app = Starlette(
        routes=[
            Route("/whatsapp/incoming/{token}", _observed(incoming, "incoming"), methods=["POST"]),
            Route("/whatsapp/incoming", _observed(incoming, "incoming"), methods=["POST"]),
            Route("/whatsapp/status/{token}", _observed(status, "status"), methods=["POST"]),
            Route("/whatsapp/status", _observed(status, "status"), methods=["POST"]),
            # A webhook URL configured with a trailing slash works as it is: no redirect,
            # whose Location would repeat the token.
            Route("/whatsapp/incoming/{token}/", _observed(incoming, "incoming"), methods=["POST"]),
            Route("/whatsapp/status/{token}/", _observed(status, "status"), methods=["POST"]),
            Route("/api/send", _observed(api_send, "send"), methods=["POST"]),
            Route(
                "/api/scheduled/{id}",
                _observed(api_cancel_scheduled, "scheduled"),
                methods=["DELETE"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *extra_routes,
        ],
        middleware=[Middleware(service.guard.wrap)],
        lifespan=lifespan,
    )
    # An unknown path is a plain 404, never a redirect that repeats what was asked.
    app.router.redirect_slashes = False
    app.state.service = service
    return app


def _observed(endpoint: Any, name: str) -> Any:
    async def run(request: Request) -> Response:
        try:
            response: Response = await endpoint(request)
        except Exception:
            # A bug of ours: the provider should retry rather than lose the message.
            # The endpoint's name, not the path: a webhook's path carries the secret token.
            log.exception("unexpected error in the %s endpoint", name)
            response = _unavailable("internal error; retry")
        metrics.count(metrics.WEBHOOK_REQUESTS, name, str(response.status_code))
        return response

    return run


__all__ = ["Service", "SettingsError", "create_app"]
