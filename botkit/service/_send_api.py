"""The send API: let another system send through the bot (``Authorization: Bearer``).

==========================================  =====================================
``POST /api/send``                           send now (202 with the references), or
                                             with "at"/"after" later (202 with its id)
``DELETE /api/scheduled/{id}``               cancel a message scheduled for later
==========================================  =====================================

Both answer 404 while ``BOTKIT_API_TOKEN`` is unset or empty.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from botkit._events import Media
from botkit._outbound import Template
from botkit._policy import DeliveryRefused, OutsideSessionWindow, ReplyTooLong
from botkit.devino.errors import InvalidPhoneNumber
from botkit.service._http import bearer_refusal, error, json_body, observed, store_failed
from botkit.service._service import service_of
from botkit.storage.base import StorageError

TOKEN_VARIABLE = "BOTKIT_API_TOKEN"


class ApiTemplate(BaseModel):
    """``"template"`` of a send request."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    params: dict[str, str] | list[str] | None = None
    language: str | None = None
    validity: int | None = Field(default=None, ge=1)


class ApiMedia(BaseModel):
    """``"media"`` of a send request."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, pattern=r"^https?://")
    type: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=100)


class ApiSend(BaseModel):
    """The body of ``POST /api/send``."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1)
    text: str | None = Field(default=None, min_length=1)
    media: ApiMedia | None = None
    template: ApiTemplate | None = None
    at: AwareDatetime | float | None = None
    after: float | None = Field(default=None, ge=0, allow_inf_nan=False)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic error as ``[{"loc": "a.b", "msg": ...}]`` for a 422 answer."""
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": str(e["msg"])} for e in exc.errors()]


async def send(request: Request) -> Response:
    """``POST /api/send``: text, media or a template to one user, now or later."""
    service = service_of(request)
    refusal = bearer_refusal(request, service.api_token, TOKEN_VARIABLE)
    if refusal is not None:
        return refusal
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    try:
        payload = ApiSend.model_validate(body)
    except ValidationError as exc:
        return error(422, "invalid_body", "see errors", errors=field_errors(exc))
    if payload.text is None and payload.media is None and payload.template is None:
        return error(422, "invalid_body", "give text, media or template")
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
        return error(422, "invalid_phone", str(exc))
    except OutsideSessionWindow as exc:
        return error(409, exc.reason, str(exc), user=exc.user, last_inbound=exc.last_inbound)
    except DeliveryRefused as exc:
        return error(409, exc.reason, str(exc), user=exc.user)
    except ReplyTooLong as exc:
        return error(422, exc.reason, str(exc), length=exc.length, limit=exc.limit)
    except ValueError as exc:
        return error(422, "invalid_body", str(exc))
    except StorageError as exc:
        return store_failed("send", exc, service.outage)
    return JSONResponse(
        {"status": "queued", "mode": queued[0].mode.value, "messages": [m.ref for m in queued]},
        status_code=202,
    )


async def cancel_scheduled(request: Request) -> Response:
    """``DELETE /api/scheduled/{id}``: cancel a message scheduled for later (404 if none)."""
    service = service_of(request)
    refusal = bearer_refusal(request, service.api_token, TOKEN_VARIABLE)
    if refusal is not None:
        return refusal
    try:
        cancelled = await service.runtime.cancel_scheduled(request.path_params["id"])
    except StorageError as exc:
        return store_failed("cancel a scheduled send", exc, service.outage)
    if not cancelled:
        return error(404, "not_found", "no pending scheduled message with this id")
    return JSONResponse({"status": "cancelled"})


def routes() -> list[BaseRoute]:
    """The send API's routes, counted as ``send`` and ``scheduled``."""
    return [
        Route("/api/send", observed(send, "send"), methods=["POST"]),
        Route("/api/scheduled/{id}", observed(cancel_scheduled, "scheduled"), methods=["DELETE"]),
    ]


__all__ = ["ApiSend", "cancel_scheduled", "field_errors", "routes", "send"]
