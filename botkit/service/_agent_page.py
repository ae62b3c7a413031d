"""The agent inbox page at ``/agent``: a login form, then the handed-off conversations.

==============================  ==========================================================
``GET /agent``                  the page (its script shows the login form until logged in)
``POST /agent/login``           ``agent`` (a name) and ``token`` (BOTKIT_AGENT_TOKEN), as a
                                form: sets the HttpOnly, SameSite=Strict session cookie
``POST /agent/logout``          drops it
``GET /agent/static/...``       the page's files (no CDN: nothing is fetched elsewhere)
==============================  ==========================================================

Off (404) unless ``BOTKIT_AGENT_TOKEN`` is set. The page talks to the agent
API (:mod:`botkit.service._agent`) with the cookie, and listens to its
server-sent events.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from botkit.service._agent import SESSION_COOKIE, desk_of, session_value

STATIC = Path(__file__).parent / "agent_static"
NAME_COOKIE = "botkit_agent_name"
"""The agent's name, for the page to show and send (not a secret: readable by the script)."""

_SESSION_SECONDS = 12 * 3600
_NOT_FOUND = PlainTextResponse("Not Found", status_code=404)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def page(request: Request) -> Response:
    """``GET /agent``: the inbox page."""
    if not desk_of(request).token:
        return _NOT_FOUND
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


async def login(request: Request) -> Response:
    """``POST /agent/login``: check the token, set the session cookie, back to the page."""
    token = desk_of(request).token
    if not token:
        return _NOT_FOUND
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    given = (form.get("token") or [""])[0].strip()
    agent = " ".join((form.get("agent") or [""])[0].split())[:64] or "agent"
    if not hmac.compare_digest(given.encode(), token.encode()):
        return RedirectResponse("/agent?error=1", status_code=303)
    answer = RedirectResponse("/agent", status_code=303)
    secure = request.url.scheme == "https"
    answer.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        max_age=_SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    answer.set_cookie(
        NAME_COOKIE, agent, max_age=_SESSION_SECONDS, path="/", samesite="strict", secure=secure
    )
    return answer


async def logout(request: Request) -> Response:
    """``POST /agent/logout``: drop the session cookie."""
    if not desk_of(request).token:
        return _NOT_FOUND
    answer = RedirectResponse("/agent", status_code=303)
    answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return answer


def routes() -> list[BaseRoute]:
    """The page's routes."""
    return [
        Route("/agent", page, methods=["GET"]),
        Route("/agent/login", login, methods=["POST"]),
        Route("/agent/logout", logout, methods=["POST"]),
        Mount("/agent/static", app=StaticFiles(directory=STATIC), name="agent-static"),
    ]
