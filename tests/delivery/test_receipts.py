"""Status callbacks are receipts: a batch that may have reached the provider is not sent twice.

The provider takes a batch but its answer never reaches botkit (here: it
answers after the client's read timeout). With status callbacks, the
callbacks name the messages, and the sender acknowledges them instead of
sending them again. Without callbacks nothing can tell, and the batch is sent
again: at least once. Through the real service (uvicorn, the emulator over
HTTP) on both stores.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from botkit import ManualClock, RetryPolicy
from botkit.delivery import OutboxWorkerConfig
from botkit.devtools.emulator import Emulator
from botkit.testing import LiveBot

from .conftest import StoreMaker
from .test_delivery import USER, _settle, make_bot

# The sender's own retries are quick; the provider's answer comes after the read timeout.
QUICK = OutboxWorkerConfig(
    retry=RetryPolicy(attempts=None, base_delay=0.05, max_delay=0.1), block=0.1, receipt_grace=10.0
)
TIMEOUT = 0.5
LATE = 1.5


async def settled_by_receipt(live: LiveBot) -> float:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{live.url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "botkit_messages_settled_by_receipt_total"
    )


async def test_an_unanswered_batch_the_provider_took_is_acknowledged_not_resent(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(),
        emulator=emulator,
        clock=clock,
        store=make_store(clock),
        sender_config=QUICK,
        devino_timeout=TIMEOUT,
    ) as live:
        before = await settled_by_receipt(live)
        emulator.delay_next(1, seconds=LATE)
        await live.say(USER, "hello")
        [sent] = await live.replies(1, within=10)
        await _settle(live)
        assert [m.received.get("text") for m in emulator.messages] == ["hello"]
        assert [r.http_status for r in emulator.requests] == [200]  # one request, answered late
        assert await settled_by_receipt(live) - before == 1
        # Acknowledged with the provider's id: later statuses find the message.
        await emulator.wait_until(
            lambda: sum(c.delivered for c in sent.callbacks) == 3, what="sent, delivered, read"
        )
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        ref = sent.received["callbackData"].split(".")[1]
        # Settled at delivered or read: a READ that lands while the sender settles
        # the batch can be left out of the record (a known race, see the README's
        # delivery guarantees); either way the message counts as delivered.
        assert record is not None and record.message.ref == ref
        assert record.status in ("delivered", "read")
        # Settled as delivered: a replayed failure cannot bring it back.
        replay = {
            "messageId": sent.message_id,
            "status": "FAILED",
            "errorCode": 2312,
            "options": sent.received["callbackData"],
        }
        async with httpx.AsyncClient() as http:
            await http.post(f"{live.url}/whatsapp/status/{live.token}", json=[replay])
        await _settle(live)
        assert [m.received.get("text") for m in emulator.messages] == ["hello"]
        assert not [m for m in emulator.messages if m.received.get("templateId")]


async def test_without_status_callbacks_an_unanswered_batch_is_sent_again(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(),
        emulator=emulator,
        clock=clock,
        store=make_store(clock),
        sender_config=QUICK,
        devino_timeout=TIMEOUT,
        public_url="",  # no callbacks, no receipts: at least once
    ) as live:
        emulator.delay_next(1, seconds=LATE)
        await live.say(USER, "hello")
        await live.replies(2, within=10)
        await _settle(live)
        assert [m.received.get("text") for m in emulator.messages] == ["hello", "hello"]
