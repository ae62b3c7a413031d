"""Redis going away under load, end to end: ``botkit run --workers 2`` keeps every promise.

The echo bot runs in two uvicorn workers; the provider emulator is served
over real HTTP. 200 users write 10 messages each, every user's messages one
after another, each one posted again (same ``incomingMessageId``) until the
webhook answers 200, as the provider does. Mid-load Redis fails. Afterwards
every message was answered exactly once and each user's replies arrived in
the order they wrote (``echo #1: m1``, ``echo #2: m2``...): nothing lost,
nothing doubled, nothing reordered.

The pause (the longest time without an answered webhook from the failure on)
is printed and recorded as a test property.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for, while_progressing
from tests.service._harness import (
    API_KEY,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    incoming,
)
from tests.service.conftest import Provider
from tests.storage._redis_server import RedisServer
from tests.storage._redis_topologies import RedisClusterNodes

pytestmark = pytest.mark.redis

USERS = 200
MESSAGES = 10  # per user
# Answered webhooks before Redis fails.
ANSWERED_BEFORE = 600
# The provider posts a message again this soon after a failed attempt (here).
RETRY_AFTER = 0.05
# A run fails when nothing more was answered (webhooks) or sent (replies) for
# this long. Under load the emulator (in this busy test process) can leave a
# send unanswered; the sender then holds that batch until a status callback
# names it or its resend_after passes (the default client's longest send plus
# the 60 s receipt grace: 100 s), and only then sends it again: the longest
# silence of a healthy run, by design (no double over a lost answer).
STALLED = 240.0
# The provider retries a status callback for up to 24 hours while botkit
# answers errors; the emulator's default (4 tries in 0.35 s) would give up
# within the outage. 10 tries cover 25 s.
CALLBACK_ATTEMPTS = 10


def user_number(n: int) -> str:
    return f"7900{n:07d}"


@dataclass
class Traffic:
    """The provider's side: each user's messages in order, each retried until answered 200."""

    webhook: str
    answered_at: list[float] = field(default_factory=list)
    failed: int = 0

    async def user_writes(self, http: httpx.AsyncClient, user: str) -> None:
        for n in range(1, MESSAGES + 1):
            payload = incoming(user, f"m{n}")
            while True:
                try:
                    answer = await http.post(self.webhook, json=payload)
                    if answer.status_code == 200:
                        break
                    assert answer.status_code == 503, answer.text  # never a 4xx or a 500
                except httpx.TransportError:
                    pass
                self.failed += 1
                await asyncio.sleep(RETRY_AFTER)
            self.answered_at.append(time.monotonic())

    async def run(self, users: list[str], fail: Callable[[], Awaitable[object]]) -> float:
        """Send everything; ``fail()`` once ``ANSWERED_BEFORE`` were answered. Return the pause.

        The pace depends on the machine's load, so the waits fail only when no
        webhook was answered for ``STALLED`` seconds, not after a fixed total.
        """
        limits = httpx.Limits(max_connections=len(users), max_keepalive_connections=len(users))
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            writers = [asyncio.create_task(self.user_writes(http, user)) for user in users]
            answered = self.answered_at.__len__
            try:
                await while_progressing(
                    wait_for(lambda: answered() >= ANSWERED_BEFORE, within=3600, every=0.01),
                    answered,
                    idle=STALLED,
                    what="webhooks answered before the failure",
                )
                failed_at = time.monotonic()
                await fail()
                await while_progressing(
                    asyncio.gather(*writers), answered, idle=STALLED, what="webhooks answered"
                )
            finally:
                for writer in writers:
                    writer.cancel()
        times = [failed_at, *(t for t in self.answered_at if t > failed_at)]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


async def start_workers(
    processes: list[BotProcess], provider: Provider, tmp_path: Path, redis_url: str
) -> str:
    """``botkit run bots.echo:bot --workers 2`` on ``redis_url``; returns the webhook URL."""
    provider.emulator.callback_attempts = CALLBACK_ATTEMPTS
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_URL=provider.url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=f"outage-{uuid.uuid4().hex[:8]}",
        BOTKIT_PUBLIC_URL=url,
    )
    args = ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    process = BotProcess(args, env, tmp_path / "botkit.log")
    processes.append(process)
    process.start()
    await process.wait_healthy(url, workers=2)
    return f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"


async def check_every_message_answered_once_in_order(provider: Provider, users: list[str]) -> None:
    emulator = provider.emulator
    await while_progressing(
        emulator.wait_for_messages(USERS * MESSAGES, within=3600),
        emulator.messages.__len__,
        idle=STALLED,
        what=f"replies (of {USERS * MESSAGES})",
    )
    replies: dict[str, list[str]] = {user: [] for user in users}
    for accepted in provider.emulator.messages:
        replies[accepted.message.to].append(accepted.received.get("text", ""))
    for user in users:
        expected = [f"echo #{n}: m{n}" for n in range(1, MESSAGES + 1)]
        assert replies[user] == expected, f"user ...{user[-4:]}"


async def test_a_5s_redis_outage_under_load_loses_nothing_doubles_nothing_keeps_order(
    provider: Provider,
    processes: list[BotProcess],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    server = RedisServer(tmp_path / "redis")  # append-only, fsynced: a restart keeps it all
    server.start()
    try:
        webhook = await start_workers(processes, provider, tmp_path, server.url)
        users = [user_number(n) for n in range(USERS)]
        traffic = Traffic(webhook)

        async def outage() -> None:
            server.kill()
            await asyncio.sleep(5)  # the outage itself, not a wait for something
            await asyncio.to_thread(server.start)

        pause = await traffic.run(users, outage)
        assert traffic.failed > 0, "the outage was felt"
        await check_every_message_answered_once_in_order(provider, users)
    finally:
        for process in processes:  # before Redis goes: no shutdown spent retrying it
            process.stop()
        server.close()
    record_property("pause_seconds", round(pause, 2))
    print(f"\n5 s Redis outage under load: webhooks paused {pause:.2f}s")


async def test_a_cluster_primary_killed_under_load_loses_nothing_doubles_nothing_keeps_order(
    provider: Provider,
    processes: list[BotProcess],
    tmp_path: Path,
    redis_cluster: RedisClusterNodes,
    record_property: Callable[[str, object], None],
) -> None:
    """The same load on the local 6-node cluster; SIGKILL of a primary mid-load."""
    webhook = await start_workers(processes, provider, tmp_path, redis_cluster.url)
    users = [user_number(n) for n in range(USERS)]
    traffic = Traffic(webhook)
    killed: list[int] = []

    async def failover() -> None:
        killed.append(redis_cluster.kill_primary())
        await asyncio.to_thread(redis_cluster.wait_promoted, killed[0])

    try:
        pause = await traffic.run(users, failover)
        await check_every_message_answered_once_in_order(provider, users)
    finally:
        for process in processes:
            process.stop()
        await asyncio.to_thread(redis_cluster.heal)
    record_property("pause_seconds", round(pause, 2))
    print(f"\nCluster primary SIGKILLed under load: webhooks paused {pause:.2f}s")
