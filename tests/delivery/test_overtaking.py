"""Two live senders with a backlog longer than ``claim_idle``: each message is sent once.

A sender reads more than it can post at once (a read takes up to a batch
from each of its shards, and keeps the rest for its next reads), so some
entries wait in it longer than ``claim_idle``, and the other sender claims
them. The one that read them must then not post them too: before each post
it keeps only the entries it still holds (``outbox_attempt``). This is what
duplicated hundreds of replies under a backlog of 3,000 with a slow provider.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from botkit import OutboundMessage, SendMode
from botkit.delivery import CallbackSigner, OutboxWorker, OutboxWorkerConfig
from botkit.devino.client import DevinoClient
from botkit.devtools.emulator import Emulator
from botkit.storage import RedisStore
from tests.conftest import delete_prefix, require_redis

MESSAGES = 400
BATCH = 10
PROVIDER_SECONDS = 0.3
# Two senders post 2 x 10 messages per 0.3 s: the backlog lasts about 6 s, six claim_idles.
CLAIM_IDLE = 1.0


async def test_a_sender_never_posts_what_another_claimed_from_it() -> None:
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    stores = [
        RedisStore(url, bot="overtake", prefix=prefix, consumer=name)
        for name in ("first", "second")
    ]
    emulator = Emulator(api_key="k", response_delay=PROVIDER_SECONDS)
    clients: list[DevinoClient] = []
    senders: list[OutboxWorker] = []
    try:
        for store in stores:
            await store.open()
        # One message to each of many users: spread over the outbox's shards.
        await stores[0].enqueue(
            [
                OutboundMessage(user=f"7904{i:07d}", mode=SendMode.TEXT, text=f"m{i}")
                for i in range(MESSAGES)
            ]
        )
        config = OutboxWorkerConfig(
            batch_size=BATCH,
            claim_idle=CLAIM_IDLE,
            block=0.05,
            linger=0.0,
            housekeeping_every=0.1,
        )
        async with emulator.serve() as provider:
            for store in stores:
                client = DevinoClient(provider, api_key="k", batch_cap=BATCH)
                clients.append(client)
                senders.append(
                    OutboxWorker(
                        store,
                        client,
                        sender_name="Overtake",
                        signer=CallbackSigner("overtake-test-secret-0123456789abcdef01"),
                        consumer=store.consumer,
                        config=config,
                    )
                )
            for sender in senders:
                sender.start()

            async def drained() -> bool:
                return await stores[0].outbox_size() == 0

            for _ in range(1500):
                if await drained():
                    break
                await asyncio.sleep(0.02)
            assert await drained(), "every message acknowledged"
            await emulator.wait_until(lambda: emulator.in_flight == 0, what="no post in flight")
        posted = Counter(m.received["text"] for m in emulator.messages)
        assert set(posted) == {f"m{i}" for i in range(MESSAGES)}
        twice = sorted(text for text, times in posted.items() if times > 1)
        assert twice == [], f"{len(twice)} messages posted more than once"
    finally:
        for sender in senders:
            await sender.stop(flush=1)
        for client in clients:
            await client.aclose()
        for store in stores:
            await store.close()
        delete_prefix(url, prefix)
