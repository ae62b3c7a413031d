"""``botkit dev``: the bot, the provider emulator and the dev pages in one process.

No credentials and no Redis: the memory store, a generated webhook token,
the emulator mounted at ``/_provider`` (the bot's provider URL points there),
and a clock the dev chat page can move forward to show the 24-hour window
closing.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from botkit._bot import Bot
from botkit._clock import ManualClock
from botkit._media import LOOPBACK
from botkit.devino.client import DevinoClient
from botkit.devtools.emulator import Emulator
from botkit.service._app import create_app
from botkit.service._settings import Settings, load_settings
from botkit.storage.base import StoreConfig
from botkit.storage.memory import MemoryStore

PROVIDER_PREFIX = "/_provider"
DEV_API_TOKEN = "dev"
"""The send API's token in dev mode, unless ``BOTKIT_API_TOKEN`` is set."""
DEV_AGENT_TOKEN = "dev"
"""The agent API's and inbox page's token in dev mode, unless ``BOTKIT_AGENT_TOKEN`` is set."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class DevServer:
    """Everything ``botkit dev`` runs, with the URLs it prints."""

    app: Starlette
    emulator: Emulator
    clock: ManualClock
    settings: Settings
    base_url: str
    token: str
    routes: list[BaseRoute] = field(default_factory=list)

    @property
    def webhook_url(self) -> str:
        """Where the emulator posts incoming messages."""
        return f"{self.base_url}/whatsapp/incoming/{self.token}"

    @property
    def api_auth(self) -> str:
        """The send API's header, as the banner shows it (the token only when it is ``dev``)."""
        token = self.settings.secret("api_token")
        shown = "dev" if token == DEV_API_TOKEN else "$BOTKIT_API_TOKEN"
        return f"Authorization: Bearer {shown}"

    @property
    def agent_token(self) -> str:
        """The agent token as the banner shows it (the token only when it is ``dev``)."""
        token = self.settings.secret("agent_token")
        return "dev" if token == DEV_AGENT_TOKEN else "$BOTKIT_AGENT_TOKEN"

    def banner(self) -> str:
        """The lines printed at start."""
        return "\n".join(
            [
                f"botkit dev: bot {self.app.state.service.bot.name!r} on {self.base_url}",
                f"  chat page:      {self.base_url}/_dev",
                f"  webhook:        {self.webhook_url}",
                f"  status webhook: {self.base_url}/whatsapp/status/{self.token}",
                f"  emulator:       {self.base_url}{PROVIDER_PREFIX}/_emulator/messages",
                f"  send API:       POST {self.base_url}/api/send with {self.api_auth}",
                f"  agent inbox:    {self.base_url}/agent (token: {self.agent_token})",
                "  store: memory (nothing is kept after exit); Ctrl-C stops",
            ]
        )


def create_dev_app(bot: Bot, *, host: str = "127.0.0.1", port: int = 8000) -> DevServer:
    """Build the dev server for ``bot`` listening on ``host:port`` (0 picks a free port)."""
    if port == 0:
        port = free_port(host)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base_url = f"http://{shown_host}:{port}"
    token = secrets.token_urlsafe(16)
    clock = ManualClock()
    env = load_settings()
    settings = load_settings(
        devino_url=f"{base_url}{PROVIDER_PREFIX}",
        devino_api_key="dev",
        webhook_token=token,
        public_url=base_url,
        api_token=env.secret("api_token") or DEV_API_TOKEN,
        agent_token=env.secret("agent_token") or DEV_AGENT_TOKEN,
    )
    # Dev mode also fetches media from this machine (files a developer serves locally).
    settings = settings.model_copy(
        update={
            "redis_url": None,
            "devino_login": None,
            "media_allow_hosts": [*LOOPBACK, *settings.media_allow_hosts],
        }
    ).for_bot(bot)
    emulator = Emulator(
        api_key="dev",
        clock=clock.now,
        session_window=settings.session_window,
        webhook_url=f"{base_url}/whatsapp/incoming/{token}",
    )
    store = MemoryStore(
        StoreConfig(lock_ttl=settings.lock_ttl, acquire_timeout=settings.acquire_timeout),
        clock=clock,
    )
    server = DevServer(
        app=Starlette(),
        emulator=emulator,
        clock=clock,
        settings=settings,
        base_url=base_url,
        token=token,
    )
    routes: list[BaseRoute] = [Mount(PROVIDER_PREFIX, app=emulator.app)]
    routes.extend(_dev_page_routes(server))
    # The bot reaches the emulator in-process, so replies still leave while the
    # server shuts down and no longer accepts connections (the flush at Ctrl-C).
    client = DevinoClient(
        f"http://dev-provider{PROVIDER_PREFIX}",
        api_key="dev",
        transport=httpx.ASGITransport(app=Starlette(routes=[Mount(PROVIDER_PREFIX, emulator.app)])),
    )
    server.app = create_app(
        bot,
        settings,
        store=store,
        clock=clock,
        client=client,
        extra_routes=routes,
        on_shutdown=[emulator.aclose],
    )
    server.app.state.dev = server
    return server


def _dev_page_routes(server: DevServer) -> list[BaseRoute]:
    try:
        from botkit.devtools._page import routes
    except ImportError:
        return []
    return list(routes(server))
