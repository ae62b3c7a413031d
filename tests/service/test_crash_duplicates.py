"""No second copy after a crash: ``kill -9`` of a worker with a batch in flight.

The scenario of the hardening issue: ``botkit run`` with two workers on
Redis, a provider (the emulator over HTTP) that answers each request after
4 s and sends status callbacks, a backlog of replies, and one worker killed
with SIGKILL while it has a batch at the provider. Its entries go to the
other worker (taken over once its heartbeat lapsed): those it had only read
are sent at once; those of the batch it had posted are settled by their
receipts (the status callbacks) and acknowledged, not sent again. Meanwhile
the backlog outlasts ``claim_idle``, so the live workers claim entries from
each other; a worker never posts what was claimed from it. Every reply
arrives exactly once.

The default suite runs 300 replies; the issue's full scale is
``BOTKIT_TEST_CRASH_REPLIES=3000`` (a few minutes: two workers post
100 replies per 4 s each).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from botkit.storage import RedisStore, StorageUnavailable
from tests.service._harness import (
    API_KEY,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    wait_for,
    workers_of,
)
from tests.service.conftest import Provider

REPLIES = int(os.environ.get("BOTKIT_TEST_CRASH_REPLIES", "300"))
PROVIDER_SECONDS = 4.0


def client_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` holds open (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_kill_9_of_a_worker_with_a_batch_in_flight_sends_no_reply_twice(
    provider: Provider,
    processes: list[BotProcess],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    emulator = provider.emulator
    emulator.response_delay = PROVIDER_SECONDS
    # The provider retries a callback for 24 hours; here for about four minutes.
    emulator.callback_attempts, emulator.callback_retry_delay = 10, 0.5
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_URL=provider.url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_PUBLIC_URL=url,
        # One attempt of at most 4 x 10 s: entries are claimed after 45 s. 10 s, not
        # less, for a 4 s provider: on a loaded machine the emulator answers late.
        # The grace is above the worst status-callback lag here: about 9,000
        # callbacks at 3,000 replies, which on a loaded machine lag by minutes.
        BOTKIT_DEVINO_TIMEOUT="10",
        BOTKIT_RECEIPT_GRACE="600",
    )
    service = BotProcess(
        ["run", "bots.echo:bot", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env,
        tmp_path / "botkit.log",
    )
    processes.append(service)
    service.start()
    await service.wait_healthy(url, workers=2)
    emulator.webhook_url = f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"

    # Faster than the workers post (the provider batches incoming messages too):
    # a backlog builds up.
    users = [f"7903{i:07d}" for i in range(REPLIES)]
    for start in range(0, REPLIES, 200):
        answers = await asyncio.gather(
            *(
                emulator.inject_many([{"from": u, "text": "hi"} for u in users[at : at + 100]])
                for at in range(start, min(start + 200, REPLIES), 100)
            )
        )
        assert {a.status_code for batch in answers for a in batch} == {200}

    # Both workers have a batch at the provider: kill one of them.
    # After the first round (which went out while messages were still coming in),
    # a worker with a request at the provider.
    workers = workers_of(service)
    assert len(workers) == 2
    victims: list[int] = []

    def a_worker_is_waiting_for_the_provider() -> bool:
        if len(emulator.requests) < 2:
            return False
        ports = {port for _, port in emulator.in_flight_from}
        victims[:] = [pid for pid in workers if ports & client_ports(pid)]
        return bool(victims)

    await wait_for(a_worker_is_waiting_for_the_provider, within=30, what="a batch in flight")
    victim = victims[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = emulator.now()

    def received() -> list[str]:
        return [m.received["to"] for m in emulator.messages]

    # Two workers post 100 replies per 4 s each; one is dead for a while.
    await wait_for(
        lambda: len(set(received())) == REPLIES,
        within=120 + REPLIES / 25,
        what="every user's reply",
        every=0.2,
    )
    store = RedisStore(redis_url, bot="echo", prefix=redis_prefix)
    try:

        async def outbox_empty() -> bool:
            try:
                return await store.outbox_size() == 0
            except StorageUnavailable:  # the shared Redis busy for a moment: look again
                return False

        # What may be at the provider is acknowledged as its receipts come in.
        await wait_for(
            outbox_empty, within=60 + REPLIES / 10, what="the outbox to empty", every=0.2
        )
    finally:
        await store.close()
    await wait_for(lambda: emulator.in_flight == 0, within=30, what="the last batch answered")

    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get("/metrics")).text
    counters = {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    twice = {to: times for to, times in Counter(received()).items() if times > 1}
    assert not twice, (
        f"{len(twice)} replies reached the provider twice (killed at {killed_at:.1f}, "
        f"resent unconfirmed: {counters.get('botkit_messages_resent_unconfirmed_total')}); "
        + "; ".join(
            f"...{to[-4:]} at "
            + ", ".join(f"{m.received_at:.1f}" for m in emulator.messages if m.received["to"] == to)
            for to in sorted(twice)[:5]
        )
    )
    # The mechanism was exercised: the dead worker's batch was settled by its receipts.
    assert counters.get("botkit_messages_settled_by_receipt_total", 0) >= 1
    print(
        f"{REPLIES} replies, {len(received())} posts, 0 twice; settled by receipt "
        f"{counters.get('botkit_messages_settled_by_receipt_total', 0):.0f}, resent unconfirmed "
        f"{counters.get('botkit_messages_resent_unconfirmed_total', 0):.0f}"
    )
    assert victim not in workers_of(service)
    service.stop()  # before the test's Redis keys are deleted
