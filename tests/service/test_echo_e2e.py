"""The echo bot end to end, as a user runs it: ``botkit run bots.echo:bot``.

The real command runs in a subprocess under uvicorn, with a real Redis; the
provider emulator is served over HTTP by the test, injects the users'
messages into the webhook and receives the replies; status callbacks come
back to the service through ``BOTKIT_PUBLIC_URL``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from botkit import RetryPolicy
from botkit.delivery import OutboxWorkerConfig
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import (
    API_KEY,
    PROVIDER_INCOMING_EXAMPLE,
    WEBHOOK_TOKEN,
    BotProcess,
    free_port,
    incoming,
    run_env,
    wait_for,
)
from tests.service.conftest import Provider
from tests.storage._redis_server import RedisServer

ANNA = "79031234567"
BORIS = "491791112233"
FAST = OutboxWorkerConfig(
    retry=RetryPolicy(attempts=None, base_delay=0.02, max_delay=0.2),
    block=0.2,
    housekeeping_every=0.05,
)


def replies_to(provider: Provider, user: str) -> list[str]:
    return [m.received.get("text", "") for m in provider.emulator.messages if m.message.to == user]


@pytest.fixture
def service_env(provider: Provider, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return run_env(provider.url, BOTKIT_REDIS_URL=redis_url, BOTKIT_KEY_PREFIX=redis_prefix)


async def start_service(
    processes: list[BotProcess],
    provider: Provider,
    env: dict[str, str],
    tmp_path: Path,
    *,
    workers: int = 1,
) -> tuple[BotProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "BOTKIT_PUBLIC_URL": url}
    args = ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port)]
    process = BotProcess([*args, "--workers", str(workers)], env, tmp_path / "botkit.log")
    processes.append(process)
    process.start()
    await process.wait_healthy(url, workers=workers)
    provider.emulator.webhook_url = f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    return process, url


async def test_echo_bot_under_botkit_run(
    provider: Provider,
    service_env: dict[str, str],
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    emulator = provider.emulator
    process, url = await start_service(
        processes, provider, {**service_env, "BOTKIT_LOG_FORMAT": "json"}, tmp_path
    )
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).status_code == 200

        # Every kind of message, each answered with the user's running count.
        sent = [
            await emulator.inject(ANNA, "hello"),
            await emulator.inject(
                ANNA, content_url="https://cdn.example/p.jpg", content_type="image/jpeg"
            ),
            await emulator.inject(
                ANNA,
                contacts=[
                    {"contactName": [{"formattedName": "Ivan"}], "phones": [{"phone": "+7 903"}]},
                    {"contactName": [{"firstName": "Olga"}]},
                ],
            ),
            await emulator.inject(ANNA, geo_location={"latitude": 55.75, "longitude": 37.62}),
            await emulator.inject(BORIS, "hallo"),
            await emulator.inject(ANNA, "again"),
        ]
        assert [(r.status_code, r.body) for r in sent] == [(200, "")] * 6
        await emulator.wait_for_messages(6)
        assert replies_to(provider, ANNA) == [
            "echo #1: hello",
            "#2: got media image/jpeg",
            "#3: got contacts 2",
            "#4: got location",
            "echo #5: again",
        ]
        assert replies_to(provider, BORIS) == ["echo #1: hallo"]
        first = emulator.messages[0].received
        assert first["from"] == "EchoCo"
        assert first["callbackUrl"] == f"{url}/whatsapp/status/{WEBHOOK_TOKEN}"

        # The provider retries a message (same incomingMessageId): answered, not run again.
        webhook = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"
        retry = await http.post(webhook, json=sent[0].incoming)
        assert (retry.status_code, retry.content) == (200, b"")

        # An array: each message is a turn; each user's messages in order.
        batch = [incoming(ANNA, "six"), incoming(BORIS, "zwei"), incoming(ANNA, "seven")]
        answer = await http.post(webhook, json=batch)
        assert (answer.status_code, answer.content) == (200, b"")
        await emulator.wait_for_messages(9)
        assert replies_to(provider, ANNA)[5:] == ["echo #6: six", "echo #7: seven"]
        assert replies_to(provider, BORIS) == ["echo #1: hallo", "echo #2: zwei"]

        # The provider's own example, with real numbers: the media wins over the text.
        example = {**PROVIDER_INCOMING_EXAMPLE, "from": BORIS, "to": "79000000000"}
        example["incomingMessageId"] = incoming(BORIS)["incomingMessageId"]
        answer = await http.post(webhook, json=example)
        assert (answer.status_code, answer.content) == (200, b"")
        await emulator.wait_for_messages(10)
        assert replies_to(provider, BORIS)[-1] == "#3: got media str"

        # Every reply's SENT, DELIVERED and READ came back and was acknowledged 200.
        await emulator.wait_for_callbacks(30, within=10)
        assert {c.http_status for c in emulator.callbacks} == {200}

        metrics = (await http.get("/metrics")).text
        assert 'botkit_turns_total{kind="text",outcome="handled"}' in metrics
        assert 'botkit_turns_total{kind="text",outcome="duplicate"} 1.0' in metrics

    process.signal()
    await process.wait_exit()
    log = process.log()
    assert "Application shutdown complete" in log
    turns = [
        line
        for line in map(json.loads, filter(str.strip, log.splitlines()))
        if line.get("logger") == "botkit.turn" and line.get("kind") != "status"
    ]
    assert len(turns) == 11  # ten handled, one duplicate
    assert {t["user"] for t in turns} == {"...4567", "...2233"}
    assert {t["handler"] for t in turns if t["outcome"] == "handled"} == {
        "echo_text",
        "echo_media",
        "echo_contacts",
        "echo_location",
    }
    assert all(isinstance(t["ms"], int | float) for t in turns)
    for secret in (ANNA, BORIS, API_KEY, WEBHOOK_TOKEN):
        assert secret not in log


def _incoming_requests_by_worker(metrics_dir: Path) -> dict[str, float]:
    """``incoming`` webhook requests answered 200, per worker process (pid)."""
    counts: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in metric.samples:
                labels = sample.labels
                if (
                    sample.name == "botkit_webhook_requests_total"
                    and labels.get("endpoint") == "incoming"
                    and labels.get("status") == "200"
                ):
                    counts[path.stem] = counts.get(path.stem, 0.0) + sample.value
    return counts


async def test_two_workers_share_the_count(
    provider: Provider,
    service_env: dict[str, str],
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**service_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    _, url = await start_service(processes, provider, env, tmp_path, workers=2)
    webhook = f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"

    # One user writes; each message on a new connection, until both workers took some.
    sent = 0
    for sent in range(1, 61):
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(webhook, json=incoming(ANNA, f"m{sent}"))
        # A 503 "turn running for longer than 10s" here is the Redis store missing
        # the wake-up of a status turn that committed in the other worker.
        assert answer.status_code == 200, answer.text
        if sent >= 4 and len(_incoming_requests_by_worker(metrics_dir)) == 2:
            break
    # Each worker writes its counts within a flush interval (metrics.FLUSH_EVERY).
    await wait_for(
        lambda: len(_incoming_requests_by_worker(metrics_dir)) == 2,
        within=2,
        what=f"both workers to take requests ({_incoming_requests_by_worker(metrics_dir)})",
    )

    await provider.emulator.wait_for_messages(sent)
    # Each worker's sender posts what it read from the shared outbox, and a
    # reply goes only once the provider answered the one before it: in order.
    assert replies_to(provider, ANNA) == [f"echo #{n}: m{n}" for n in range(1, sent + 1)]

    # /metrics adds up both workers' numbers; the other worker's reach it within
    # a flush interval (metrics.FLUSH_EVERY).
    total = f'botkit_turns_total{{kind="text",outcome="handled"}} {float(sent)}'
    async with httpx.AsyncClient(base_url=url) as http:

        async def counted() -> bool:
            return total in (await http.get("/metrics")).text

        await wait_for(counted, within=5, what=f"/metrics to count {sent} turns", every=0.1)


async def test_redis_stopped_answers_503_and_recovers_after_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        async with LiveBot(
            echo.bot, redis_url=server.url, key_prefix="outage", sender_config=FAST
        ) as live:
            webhook = f"{live.url}/whatsapp/incoming/{live.token}"
            await live.say(ANNA, "one")
            await live.replies(1)

            server.kill()
            async with httpx.AsyncClient(base_url=live.url) as http:
                lost = incoming(ANNA, "two")
                answer = await http.post(webhook, json=lost)
                assert answer.status_code == 503
                assert answer.json()["error"] == "unavailable"
                assert answer.headers["retry-after"]
                assert (await http.get("/readyz")).status_code == 503
                assert (await http.get("/healthz")).status_code == 200

                server.start()

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await wait_for(ready, what="/readyz 200 after the restart")
                # The provider's retry of the refused message runs it: nothing was
                # marked done, and the count from before the outage is still there.
                retry = await http.post(webhook, json=lost)
                assert (retry.status_code, retry.content) == (200, b"")
                await live.replies(2)
                again = await http.post(webhook, json=lost)
                assert again.status_code == 200
            await live.say(ANNA, "three")
            await live.replies(3)
            assert replies_to_live(live, ANNA) == ["echo #1: one", "echo #2: two", "echo #3: three"]
    finally:
        server.close()


def replies_to_live(live: LiveBot, user: str) -> list[str]:
    return [m.received.get("text", "") for m in live.emulator.messages if m.message.to == user]
