"""Helpers for the service tests: the real ``botkit`` command as a subprocess,
waiting on conditions with deadlines, and the provider's example payloads.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.devino.test_models import PAGE_INCOMING, PAGE_STATUS
from tests.helpers import free_port, wait_for  # noqa: F401  (the service tests import them from here)

ROOT = Path(__file__).resolve().parents[2]

# Sentinel secrets: each is searched for in every output a test can see.
API_KEY = "svc-devino-key-Q7f3xK"
WEBHOOK_TOKEN = "svc-webhook-token-9sLw2M"
API_TOKEN = "svc-api-token-Zr81Pd"
REDIS_PASSWORD = "svc-redis-pw-Hq4nT0"
CALLBACK_SECRET = "svc-callback-secret-Vb82kQ-4f0e9a1c7d3b"
SECRETS = (API_KEY, WEBHOOK_TOKEN, API_TOKEN, REDIS_PASSWORD, CALLBACK_SECRET)
# How long a process's start, log line or exit may take on a loaded 2-core
# machine before the wait fails (each wait ends as soon as its condition holds).
LOADED = 60.0

# The provider's own examples ("Response example for incoming message" and
# "Response example for getting status" on the Devino WhatsApp page), verbatim.
# The provider page's own examples, defined once beside the wire-model tests.
PROVIDER_INCOMING_EXAMPLE: dict[str, Any] = PAGE_INCOMING
PROVIDER_STATUS_EXAMPLE: list[dict[str, Any]] = PAGE_STATUS

_ids = itertools.count(int(time.time() * 1000) * 1000)


def incoming(sender: str, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """An incoming message as the provider posts it, with a fresh ``incomingMessageId``."""
    payload: dict[str, Any] = {
        "incomingMessageId": next(_ids),
        "to": "79000000000",
        "from": sender,
        "ts": int(time.time()),
        **fields,
    }
    if text is not None:
        payload["text"] = text
    return payload


def port_refuses(port: int) -> bool:
    """True when nothing accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def clean_env(**botkit: str) -> dict[str, str]:
    """The test process's environment without any BOTKIT_ variable, plus ``botkit``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(botkit)
    return env


def run_env(provider_url: str, **botkit: str) -> dict[str, str]:
    """What ``botkit run`` needs against the emulator at ``provider_url``, plus ``botkit``."""
    return clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_URL=provider_url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
        BOTKIT_CALLBACK_SECRET=CALLBACK_SECRET,
        **botkit,
    )


def run_cli(
    args: Sequence[str], env: Mapping[str, str], *, cwd: Path = ROOT, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``botkit ARGS`` to completion (for commands that should exit)."""
    return subprocess.run(
        [sys.executable, "-m", "botkit", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class BotProcess:
    """A long-running ``botkit`` command (``run``, ``dev``...) in a subprocess.

    Its output (stdout and stderr together) goes to ``log_path``.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path = ROOT,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "botkit", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_for_log(self, text: str, *, count: int = 1, within: float = LOADED) -> None:
        """Wait until ``text`` appears ``count`` times in the output."""

        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.running:
                raise AssertionError(f"botkit exited early:\n{self.log()}")
            return False

        await wait_for(seen, within=within, what=f"{text!r} x{count} in the output")

    async def wait_healthy(
        self, base_url: str, *, workers: int = 1, within: float = LOADED
    ) -> None:
        """Wait until every worker finished start-up and ``/healthz`` answers 200."""
        await self.wait_for_log("Application startup complete", count=workers, within=within)
        async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:

            async def healthy() -> bool:
                if not self.running:
                    raise AssertionError(f"botkit exited early:\n{self.log()}")
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(healthy, within=within, what="GET /healthz 200")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, within: float = LOADED) -> int:
        """Wait for the process to end; return its exit code."""
        await wait_for(lambda: not self.running, within=within, what="botkit to exit")
        assert self.process is not None
        return int(self.process.returncode)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (cleanup; never fails)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def workers_of(process: BotProcess) -> list[int]:
    """The pids of ``botkit run --workers N``'s worker processes (its children that serve)."""
    assert process.process is not None
    pid = process.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"botkit.service._supervisor" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
