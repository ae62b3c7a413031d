"""The composition root: :class:`Service` holds everything a running bot needs.

It builds the runtime, the conversation store, the provider client, the
outbox worker, the status tracker and the timer worker from one
:class:`~botkit.service.Settings`, starts and stops them, and is what every
endpoint reads (``request.app.state.service``; see :func:`service_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from starlette.requests import Request

from botkit import _metrics as metrics
from botkit._bot import Bot
from botkit._clock import Clock, SystemClock
from botkit._events import AnyMessage
from botkit._retry import RetryPolicy
from botkit._runtime import Runtime
from botkit._turn import Outcome, TurnOutcome
from botkit.delivery._campaigns import CampaignFeed
from botkit.delivery._sender import OutboxWorker, OutboxWorkerConfig
from botkit.delivery._signing import MIN_SECRET_BYTES, CallbackSigner
from botkit.delivery._status import StatusTracker
from botkit.delivery._timers import TimerConfig, TimerWorker
from botkit.devino.client import DevinoClient
from botkit.service._agent import desk_for
from botkit.service._body_guard import BodyGuard
from botkit.service._logs import log_turn
from botkit.service._settings import Settings
from botkit.storage.base import ConversationStore, StorageError, StoreConfig
from botkit.storage.campaigns import CampaignsNeedRedis
from botkit.storage.memory import MemoryStore
from botkit.storage.outage import OutageLog, outage_log
from botkit.storage.redis import RedisStore

log = logging.getLogger("botkit.app")

CALLBACK_SECRET_NAME = "callback"
"""The name of the callback secret a store shares when none is configured."""


def build_store(bot: Bot, settings: Settings, clock: Clock | None = None) -> ConversationStore:
    """The conversation store the settings ask for: Redis when ``BOTKIT_REDIS_URL`` is set.

    It keeps conversations at least as long as the session window the
    settings resolve for ``bot`` (:meth:`~botkit.service.Settings.for_bot`).
    """
    settings = settings.for_bot(bot)
    window = settings.session_window
    config = StoreConfig(
        lock_ttl=settings.lock_ttl,
        acquire_timeout=settings.acquire_timeout,
        conversation_ttl=max(settings.conversation_ttl_days * 86_400.0, window),
        done_ttl=settings.dedupe_ttl_hours * 3600.0,
        sent_ttl=settings.sent_ttl_days * 86_400.0,
        seen_per_user=settings.seen_per_user,
        sent_per_user=settings.sent_per_user,
        reconnect=settings.retry_policy(),
        transcript_length=settings.transcript_length,
        transcript_ttl=settings.transcript_ttl_days * 86_400.0,
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
        wait_replicas=settings.redis_wait_replicas,
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
        sender_config: OutboxWorkerConfig | None = None,
        rate_retry: RetryPolicy | None = None,
        watch_signals: bool = False,
        timer_config: TimerConfig | None = None,
    ) -> None:
        self.bot = bot
        self.watch_signals = watch_signals
        # The one place the bot's own values meet the environment's.
        self.settings = settings = settings.for_bot(bot)
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
            handoff_timeout=settings.handoff_timeout,
        )
        self.agents = desk_for(self.runtime, settings)
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
            sender_name=settings.sender or "botkit",
            signer=self.signer,
            callback_url=callback_url,
            config=sender_config
            or OutboxWorkerConfig(
                batch_size=settings.batch_size,
                linger=settings.batch_linger,
                receipt_grace=settings.receipt_grace,
                retry=settings.retry_policy(),
            ),
            clock=self.clock,
            on_rejected=self.tracker.report_rejected,
        )
        self.timers = TimerWorker(
            self.runtime,
            timer_config or TimerConfig(lease=settings.timer_lease, retry=settings.retry_policy()),
            ownership=self.sender.ownership,  # due timers are claimed by the sender's shards
        )
        self.campaigns: CampaignFeed | None = None
        """Campaign messages for the sender, after the replies (None: the store keeps none)."""
        with contextlib.suppress(CampaignsNeedRedis):
            self.campaigns = CampaignFeed(
                self.store,
                self.runtime.policy,
                clock=self.clock,
                receipts=callback_url is not None,
                # Campaign items carry no attempt mark: a claim waits out the
                # whole receipt window (the sender's resend_after).
                claim_idle=self.sender.resend_after,
                receipt_grace=self.sender.config.receipt_grace,
            )
            self.sender.bulk = self.campaigns
            self.tracker.on_update.append(self.campaigns.on_status)
        self.runtime.on_turn.append(_count_turn)
        self.runtime.on_turn.append(log_turn)
        self.runtime.on_refused.append(lambda r: metrics.REFUSED.labels(r.reason).inc())
        self.guard = BodyGuard(max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
        self.outage: OutageLog = outage_log(self.store)
        """One log line when the store fails and one when it answers again (not one per request)."""
        self.api_token = settings.secret("api_token")
        """``BOTKIT_API_TOKEN``; None or empty disables ``/api/send`` and ``/api/scheduled``."""
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
        self.agents.start()
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
        retry, failures = self.settings.retry_policy(), 0
        while True:
            try:
                secret = await self._shared_secret()
                break
            except StorageError as exc:
                log.warning("could not load the callback secret from the store: %s", exc)
                await asyncio.sleep(retry.delay(failures))
                failures += 1
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
        await self.agents.stop(grace=min(grace, 5.0))
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
    # One try per request: the outbox worker is the one that tries again (with
    # the settings' backoff), so retries are not nested. A request that went out
    # unanswered is settled by its status callbacks first (receipts).
    options: dict[str, Any] = {
        "batch_cap": settings.batch_size,
        "retry": RetryPolicy(attempts=1),
        "retry_unanswered": False,
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


def service_of(request: Request) -> Service:
    """The :class:`Service` of the application that received ``request``.

    Endpoints are module-level functions (Starlette style); ``create_app``
    puts the service on ``app.state``, and this is how an endpoint reaches it.
    """
    service: Service = request.app.state.service
    return service


__all__ = ["CALLBACK_SECRET_NAME", "Service", "build_store", "service_of"]
