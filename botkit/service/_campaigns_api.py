"""The campaigns' HTTP API, behind the send API's token (``BOTKIT_API_TOKEN``).

==========================================  =======================================
``POST /api/campaigns``                      create one (audience in the body): 201
``GET /api/campaigns``                       every campaign's totals
``GET /api/campaigns/{name}``                one campaign's totals
``POST /api/campaigns/{name}/pause``         stop sending (``/resume``, ``/cancel``)
==========================================  =======================================

The audience comes in the body, so it is bounded by ``BOTKIT_MAX_BODY_BYTES``
(about 20,000 recipients a megabyte); ``botkit campaign start`` streams a CSV
file of any size.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from botkit.delivery._campaigns import start_campaign
from botkit.service._http import bearer_refusal, error, json_body, observed, store_failed
from botkit.service._send_api import TOKEN_VARIABLE
from botkit.service._service import service_of
from botkit.storage.base import StorageError
from botkit.storage.campaigns import (
    CampaignExists,
    CampaignNotFound,
    CampaignsNeedRedis,
    CampaignState,
    CampaignStateError,
    CampaignStore,
)

ACTIONS: dict[str, tuple[tuple[CampaignState, ...], CampaignState]] = {
    "pause": ((CampaignState.RUNNING, CampaignState.SCHEDULED), CampaignState.PAUSED),
    "resume": ((CampaignState.PAUSED,), CampaignState.RUNNING),
    "cancel": (
        (
            CampaignState.IMPORTING,
            CampaignState.SCHEDULED,
            CampaignState.RUNNING,
            CampaignState.PAUSED,
        ),
        CampaignState.CANCELLED,
    ),
}


class CampaignTemplate(BaseModel):
    """``"template"`` of a new campaign."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    language: str | None = Field(default=None, min_length=2, max_length=8)


class CampaignRecipient(BaseModel):
    """One recipient of a new campaign's audience."""

    model_config = ConfigDict(extra="forbid")
    phone: str = Field(min_length=1, max_length=64)
    params: list[str] = Field(default_factory=list, max_length=20)


class NewCampaign(BaseModel):
    """The body of ``POST /api/campaigns``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    template: CampaignTemplate
    audience: list[CampaignRecipient] = Field(min_length=1)
    rate: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    at: AwareDatetime | float | None = None
    text_in_window: str | None = Field(default=None, min_length=1, max_length=1000)


def _store(request: Request) -> CampaignStore | Response:
    """The service's campaigns, or the answer that says why not (the 401, the 404)."""
    service = service_of(request)
    refused = bearer_refusal(request, service.api_token, TOKEN_VARIABLE)
    if refused is not None:
        return refused
    try:
        return service.store.campaigns()
    except CampaignsNeedRedis as exc:
        return error(501, "campaigns_unsupported", str(exc))


async def create(request: Request) -> Response:
    """``POST /api/campaigns``: create a campaign with its audience; 201 with its totals."""
    campaigns = _store(request)
    if isinstance(campaigns, Response):
        return campaigns
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    try:
        spec = NewCampaign.model_validate(body)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": str(e["msg"])}
            for e in exc.errors()[:20]
        ]
        return error(422, "invalid_body", "see errors", errors=errors)
    service = service_of(request)
    try:
        totals = await start_campaign(
            campaigns,
            name=spec.name,
            template=spec.template.id,
            language=spec.template.language,
            audience=((r.phone, r.params) for r in spec.audience),
            expected=len(spec.audience),
            rate=spec.rate,
            at=spec.at,
            text_in_window=spec.text_in_window,
            clock=service.clock,
        )
    except CampaignExists as exc:
        return error(409, "campaign_exists", str(exc))
    except ValueError as exc:
        return error(422, "invalid_body", str(exc))
    except StorageError as exc:
        return store_failed("create a campaign", exc, service.outage)
    return JSONResponse(totals.to_dict(), status_code=201)


async def listing(request: Request) -> Response:
    """``GET /api/campaigns``: every campaign's totals, oldest first."""
    campaigns = _store(request)
    if isinstance(campaigns, Response):
        return campaigns
    try:
        found = [(await campaigns.totals(c)).to_dict() for c in await campaigns.all()]
    except StorageError as exc:
        return store_failed("list campaigns", exc, service_of(request).outage)
    return JSONResponse({"campaigns": sorted(found, key=lambda c: c["created_at"])})


async def one(request: Request) -> Response:
    """``GET /api/campaigns/{name}``: its totals (404 when there is none)."""
    campaigns = _store(request)
    if isinstance(campaigns, Response):
        return campaigns
    name = request.path_params["name"]
    try:
        campaign = await campaigns.get(name)
        if campaign is None:
            return error(404, "not_found", f"no campaign is called {name!r}")
        return JSONResponse((await campaigns.totals(campaign)).to_dict())
    except StorageError as exc:
        return store_failed("read a campaign", exc, service_of(request).outage)


async def act(request: Request) -> Response:
    """``POST /api/campaigns/{name}/pause|resume|cancel``: its totals in the new state."""
    campaigns = _store(request)
    if isinstance(campaigns, Response):
        return campaigns
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ACTIONS:
        return error(404, "not_found", "the actions are pause, resume and cancel")
    allowed, to = ACTIONS[action]
    try:
        campaign = await campaigns.change_state(name, allowed, to)
        return JSONResponse((await campaigns.totals(campaign)).to_dict())
    except CampaignNotFound as exc:
        return error(404, "not_found", str(exc))
    except CampaignStateError as exc:
        return error(409, "invalid_state", str(exc))
    except StorageError as exc:
        return store_failed(f"{action} a campaign", exc, service_of(request).outage)


def routes() -> list[BaseRoute]:
    """The campaigns' routes, counted as ``campaigns``."""
    return [
        Route("/api/campaigns", observed(create, "campaigns"), methods=["POST"]),
        Route("/api/campaigns", observed(listing, "campaigns"), methods=["GET"]),
        Route("/api/campaigns/{name}", observed(one, "campaigns"), methods=["GET"]),
        Route("/api/campaigns/{name}/{action}", observed(act, "campaigns"), methods=["POST"]),
    ]


__all__ = ["ACTIONS", "NewCampaign", "act", "create", "listing", "one", "routes"]
