"""Delivery end to end: the reply policy, the outbox, the sender and status handling.

The bot runs as a real web service and talks to the provider emulator over
HTTP; status callbacks come back over HTTP too.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY

from botkit import (
    Bot,
    Context,
    DeliveryStatus,
    ManualClock,
    OutsideSessionWindow,
    RetryPolicy,
    Template,
)
from botkit.delivery import OutboxWorkerConfig
from botkit.devtools.emulator import Emulator, RateLimit
from botkit.testing import LiveBot

from .conftest import StoreMaker

USER = "79031234567"
FAST = OutboxWorkerConfig(
    retry=RetryPolicy(attempts=None, base_delay=0.02, max_delay=0.1),
    block=0.2,
    housekeeping_every=0.05,
)


def make_bot() -> Bot:
    bot = Bot("delivery")

    @bot.text("many")
    async def many(ctx: Context) -> None:
        for i in range(300):
            await ctx.reply(f"reply {i}")

    @bot.text("long")
    async def long(ctx: Context) -> None:
        paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(5)]
        await ctx.reply("\n\n".join(paragraphs))

    @bot.text("stop")
    async def stop(ctx: Context) -> None:
        await ctx.reply("You will hear no more from us.")
        ctx.opt_out()

    @bot.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply(ctx.text, template=Template("come_back", [ctx.text or ""]))

    return bot


def texts(live: LiveBot) -> list[str | None]:
    return [m.received.get("text") for m in live.emulator.messages]


def templates(live: LiveBot) -> list[str]:
    return [
        m.received["templateId"] for m in live.emulator.messages if m.received.get("templateId")
    ]


async def test_reply_inside_the_window_goes_as_text(make_store: StoreMaker) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(), clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        await live.say(USER, "hello")
        [sent] = await live.replies(1)
        assert sent.received["text"] == "hello"
        assert "templateId" not in sent.message
        assert sent.received["from"] == "botkit-test"
        assert sent.received["callbackUrl"] == f"{live.url}/whatsapp/status/{live.token}"


async def test_outside_the_window_a_template_goes_instead_and_text_is_refused(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(), clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        await live.say(USER, "hello")
        await live.replies(1)
        live.clock.advance(hours=25)

        with pytest.raises(OutsideSessionWindow) as refused:
            await live.bot.send(USER, "are you still there?")
        assert refused.value.user == USER and USER not in str(refused.value)
        assert f"...{USER[-4:]}" in str(refused.value) and "template=" in str(refused.value)

        queued = await live.bot.send(
            USER, "your order is ready", template=Template("order_ready", ["#42"])
        )
        assert [m.mode.value for m in queued] == ["template"]
        messages = await live.replies(2)
        assert messages[1].received["templateId"] == "order_ready"
        assert messages[1].received["templateParams"] == {"1": "#42"}
        await asyncio.sleep(0)
        assert len(live.emulator.messages) == 2, "the refused text was never sent"


async def test_a_2312_is_resent_once_as_the_fallback_template(make_store: StoreMaker) -> None:
    # The platform's window (60 s) is shorter than the bot believes (24 h): the
    # free text goes out, the platform answers 2312, the template follows once.
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", session_window=60, clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        await live.say(USER, "first")
        await live.replies(1)
        live.clock.advance(seconds=120)
        await live.bot.send(USER, "late text", template=Template("come_back", ["x"]))
        await emulator.wait_until(
            lambda: any(
                c.status is DeliveryStatus.FAILED and c.delivered for c in emulator.callbacks
            ),
            what="the 2312 callback acknowledged",
        )
        await live.replies(3)
        assert texts(live)[:2] == ["first", "late text"]
        assert templates(live) == ["come_back"]

        # The same callback again (the provider retries) and a forged one: no resend.
        failed = next(m for m in emulator.messages if m.received.get("text") == "late text")
        report = {
            "messageId": failed.message_id,
            "ts": 0,
            "status": "FAILED",
            "errorCode": 2312,
            "options": failed.received["callbackData"],
        }
        forged = {**report, "options": failed.received["callbackData"][:-4] + "AAAA"}
        status_url = f"{live.url}/whatsapp/status/{live.token}"
        async with httpx.AsyncClient() as http:
            repeat = await http.post(status_url, json=[report])
            fake = await http.post(status_url, json=[forged])
            unsigned = await http.post(status_url, json={**report, "options": None})
        assert repeat.status_code == 200 and repeat.content == b""
        # Refused: acknowledged (or the provider retries for 24 h), nothing resent.
        assert (fake.status_code, fake.content) == (200, b"")
        assert (unsigned.status_code, unsigned.content) == (200, b"")
        await _settle(live)
        assert templates(live) == ["come_back"], "exactly one template resend"


async def test_a_2301_is_retried_later(make_store: StoreMaker) -> None:
    clock = ManualClock()
    emulator = Emulator(
        api_key="live-test", rate_limit=RateLimit(messages=1, per=30), clock=clock.now
    )
    async with LiveBot(
        make_bot(),
        emulator=emulator,
        clock=clock,
        store=make_store(clock),
        sender_config=FAST,
        rate_retry=RetryPolicy(attempts=2, base_delay=40, max_delay=40, jitter=0),
    ) as live:
        await live.say(USER, "one")
        await live.replies(1)
        await live.bot.send(USER, "two")
        await emulator.wait_until(
            lambda: any(
                c.status is DeliveryStatus.FAILED and c.delivered for c in emulator.callbacks
            ),
            what="the 2301 callback acknowledged",
        )
        assert len(emulator.messages) == 2
        live.clock.advance(seconds=41)  # the retry is due and the rate window has passed
        messages = await live.replies(3)
        assert [m.received.get("text") for m in messages] == ["one", "two", "two"]
        retried = messages[2]
        await emulator.wait_until(lambda: retried.status is not None, what="a status")
        assert retried.status is not None and retried.status.wire == "SENT"


def retried_for_transport() -> float:
    return REGISTRY.get_sample_value("botkit_messages_retried_total", {"cause": "transport"}) or 0


async def test_five_hundreds_then_ok_is_delivered_exactly_once(make_store: StoreMaker) -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        emulator.fail_next(4, status=500)
        before = retried_for_transport()
        await live.say(USER, "persist")
        [sent] = await live.replies(1, within=10)
        assert sent.received["text"] == "persist"
        assert [r.http_status for r in emulator.requests][:5] == [500, 500, 500, 500, 200]
        # Retries are not nested: the client tried each request once, and the
        # outbox worker (with its RetryPolicy) made each of the four retries.
        assert retried_for_transport() - before == 4
        await _settle(live)
        assert texts(live) == ["persist"]


async def test_three_hundred_replies_go_out_in_at_most_five_requests(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    # A platform that lets the burst through (the default limits one recipient to 20 per 10 s).
    emulator = Emulator(
        api_key="live-test", clock=clock.now, rate_limit=RateLimit(messages=1000, per=1)
    )
    async with LiveBot(
        make_bot(),
        emulator=emulator,
        clock=clock,
        store=make_store(clock),
        sender_config=FAST,
        public_url="",  # no status callbacks: 900 of them are beside the point here
    ) as live:
        await live.say(USER, "many")
        messages = await live.replies(300, within=15)
        assert [m.received["text"] for m in messages] == [f"reply {i}" for i in range(300)]
        assert len(live.emulator.requests) <= 5


async def test_long_text_is_split_in_order(make_store: StoreMaker) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(), clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        await live.say(USER, "long")
        await live.emulator.wait_until(lambda: len(live.emulator.messages) >= 2)
        await _settle(live)
        parts = texts(live)
        assert all(p is not None and len(p) <= 1000 for p in parts)
        joined = "\n\n".join(p or "" for p in parts)
        assert [line.split(".")[0] for line in joined.split("\n\n")] == [
            f"Paragraph {i}" for i in range(5)
        ]


async def test_an_opted_out_user_gets_nothing(make_store: StoreMaker) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(),
        clock=clock,
        store=make_store(clock),
        sender_config=FAST,
        api_token="api-secret-token",
    ) as live:
        await live.say(USER, "stop")
        await live.replies(1)
        await live.say(USER, "hello?")
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                f"{live.url}/api/send",
                json={"to": USER, "text": "news!"},
                headers={"Authorization": "Bearer api-secret-token"},
            )
        assert refused.status_code == 409
        assert refused.json()["error"] == "opted_out"
        await _settle(live)
        assert texts(live) == ["You will hear no more from us."]


async def _settle(live: LiveBot) -> None:
    """Wait until the outbox is empty and the sender idle, so 'nothing more' is meaningful."""
    store = live.service.store
    deadline = asyncio.get_running_loop().time() + 5
    while await store.outbox_size() > 0:
        assert asyncio.get_running_loop().time() < deadline, "the outbox did not empty"
        await asyncio.sleep(0.01)
    # One more sender cycle: anything read but not yet posted is posted by now.
    await asyncio.sleep(FAST.block + 0.05)


async def test_statuses_only_move_forward(make_store: StoreMaker) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(), clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        await live.say(USER, "hello")
        [sent] = await live.replies(1)
        await live.emulator.wait_until(
            lambda: sum(c.delivered for c in sent.callbacks) == 3, what="sent, delivered, read"
        )
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "read"

        late = {
            "messageId": sent.message_id,
            "status": "DELIVERED",  # arrives after READ: ignored
            "options": sent.received["callbackData"],
        }
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{live.url}/whatsapp/status/{live.token}", json=late)
        assert answer.status_code == 200
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "read"
