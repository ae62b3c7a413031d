"""Each feature's endpoints stand alone: module-level functions mounted by ``routes()``.

A feature (webhooks, the send API, health) is one module whose endpoints read
the :class:`~botkit.service.Service` from ``app.state``; ``create_app`` only
mounts the ``routes()`` of each. These tests mount one feature in a plain
Starlette app, served for real, as a new feature's own test would.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from botkit import Bot
from botkit.service import FEATURES, Service, create_app, load_settings, serve_app
from botkit.storage.memory import MemoryStore


def feature_serving(path: str) -> Callable[[], list[BaseRoute]]:
    """The ``routes()`` of the one feature that mounts ``path``."""
    [feature] = [f for f in FEATURES if any(getattr(r, "path", None) == path for r in f())]
    return feature


def service(**settings: object) -> Service:
    settings = {"devino_api_key": "k", **settings}
    return Service(Bot("alone"), load_settings(**settings), store=MemoryStore())


async def test_a_feature_s_routes_answer_in_an_app_of_their_own() -> None:
    health, send_api = feature_serving("/healthz"), feature_serving("/api/send")
    app = Starlette(routes=[*health(), *send_api()])
    app.state.service = service(api_token="t0ken-of-the-test")
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        # Not started: the service does not take traffic yet.
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "stopping"})
        refused = await http.post("/api/send", json={"to": "79031234567", "text": "hi"})
        assert refused.status_code == 401
        assert "BOTKIT_API_TOKEN" in refused.json()["message"]
        # No webhook routes were mounted, and an unknown path is a plain 404.
        assert (await http.post("/whatsapp/incoming/x", json={})).status_code == 404


def test_create_app_mounts_every_feature_s_routes_and_nothing_else() -> None:
    app = create_app(Bot("all"), load_settings(devino_api_key="k"), store=MemoryStore())
    mounted = [getattr(route, "path", None) for route in app.routes]
    expected = [route.path for feature in FEATURES for route in feature()]  # type: ignore[attr-defined]
    assert mounted == expected
    assert "/whatsapp/incoming/{token}" in mounted and "/api/send" in mounted
