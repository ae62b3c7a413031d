"""The web service: ``create_app(bot, settings)`` returns the bot's Starlette application.

==========================================  =====================================
``POST /whatsapp/incoming/{token}``          incoming messages (:mod:`._webhooks`)
``POST /whatsapp/status/{token}``            status callbacks (:mod:`._webhooks`)
``POST /api/send``                           send from another system (:mod:`._send_api`)
``DELETE /api/scheduled/{id}``               cancel a scheduled send (:mod:`._send_api`)
``/api/campaigns...``                        campaigns (:mod:`._campaigns_api`)
``GET /healthz``, ``/readyz``, ``/metrics``  liveness, readiness, Prometheus (:mod:`._health`)
``/api/handoffs``, ``/api/conversations``    the agent API (:mod:`._agent`)
``/agent``                                   the agent inbox page (:mod:`._agent_page`)
==========================================  =====================================

Each feature's endpoints are module-level functions in their own module,
which exposes ``routes()``; they reach the running :class:`Service` through
``request.app.state.service`` (:func:`~botkit.service._service.service_of`).
This module only builds the service and mounts the routes: a new feature adds
its module to :data:`FEATURES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from botkit._bot import Bot
from botkit._clock import Clock
from botkit._retry import RetryPolicy
from botkit.delivery._sender import OutboxWorkerConfig
from botkit.devino.client import DevinoClient
from botkit.service import _agent, _agent_page, _campaigns_api, _health, _send_api, _webhooks
from botkit.service._service import Service, build_store
from botkit.service._settings import Settings, SettingsError, load_settings
from botkit.storage.base import ConversationStore

FEATURES: tuple[Callable[[], list[BaseRoute]], ...] = (
    _webhooks.routes,
    _send_api.routes,
    _campaigns_api.routes,
    _health.routes,
    _agent.routes,
    _agent_page.routes,
)
"""The ``routes()`` of each feature module, mounted by :func:`create_app` in this order."""


def create_app(
    bot: Bot,
    settings: Settings | None = None,
    *,
    store: ConversationStore | None = None,
    client: DevinoClient | None = None,
    clock: Clock | None = None,
    sender_config: OutboxWorkerConfig | None = None,
    rate_retry: RetryPolicy | None = None,
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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            for hook in on_shutdown:
                await hook()

    routes = [route for feature in FEATURES for route in feature()]
    app = Starlette(
        routes=[*routes, *extra_routes],
        middleware=[Middleware(service.guard.wrap)],
        lifespan=lifespan,
    )
    # An unknown path is a plain 404, never a redirect that repeats what was asked.
    app.router.redirect_slashes = False
    app.state.service = service
    return app


__all__ = [
    "FEATURES",
    "Service",
    "SettingsError",
    "build_store",
    "create_app",
]
