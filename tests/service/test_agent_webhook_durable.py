"""The agent webhook with Redis survives a failing helpdesk and a SIGKILLed worker.

``botkit run`` serves the pizza bot on a real Redis; users hand off and write
through the provider emulator; a helpdesk of the test's own (real HTTP, a
free port) answers 500 at first. The worker is SIGKILLed while its notices
are pending, another ``botkit run`` starts, the helpdesk recovers: every
notice arrives, signed, with the same event id it had on the failed tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from botkit.service import serve_app
from tests.service._harness import BotProcess, free_port, run_env, wait_for
from tests.service.conftest import Provider

SECRET = "hook-secret-Vb7nQ2xLp9Wz4Rt"
USERS = [f"7903555{n:04d}" for n in range(4)]
WRITES = ["one", "two", "three"]


@dataclass
class Helpdesk:
    """The receiving side: answers 500 while ``failing``, records every post it accepted."""

    url: str = ""
    failing: bool = True
    tried: dict[str, int] = field(default_factory=dict)  # event id -> posts refused
    accepted: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    header_mismatch: int = 0


@contextlib.asynccontextmanager
async def helpdesk() -> AsyncIterator[Helpdesk]:
    desk = Helpdesk()

    async def hook(request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("x-botkit-signature", ""), expected):
            desk.bad_signatures += 1
            return Response(status_code=401)
        post = json.loads(body)
        if request.headers.get("x-botkit-event-id") != post["id"]:
            desk.header_mismatch += 1
        if desk.failing:
            desk.tried[post["id"]] = desk.tried.get(post["id"], 0) + 1
            return Response(status_code=500)
        desk.accepted.append(post)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_app(app) as url:
        desk.url = f"{url}/hook"
        yield desk


def start(name: str, env: dict[str, str], tmp_path: Path) -> tuple[BotProcess, str]:
    port = free_port()
    args = ["run", "bots.pizza:bot", "--host", "127.0.0.1", "--port", str(port)]
    process = BotProcess(args, env, tmp_path / f"{name}.log")
    process.start()
    return process, f"http://127.0.0.1:{port}"


async def test_pending_notices_survive_a_failing_helpdesk_and_a_sigkill(
    provider: Provider,
    redis_url: str,
    redis_prefix: str,
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    async with helpdesk() as desk:
        env = run_env(
            provider.url,
            BOTKIT_REDIS_URL=redis_url,
            BOTKIT_KEY_PREFIX=redis_prefix,
            BOTKIT_AGENT_WEBHOOK_URL=desk.url,
            BOTKIT_AGENT_WEBHOOK_SECRET=SECRET,
            BOTKIT_AGENT_WEBHOOK_CLAIM_AFTER="2",
            # A worker posts one notice at a time, each up to 8 attempts: short
            # backoffs get every notice refused (and pending) within seconds.
            BOTKIT_RETRY_BASE_DELAY="0.02",
            BOTKIT_RETRY_MAX_DELAY="0.1",
        )
        doomed, url = start("doomed", env, tmp_path)
        processes.append(doomed)
        await doomed.wait_healthy(url, within=60)
        provider.emulator.webhook_url = f"{url}/whatsapp/incoming/{env['BOTKIT_WEBHOOK_TOKEN']}"
        for user in USERS:
            answer = await provider.emulator.inject(user, "agent")
            assert answer.status_code == 200, answer.text
        for text in WRITES:
            results = await asyncio.gather(
                *(provider.emulator.inject(user, text) for user in USERS)
            )
            assert all(r.status_code == 200 for r in results), results
        expected = len(USERS) * (1 + len(WRITES))  # handoff.started + a message.received each

        # Every notice was tried and refused: all are pending on the doomed worker.
        await wait_for(lambda: len(desk.tried) >= expected, within=60, what="every notice tried")
        assert len(desk.tried) == expected
        doomed.signal(signal.SIGKILL)
        await doomed.wait_exit()

        survivor, url = start("survivor", env, tmp_path)
        processes.append(survivor)
        await survivor.wait_healthy(url, within=60)
        desk.failing = False

        def arrived() -> set[str]:
            return {post["id"] for post in desk.accepted}

        await wait_for(lambda: len(arrived()) >= expected, within=60, what="every notice posted")
        # The ids the helpdesk refused are those it then accepted: stable, so it can
        # de-duplicate the (at least once) copies.
        assert arrived() == set(desk.tried)
        assert desk.bad_signatures == 0
        assert desk.header_mismatch == 0
        unique = {post["id"]: post for post in desk.accepted}.values()
        for user in USERS:
            events = [p for p in unique if p["user"] == user]
            assert sorted(p["event"] for p in events) == sorted(
                ["handoff.started"] + ["message.received"] * len(WRITES)
            )
            texts = [p["message"]["text"] for p in events if p["event"] == "message.received"]
            assert sorted(texts) == sorted(WRITES)
