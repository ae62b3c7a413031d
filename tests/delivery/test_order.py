"""Two senders (two processes, in production) keep each user's replies in order.

Every reply a commit queues gets its user's next send number; a sender
posts number k only once the provider answered k - 1, whichever sender had it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from botkit import OutboundMessage, RetryPolicy, SendMode
from botkit.delivery import CallbackSigner, OutboxWorker, OutboxWorkerConfig
from botkit.devino.client import DevinoClient
from botkit.devtools.emulator import Emulator
from botkit.storage import MemoryStore, RedisStore, SentRecord
from botkit.storage.base import OutboxItem, StorageUnavailable
from botkit.storage.redis.keys import Keys
from tests.conftest import delete_prefix, require_redis

USER = "79031110000"
OTHER = "79032220000"


@pytest.fixture
async def stores() -> AsyncIterator[tuple[RedisStore, RedisStore, str, str]]:
    """Two stores on one Redis and one prefix, as two worker processes have."""
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    first = RedisStore(url, bot="order", prefix=prefix, consumer="first")
    second = RedisStore(url, bot="order", prefix=prefix, consumer="second")
    await first.open()
    await second.open()
    yield first, second, url, prefix
    await first.close()
    await second.close()
    delete_prefix(url, prefix)


async def reply(store: RedisStore, user: str, key: str, *texts: str) -> None:
    lease = await store.begin_turn(user, key)
    messages = [OutboundMessage(user=user, mode=SendMode.TEXT, text=t) for t in texts]
    await store.commit_turn(lease, None, messages)


async def test_a_message_waits_until_the_one_before_it_to_its_user_is_answered(
    stores: tuple[RedisStore, RedisStore, str, str],
) -> None:
    first, second, _, _ = stores
    await reply(first, USER, "m:1", "one")
    await reply(first, USER, "m:2", "two", "three")
    [one] = await first.outbox_read("first", 1, 0)
    await reply(first, OTHER, "m:3", "elsewhere")
    later = await second.outbox_read("second", 10, 0)
    assert [i.message.text for i in later] == ["two", "three", "elsewhere"]
    assert [i.seq for i in [one, *later]] == [1, 2, 3, 1]

    # "one" is read by the other sender and not answered yet: only the other user's goes.
    assert await second.outbox_ready(later) == [False, False, True]
    await first.outbox_ack([one.id], answered=[one])
    assert await second.outbox_ready(later) == [True, True, True]


async def test_messages_queued_outside_turns_take_their_place_in_the_order(
    stores: tuple[RedisStore, RedisStore, str, str],
) -> None:
    first, second, _, _ = stores
    await reply(first, USER, "m:1", "reply")
    await first.enqueue([OutboundMessage(user=USER, mode=SendMode.TEXT, text="proactive")])
    items = await second.outbox_read("second", 10, 0)
    assert [(i.message.text, i.seq) for i in items] == [("reply", 1), ("proactive", 2)]
    assert await second.outbox_ready(items[1:]) == [False]
    assert await second.outbox_ready(items) == [True, True]  # in one batch, in order


async def test_a_user_whose_order_expired_is_not_held_back(
    stores: tuple[RedisStore, RedisStore, str, str],
) -> None:
    first, second, url, prefix = stores
    await reply(first, USER, "m:1", "one", "two")
    [one] = await first.outbox_read("first", 1, 0)
    [two] = await second.outbox_read("second", 1, 0)
    assert await second.outbox_ready([two]) == [False]
    check = aioredis.Redis.from_url(url)
    await check.delete(Keys(prefix, "order").conv(USER))  # expired, with its send order
    await check.aclose()
    assert await second.outbox_ready([two]) == [True]
    assert isinstance(one, OutboxItem)


async def test_two_senders_post_one_users_replies_in_commit_order(
    stores: tuple[RedisStore, RedisStore, str, str],
) -> None:
    first, second, url, prefix = stores
    emulator = Emulator(api_key="k")
    signer = CallbackSigner("order-test-secret-0123456789abcdef0123")
    config = OutboxWorkerConfig(block=0.05, linger=0.0)
    check = aioredis.Redis.from_url(url, decode_responses=True)
    async with emulator.serve() as provider:
        clients = [DevinoClient(provider, api_key="k") for _ in range(2)]
        senders = [
            OutboxWorker(store, client, sender_name="Order", signer=signer, config=config)
            for store, client in zip((first, second), clients, strict=True)
        ]
        try:
            # The first sender takes "1" and the provider sits on that request.
            emulator.delay_next(1, seconds=0.5)
            await reply(first, USER, "m:1", "1")
            senders[0].start()
            keys = Keys(prefix, "order")
            stream = keys.outbox(keys.shard(USER))
            for _ in range(500):
                if (await check.xpending(stream, "senders"))["pending"] == 1:
                    break
                await asyncio.sleep(0.01)
            # Meanwhile "2" and "3" are committed and the second sender reads them.
            await reply(first, USER, "m:2", "2", "3")
            senders[1].start()
            await emulator.wait_for_messages(3, within=10)
            assert [m.received["text"] for m in emulator.messages] == ["1", "2", "3"]
        finally:
            for sender in senders:
                await sender.stop(flush=1)
            for client in clients:
                await client.aclose()
            await check.aclose()


class FlakyOrderStore(MemoryStore):
    """A store whose send-order check fails once, as a Redis blip would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def outbox_ready(self, items: Sequence[OutboxItem]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("the order check failed")
        return await super().outbox_ready(items)


async def test_messages_read_before_a_failed_order_check_go_out_next_round() -> None:
    store = FlakyOrderStore()
    emulator = Emulator(api_key="k")
    async with emulator.serve() as provider:
        client = DevinoClient(provider, api_key="k")
        # A long claim_idle: only the sender's own memory brings the message back soon.
        config = OutboxWorkerConfig(
            retry=RetryPolicy(attempts=None, base_delay=0.05),
            block=0.05,
            linger=0.0,
            claim_idle=600,
        )
        signer = CallbackSigner("order-test-secret-0123456789abcdef0123")
        sender = OutboxWorker(store, client, sender_name="Order", signer=signer, config=config)
        lease = await store.begin_turn(USER, "m:1")
        await store.commit_turn(
            lease, None, [OutboundMessage(user=USER, mode=SendMode.TEXT, text="hi")]
        )
        sender.start()
        try:
            await emulator.wait_for_messages(1, within=5)
            assert store.failures == 0
        finally:
            await sender.stop(flush=1)
            await client.aclose()


class LostReadStore(MemoryStore):
    """A store whose first outbox read takes the entries but loses its answer.

    That is what a Redis crash between writing a read (its pending entries)
    and sending the reply looks like to the sender.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lost = 1

    async def outbox_read(self, consumer: str, count: int, block: float) -> list[OutboxItem]:
        items = await super().outbox_read(consumer, count, block)
        if items and self.lost:
            self.lost -= 1
            raise StorageUnavailable("the connection died with the reply on its way")
        return items


async def test_entries_a_failed_read_took_go_out_next_round_once_and_in_order() -> None:
    store = LostReadStore()
    emulator = Emulator(api_key="k")
    async with emulator.serve() as provider:
        client = DevinoClient(provider, api_key="k")
        # A long claim_idle: only taking its own entries back sends them soon.
        config = OutboxWorkerConfig(
            retry=RetryPolicy(attempts=None, base_delay=0.05),
            block=0.05,
            linger=0.0,
            claim_idle=600,
        )
        signer = CallbackSigner("order-test-secret-0123456789abcdef0123")
        sender = OutboxWorker(store, client, sender_name="Order", signer=signer, config=config)
        lease = await store.begin_turn(USER, "m:1")
        replies = [OutboundMessage(user=USER, mode=SendMode.TEXT, text=t) for t in ("1", "2")]
        await store.commit_turn(lease, None, replies)
        sender.start()
        try:
            await emulator.wait_for_messages(2, within=5)
            assert store.lost == 0
            lease = await store.begin_turn(USER, "m:2")
            third = OutboundMessage(user=USER, mode=SendMode.TEXT, text="3")
            await store.commit_turn(lease, None, [third])
            await emulator.wait_for_messages(3, within=5)
            assert [m.received["text"] for m in emulator.messages] == ["1", "2", "3"]
            async with asyncio.timeout(5):  # acknowledged right after the provider answered
                while await store.outbox_size():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            await sender.stop(flush=1)
            await client.aclose()


# Status callbacks on (so entries that may be at the provider wait for a receipt),
# to nowhere: no receipt ever comes.
NOWHERE = "http://127.0.0.1:9/whatsapp/status/t"
# Long waits: only the sender's own memory can send these messages soon.
PATIENT = OutboxWorkerConfig(
    retry=RetryPolicy(attempts=None, base_delay=0.01, max_delay=0.02),
    block=0.05,
    linger=0.0,
    claim_idle=600,
    receipt_grace=600,
)


@contextlib.asynccontextmanager
async def patient_sender(store: MemoryStore, provider: str) -> AsyncIterator[OutboxWorker]:
    """A sender (not started) with status callbacks on and long waits; stopped after."""
    client = DevinoClient(provider, api_key="k")
    signer = CallbackSigner("order-test-secret-0123456789abcdef0123")
    sender = OutboxWorker(
        store, client, sender_name="Order", signer=signer, callback_url=NOWHERE, config=PATIENT
    )
    try:
        yield sender
    finally:
        await sender.stop(flush=1)
        await client.aclose()


class LostAttemptStore(MemoryStore):
    """A store whose first attempt mark is written but its answer lost, as a Redis crash
    between running the script and sending the reply looks to the sender."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 1

    async def outbox_attempt(self, consumer: str, ids: Sequence[str]) -> list[str]:
        held = await super().outbox_attempt(consumer, ids)
        if self.lost:
            self.lost -= 1
            raise StorageUnavailable("the connection died with the reply on its way")
        return held


async def test_messages_marked_by_an_attempt_whose_answer_was_lost_go_at_once_in_order() -> None:
    """They were never posted: not held back for a receipt, nor the user's next replies."""
    store = LostAttemptStore()
    emulator = Emulator(api_key="k")
    async with emulator.serve() as provider, patient_sender(store, provider) as sender:
        await reply_in_memory(store, "m:1", "1", "2")
        sender.start()
        await emulator.wait_for_messages(2, within=5)
        assert store.lost == 0
        await reply_in_memory(store, "m:2", "3")
        await emulator.wait_for_messages(3, within=5)
        assert [m.received["text"] for m in emulator.messages] == ["1", "2", "3"]


class DownForAcksStore(MemoryStore):
    """A store unreachable for the first ``failures`` acknowledgements (an outage)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def outbox_ack(
        self,
        ids: Sequence[str],
        sent: Sequence[SentRecord] = (),
        *,
        answered: Sequence[OutboxItem] = (),
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("Redis is down")
        await super().outbox_ack(ids, sent, answered=answered)


async def test_a_sent_batch_is_acknowledged_after_a_long_outage_not_sent_again() -> None:
    """Only this sender knows the provider took it: it keeps trying, and never sends it again."""
    store = DownForAcksStore(failures=20)
    emulator = Emulator(api_key="k")
    async with emulator.serve() as provider, patient_sender(store, provider) as sender:
        await reply_in_memory(store, "m:1", "1")
        sender.start()
        async with asyncio.timeout(5):
            while store.failures or await store.outbox_size():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await reply_in_memory(store, "m:2", "2")
        await emulator.wait_for_messages(2, within=5)
        assert [m.received["text"] for m in emulator.messages] == ["1", "2"]


async def reply_in_memory(store: MemoryStore, key: str, *texts: str) -> None:
    lease = await store.begin_turn(USER, key)
    messages = [OutboundMessage(user=USER, mode=SendMode.TEXT, text=t) for t in texts]
    await store.commit_turn(lease, None, messages)
