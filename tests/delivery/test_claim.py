"""A sender that dies between reading its outbox entries and sending them.

Another instance takes what the dead one left pending: by a claim after
``claim_idle``, or at once as the new owner of its shards when its heartbeat
expires. Every reply is delivered, and none twice, because the dead one never
reached the provider.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from botkit import OutboundMessage, RetryPolicy, SendMode
from botkit.delivery import CallbackSigner, OutboxWorker, OutboxWorkerConfig
from botkit.devino.client import DevinoClient
from botkit.devtools.emulator import Emulator
from botkit.storage import OutboxItem, RedisStore
from botkit.storage.base import StorageUnavailable
from botkit.storage.redis.keys import Keys
from tests.conftest import delete_prefix, require_redis
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
REPLIES = 30


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # read the request and sit on it until the client is gone
    writer.close()


async def _dying_sender(
    url: str, prefix: str, provider: str, heartbeat_ttl: float, stdout: int
) -> asyncio.subprocess.Process:
    """A sender in a process of its own (``tests/delivery/_dying_sender.py``), to kill."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.delivery._dying_sender", url, prefix, provider],
        str(heartbeat_ttl),
        cwd=ROOT,
        stdout=stdout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def _clean_up(
    dying: asyncio.subprocess.Process | None,
    black_hole: asyncio.Server,
    store: RedisStore,
    url: str,
    prefix: str,
) -> None:
    if dying is not None and dying.returncode is None:
        dying.kill()
        await dying.wait()
    black_hole.close()
    await store.close()
    delete_prefix(url, prefix)


def survivor(
    store: RedisStore,
    client: DevinoClient,
    *,
    claim_idle: float,
    heartbeat_ttl: float = 6.0,
    consumer_idle: float = 3600.0,
) -> OutboxWorker:
    """The sender that lives on ("survivor"), looking for others' entries every 0.1 s."""
    return OutboxWorker(
        store,
        client,
        sender_name="Claim",
        signer=CallbackSigner("claim-test-secret-0123456789abcdef0123"),
        consumer="survivor",
        config=OutboxWorkerConfig(
            claim_idle=claim_idle,
            block=0.1,
            heartbeat_ttl=heartbeat_ttl,
            housekeeping_every=0.1,
            consumer_idle=consumer_idle,
        ),
    )


@pytest.mark.parametrize(
    ("claim_idle", "heartbeat_ttl"),
    [
        pytest.param(0.5, 6.0, id="claimed-after-claim_idle"),
        # No claim for 10 minutes: only the shard owner's take-over, once the
        # dead sender's heartbeat expired, sends its entries this soon.
        pytest.param(600.0, 1.0, id="taken-over-when-its-heartbeat-expires"),
    ],
)
async def test_a_dead_senders_entries_are_claimed_and_sent_once(
    claim_idle: float, heartbeat_ttl: float
) -> None:
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    store = RedisStore(url, bot="claim", prefix=prefix, consumer="survivor")
    black_hole = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    hole_port = black_hole.sockets[0].getsockname()[1]
    dying: asyncio.subprocess.Process | None = None
    try:
        await store.open()
        for turn in range(3):
            user = f"7903000000{turn}"
            lease = await store.begin_turn(user, f"m:{turn}")
            replies = [
                OutboundMessage(user=user, mode=SendMode.TEXT, text=f"{turn}-{i}")
                for i in range(REPLIES // 3)
            ]
            await store.commit_turn(lease, None, replies)

        hole = f"http://127.0.0.1:{hole_port}"
        dying = await _dying_sender(url, prefix, hole, heartbeat_ttl, asyncio.subprocess.PIPE)
        assert dying.stdout is not None
        line = (await asyncio.wait_for(dying.stdout.readline(), 20)).decode()
        assert line.startswith("READ "), line
        dying.send_signal(signal.SIGKILL)
        await asyncio.wait_for(dying.wait(), 10)
        assert await store.outbox_size() == REPLIES, "the dead sender acknowledged nothing"

        emulator = Emulator(api_key="k")
        async with emulator.serve() as provider:
            client = DevinoClient(provider, api_key="k")
            sender = survivor(store, client, claim_idle=claim_idle, heartbeat_ttl=heartbeat_ttl)
            sender.start()
            try:
                await emulator.wait_for_messages(REPLIES, within=15)
                for _ in range(500):  # the survivor acknowledges once the provider answered
                    if await store.outbox_size() == 0:
                        break
                    await asyncio.sleep(0.02)
                assert await store.outbox_size() == 0
            finally:
                await sender.stop(flush=1)
                await client.aclose()
            texts = sorted(m.received["text"] for m in emulator.messages)
        assert texts == sorted(f"{t}-{i}" for t in range(3) for i in range(REPLIES // 3))
    finally:
        await _clean_up(dying, black_hole, store, url, prefix)


class LostTakeOverStore(RedisStore):
    """A store whose first take-over takes the entries but loses its answer.

    That is what a Redis node failing (or a cluster client reset by another
    call's failure) between running the script and replying looks like.
    """

    lost = 1

    async def outbox_take_over(self, *args: Any, **kw: Any) -> list[OutboxItem]:
        taken = await super().outbox_take_over(*args, **kw)
        if taken and self.lost:
            self.lost -= 1
            raise StorageUnavailable("the connection died with the reply on its way")
        return taken


async def test_entries_a_failed_take_over_took_are_sent_soon_not_after_claim_idle() -> None:
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    store = LostTakeOverStore(url, bot="claim", prefix=prefix, consumer="survivor")
    try:
        await store.open()
        user = "79030000009"
        lease = await store.begin_turn(user, "m:1")
        replies = [OutboundMessage(user=user, mode=SendMode.TEXT, text=f"#{i}") for i in range(5)]
        await store.commit_turn(lease, None, replies)
        # A sender that read them and left without a heartbeat: not a live sender.
        assert len(await store.outbox_read("departed", 10, 0)) == 5

        emulator = Emulator(api_key="k")
        async with emulator.serve() as provider:
            client = DevinoClient(provider, api_key="k")
            # No claim for 10 minutes: only the take-over (and taking back
            # what its lost answer took) sends them this soon.
            sender = survivor(store, client, claim_idle=600, heartbeat_ttl=1.0)
            sender.start()
            try:
                await emulator.wait_for_messages(5, within=15)
                assert store.lost == 0, "the take-over's answer was lost once"
            finally:
                await sender.stop(flush=1)
                await client.aclose()
            assert [m.received["text"] for m in emulator.messages] == [f"#{i}" for i in range(5)]
    finally:
        await store.close()
        delete_prefix(url, prefix)


def resent_unconfirmed() -> float:
    return REGISTRY.get_sample_value("botkit_messages_resent_unconfirmed_total") or 0.0


async def test_a_dead_senders_posted_entries_without_receipts_wait_out_resend_after() -> None:
    """Posted by the dead sender (to a provider that never got them): no receipt comes,
    so they go again once, and not before the longest send plus the receipt grace."""
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    store = RedisStore(url, bot="claim", prefix=prefix, consumer="survivor")
    posted = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        posted.set()
        await _never_answer(reader, writer)

    black_hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hole_port = black_hole.sockets[0].getsockname()[1]
    dying: asyncio.subprocess.Process | None = None
    try:
        await store.open()
        texts = [f"m{i}" for i in range(5)]
        await store.enqueue(
            [OutboundMessage(user="79030000001", mode=SendMode.TEXT, text=t) for t in texts]
        )
        hole = f"http://127.0.0.1:{hole_port}"
        dying = await _dying_sender(url, prefix, hole, 1.0, asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(posted.wait(), 20)
        attempted = time.monotonic()
        dying.send_signal(signal.SIGKILL)
        await asyncio.wait_for(dying.wait(), 10)

        emulator = Emulator(api_key="k")
        async with emulator.serve() as provider:
            # Longest send 4 x 0.5 s, plus 3 s of grace: 5 s after the dead one marked its
            # attempt, just before posting; taken over about 1 s after the kill.
            client = DevinoClient(provider, api_key="k", timeout=0.5, retry=RetryPolicy(attempts=1))
            sender = OutboxWorker(
                store,
                client,
                sender_name="Claim",
                signer=CallbackSigner("claim-test-secret-0123456789abcdef0123"),
                callback_url=f"{provider}/no-callbacks-come",
                consumer="survivor",
                config=OutboxWorkerConfig(
                    block=0.1, heartbeat_ttl=1.0, housekeeping_every=0.1, receipt_grace=3.0
                ),
            )
            assert sender.resend_after == 5.0
            before = resent_unconfirmed()
            sender.start()
            try:
                await emulator.wait_for_messages(5, within=20)
                first = min(m.received_at for m in emulator.messages)
            finally:
                await sender.stop(flush=1)
                await client.aclose()
        sent_after = first - emulator.now() + time.monotonic() - attempted
        # The mark comes a moment before the post reached the black hole.
        assert sent_after >= 4.0, "not before resend_after"
        assert sorted(m.received["text"] for m in emulator.messages) == texts
        assert resent_unconfirmed() - before == 5
    finally:
        await _clean_up(dying, black_hole, store, url, prefix)


def outbox_consumers(store: RedisStore, keys: Keys) -> dict[str, int]:
    """Every consumer of the outbox's shard groups, with its pending entries (all shards)."""
    found: dict[str, int] = {}
    client = redis.Redis.from_url(store.url, decode_responses=True)
    try:
        for shard in store.outbox_shards():
            for consumer in client.xinfo_consumers(keys.outbox(shard), store.group):
                found[consumer["name"]] = found.get(consumer["name"], 0) + consumer["pending"]
    finally:
        client.close()
    return found


async def test_the_consumers_of_senders_gone_are_forgotten_and_what_they_hold_is_kept() -> None:
    """Every process reads as a consumer of its own: restarts must not pile them up in Redis."""
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    store = RedisStore(url, bot="prune", prefix=prefix, consumer="survivor")
    await store.open()
    keys = Keys(prefix, "prune")
    emulator = Emulator(api_key="k")
    try:
        # Two processes that are gone: one acknowledged all it read, one left an entry.
        for n in range(2):
            await commit_reply(store, f"7904000000{n}", f"reply {n}")
        read = await store.outbox_read("gone-clean", 10, 0)
        assert len(read) == 2
        await store.outbox_ack([item.id for item in read])
        await commit_reply(store, "79040000002", "reply 2")
        [left] = await store.outbox_read("gone-holding", 10, 0)
        assert outbox_consumers(store, keys) == {"gone-clean": 0, "gone-holding": 1}
        async with emulator.serve() as provider:
            client = DevinoClient(provider, api_key="k")
            sender = survivor(store, client, claim_idle=600, consumer_idle=0.2)
            sender.start()
            try:
                await wait_for(
                    lambda: "gone-clean" not in outbox_consumers(store, keys),
                    within=10,
                    what="the clean consumer forgotten",
                )
                await commit_reply(store, "79040000009", "after")
                await emulator.wait_for_messages(1, within=10)
            finally:
                await sender.stop(flush=1)
                await client.aclose()
        # The one holding an entry stays, with it (a claim or take-over settles it).
        consumers = outbox_consumers(store, keys)
        assert consumers.get("gone-holding") == 1
        assert [i.id for i in await store.outbox_unacked("gone-holding", 10)] == [left.id]
    finally:
        await store.close()
        delete_prefix(url, prefix)


async def commit_reply(store: RedisStore, user: str, text: str) -> None:
    lease = await store.begin_turn(user, f"m:{uuid.uuid4().hex}")
    await store.commit_turn(
        lease, None, [OutboundMessage(user=user, mode=SendMode.TEXT, text=text)]
    )
