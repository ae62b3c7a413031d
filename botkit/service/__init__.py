"""The service tier: what runs a bot as a web service.

- :mod:`botkit.service._settings`: :class:`Settings` from the environment;
- :mod:`botkit.service._service`: the composition root, :class:`Service`
  (runtime, store, client, outbox worker, status tracker, timer worker);
- :mod:`botkit.service._app`: :func:`create_app`, the Starlette application,
  which mounts each feature's routes:
  :mod:`~botkit.service._webhooks` (the provider's webhooks),
  :mod:`~botkit.service._send_api` (``/api/send``, ``/api/scheduled``),
  :mod:`~botkit.service._health` (``/healthz``, ``/readyz``, ``/metrics``),
  :mod:`~botkit.service._campaigns_api`, :mod:`~botkit.service._agent` and
  :mod:`~botkit.service._agent_page`; their shared answers and helpers are
  in :mod:`~botkit.service._http`;
- :mod:`botkit.service._logs`: one structured line per turn;
- ``metrics``: the Prometheus counters the engine and the workers update
  (kept low, in ``botkit._metrics``, so every layer can count), served at ``/metrics``;
- :mod:`botkit.service._serving`: uvicorn, embedded or as the main loop;
- :mod:`botkit.service._target`: loading a bot from ``MODULE[:ATTR]``.

The ``botkit`` command itself (:mod:`botkit.cli`) sits above the service and
the dev tools, whose commands it gathers.
"""

from botkit import _metrics as metrics
from botkit.service._app import FEATURES, create_app
from botkit.service._logs import (
    ConsoleFormatter,
    JsonFormatter,
    LoopBatchedHandler,
    configure_logging,
)
from botkit.service._service import Service, build_store
from botkit.service._serving import SERVER_GC_YOUNG, ServingError, run_app, serve_app
from botkit.service._settings import DEFAULT_DEVINO_URL, Settings, SettingsError, load_settings
from botkit.service._target import BotLoadError, load_bot

__all__ = [
    "DEFAULT_DEVINO_URL",
    "FEATURES",
    "SERVER_GC_YOUNG",
    "BotLoadError",
    "ConsoleFormatter",
    "JsonFormatter",
    "LoopBatchedHandler",
    "Service",
    "ServingError",
    "Settings",
    "SettingsError",
    "build_store",
    "configure_logging",
    "create_app",
    "load_bot",
    "load_settings",
    "metrics",
    "run_app",
    "serve_app",
]
