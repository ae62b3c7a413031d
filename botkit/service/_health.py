"""Liveness, readiness and metrics: ``GET /healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from botkit import _metrics as metrics
from botkit.service._service import service_of


async def healthz(request: Request) -> Response:
    """``GET /healthz``: 200 while the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: 200 when the store answers and callbacks can be signed, else 503."""
    service = service_of(request)
    if not service.accepting:
        return JSONResponse({"status": "stopping"}, status_code=503)
    if not await service.store.ping() or not service.signer_ready:
        return JSONResponse({"status": "store unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: Prometheus text (summed over the workers of ``botkit run``)."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


def routes() -> list[BaseRoute]:
    """The health and metrics routes."""
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


__all__ = ["healthz", "metrics_endpoint", "readyz", "routes"]
