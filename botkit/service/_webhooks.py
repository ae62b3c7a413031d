"""The provider's webhooks: incoming messages and status callbacks.

==========================================  =====================================
``POST /whatsapp/incoming/{token}``          incoming messages (one or an array)
``POST /whatsapp/status/{token}``            status callbacks (one or an array)
==========================================  =====================================

The token may also come as ``?token=``, and a trailing slash is accepted (no
redirect, whose ``Location`` would repeat the token). Every answer is 2xx or
4xx, except 503 when the store is unavailable or the user's lock stays busy:
then nothing was marked done and the provider retries.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from botkit._turn import Outcome
from botkit.delivery._status import StatusOutcome
from botkit.devino.convert import to_event
from botkit.devino.errors import PayloadError
from botkit.devino.models import parse_incoming, parse_statuses
from botkit.service._http import (
    EMPTY,
    error,
    json_body,
    observed,
    store_failed,
    unavailable,
)
from botkit.service._service import Service, service_of
from botkit.storage.base import StorageError


def token_ok(request: Request, expected: str) -> bool:
    """True when the request carries the webhook token (in the path or as ``?token=``)."""
    given = request.path_params.get("token") or request.query_params.get("token") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


def _payload_errors(body: Any, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Field errors; for a single object, named as fields of it (``from``, not ``0.from``)."""
    if isinstance(body, list):
        return errors
    return [
        {**e, "loc": str(e.get("loc", "")).removeprefix("0.").removeprefix("0")} for e in errors
    ]


async def provider_payload(
    service: Service, request: Request, parse: Callable[[Any], list[Any]], what: str
) -> tuple[Any, list[Any]] | Response:
    """The webhook body and what it parses into, or the 4xx/503 that says why not."""
    if not token_ok(request, service.webhook_token):
        return error(401, "unauthorized", "wrong or missing webhook token")
    if not service.accepting:
        return unavailable("the service is shutting down; retry")
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    try:
        return body, parse(body)
    except PayloadError as exc:
        errors = _payload_errors(body, exc.errors)
        return error(422, "invalid_payload", f"not {what}", errors=errors)


async def incoming(request: Request) -> Response:
    """``POST /whatsapp/incoming/{token}``: run a turn for each message of the body."""
    service = service_of(request)
    async with service.turn_slot():
        got = await provider_payload(service, request, parse_incoming, "an incoming message")
        if isinstance(got, Response):
            return got
        body, messages = got
        now = service.clock.now()
        items = body if isinstance(body, list) else [body]
        events = [to_event(m, now, raw) for m, raw in zip(messages, items, strict=True)]
        try:
            outcomes = await service.handle_messages(events)
        except StorageError as exc:
            return store_failed("incoming message", exc, service.outage)
        service.outage.recovered()
    if any(o.outcome is Outcome.IN_PROGRESS for o in outcomes):
        return unavailable("a message in this body is still being processed; retry")
    return EMPTY


async def status(request: Request) -> Response:
    """``POST /whatsapp/status/{token}``: move each message's status forward."""
    service = service_of(request)
    async with service.turn_slot():
        got = await provider_payload(service, request, parse_statuses, "a status report")
        if isinstance(got, Response):
            return got
        if not service.signer_ready:
            return unavailable("the conversation store is unavailable; retry")
        try:
            results = [await service.tracker.handle(report) for report in got[1]]
        except StorageError as exc:
            return store_failed("status callback", exc, service.outage)
        service.outage.recovered()
    if StatusOutcome.IN_PROGRESS in results:
        return unavailable("a status in this body is still being processed; retry")
    # A report without botkit's signature was ignored (logged and counted);
    # the answer is still 200, or the provider would retry it for 24 hours.
    return EMPTY


def routes() -> list[BaseRoute]:
    """The webhook routes, each counted under its endpoint's name."""
    receive, report = observed(incoming, "incoming"), observed(status, "status")
    return [
        Route("/whatsapp/incoming/{token}", receive, methods=["POST"]),
        Route("/whatsapp/incoming", receive, methods=["POST"]),
        Route("/whatsapp/status/{token}", report, methods=["POST"]),
        Route("/whatsapp/status", report, methods=["POST"]),
        # A webhook URL configured with a trailing slash works as it is: no redirect,
        # whose Location would repeat the token.
        Route("/whatsapp/incoming/{token}/", receive, methods=["POST"]),
        Route("/whatsapp/status/{token}/", report, methods=["POST"]),
    ]


__all__ = ["incoming", "provider_payload", "routes", "status", "token_ok"]
