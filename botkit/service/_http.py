"""What every endpoint module shares: error answers, the JSON body, bearer tokens, metrics.

An endpoint is a plain ``async def endpoint(request) -> Response`` at module
level; it reaches the running service with
:func:`~botkit.service._service.service_of`. A feature that adds endpoints
writes them in its own module with a ``routes()`` function, using these
helpers, and ``create_app`` mounts them.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from botkit import _metrics as metrics
from botkit.devino.models import repair_text
from botkit.service._body_guard import BodyRefused
from botkit.storage.base import StorageError, UserBusy
from botkit.storage.outage import OutageLog

log = logging.getLogger("botkit.app")

Endpoint = Callable[[Request], Awaitable[Response]]
"""A Starlette request/response endpoint."""

EMPTY = Response(status_code=200)
"""The empty 200 a webhook answers when all went well."""


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """A 4xx answer: ``{"error": code, "message": <what to do>, ...extra}``."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def unavailable(message: str) -> JSONResponse:
    """503 with ``Retry-After``: nothing was done, the caller should retry."""
    return JSONResponse(
        {"error": "unavailable", "message": message}, status_code=503, headers={"Retry-After": "5"}
    )


def store_failed(what: str, exc: StorageError, outage: OutageLog) -> JSONResponse:
    """503 for a store failure; the details (hosts, users) go to the log, not the caller."""
    if isinstance(exc, UserBusy):
        log.warning("%s refused for now: %s", what, exc)
        return unavailable("the user's previous message is still being handled; retry")
    outage.failed(exc)  # an outage is a line when it starts, not one per request
    return unavailable("the conversation store is unavailable; retry")


def bearer_refusal(request: Request, token: str | None, variable: str) -> Response | None:
    """The 404/401 for a request without the right bearer token, or None when it may pass.

    An unset or empty ``token`` (``BOTKIT_API_TOKEN=`` in an env file) disables
    the endpoint (404) rather than accepting an empty bearer token.
    ``variable`` names the setting in the 401's message.
    """
    if not token:
        return PlainTextResponse("Not Found", status_code=404)
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return error(401, "unauthorized", f"send 'Authorization: Bearer <{variable}>'")
    return None


async def json_body(request: Request) -> Any | Response:
    """The decoded JSON body, or the 4xx response that says what is wrong with it.

    The :class:`~botkit.service._body_guard.BodyGuard` in front bounds it in
    size and time.
    """
    try:
        body = await request.body()
    except BodyRefused as refused:
        if refused.status == 503:
            return unavailable(str(refused))
        return error(refused.status, refused.error, str(refused))
    except ClientDisconnect:
        return error(400, "client_disconnected", "the client went away mid-body")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return error(400, "invalid_json", "the body is not JSON (or is nested too deeply)")
    value, repaired = repair_text(body, value)
    if repaired:
        # Half a surrogate pair has no UTF-8 form: such text could be neither
        # stored nor sent, and refusing it would have the provider retry it.
        log.warning(
            "replaced lone UTF-16 surrogates (not valid text) with U+FFFD in the body's %s",
            ", ".join(repaired),
        )
    return value


def observed(endpoint: Endpoint, name: str) -> Endpoint:
    """``endpoint`` counted in ``botkit_webhook_requests_total{endpoint=name}``.

    An exception is a bug of ours: it is logged and answered 503, so the
    provider retries rather than loses the message.
    """

    async def run(request: Request) -> Response:
        try:
            response = await endpoint(request)
        except Exception:
            # The endpoint's name, not the path: a webhook's path carries the secret token.
            log.exception("unexpected error in the %s endpoint", name)
            response = unavailable("internal error; retry")
        metrics.count(metrics.WEBHOOK_REQUESTS, name, str(response.status_code))
        return response

    return run


__all__ = [
    "EMPTY",
    "Endpoint",
    "bearer_refusal",
    "error",
    "json_body",
    "observed",
    "store_failed",
    "unavailable",
]
