"""Campaigns end to end: the bot served for real (LiveBot) on a real Redis, the emulator over HTTP.

A campaign is created in the store (as ``botkit campaign start`` does) and
the service's own sender sends it, after the replies, at its rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from botkit import Bot, Context
from botkit.delivery import start_campaign
from botkit.devtools.emulator import Emulator
from botkit.storage.campaigns import CampaignState, CampaignTotals
from botkit.storage.memory import MemoryStore
from botkit.storage.redis import RedisStore
from botkit.testing import LiveBot
from tests.service._harness import wait_for
from tests.service.test_app import FAST

bot = Bot("campaigner", plugins=["optout"])


@bot.text()
async def echo(ctx: Context) -> None:
    await ctx.reply(f"you said: {ctx.text}")


def phone(n: int) -> str:
    return f"7901{n:07d}"


@pytest.fixture
async def live(redis_url: str, redis_prefix: str) -> AsyncIterator[LiveBot]:
    store = RedisStore(redis_url, bot=bot.name, prefix=redis_prefix, shards=16)
    emulator = Emulator(api_key="live-test")
    async with LiveBot(bot, store=store, emulator=emulator, sender_config=FAST) as running:
        yield running


@pytest.fixture
async def quiet(redis_url: str, redis_prefix: str) -> AsyncIterator[LiveBot]:
    """As ``live``, without status callbacks: this one process plays the provider too, and
    three callbacks a message would make a loaded machine's CPU, not the sender, the limit."""
    store = RedisStore(redis_url, bot=bot.name, prefix=redis_prefix, shards=16)
    emulator = Emulator(api_key="live-test")
    async with LiveBot(
        bot, store=store, emulator=emulator, sender_config=FAST, public_url=""
    ) as running:
        yield running


def campaign_messages(live: LiveBot, template: str) -> list[str]:
    return [
        m.message.to or ""
        for m in live.emulator.messages
        if m.received.get("templateId") == template or m.received.get("text") == "hello!"
    ]


async def totals(live: LiveBot, name: str) -> CampaignTotals:
    campaigns = live.service.store.campaigns()
    campaign = await campaigns.get(name)
    assert campaign is not None
    return await campaigns.totals(campaign)


async def finished(live: LiveBot, name: str, *, within: float = 60.0) -> CampaignTotals:
    async def done() -> bool:
        return (await totals(live, name)).state is CampaignState.DONE

    await wait_for(done, within=within, what=f"campaign {name} to finish")
    return await totals(live, name)


async def test_a_small_campaign_reaches_everyone_once_and_counts_what_happened(
    live: LiveBot,
) -> None:
    # One user is inside their window: they get the in-window text; one opted out.
    await live.say(phone(1), "hi")
    await live.say(phone(2), "STOP")
    await live.replies(2)
    audience = [(phone(n), (f"name{n}",)) for n in range(1, 21)]
    audience += [("not a number", ("x",)), (phone(3), ("again",))]
    started = await start_campaign(
        live.service.store.campaigns(),
        name="spring",
        template="spring_sale",
        language="en",
        audience=audience,
        expected=len(audience),
        rate=0,
        text_in_window="hello!",
    )
    assert started.audience == 20
    result = await finished(live, "spring")
    assert result.skipped == {"duplicate": 1, "invalid": 1, "opted_out": 1}
    assert result.sent == 19 and result.queued == 0
    sent = campaign_messages(live, "spring_sale")
    assert sorted(sent) == sorted(phone(n) for n in range(1, 21) if n != 2)
    [in_window] = [m for m in live.emulator.messages if m.received.get("text") == "hello!"]
    assert in_window.message.to == phone(1)
    [templated] = [m for m in live.emulator.messages if m.message.to == phone(5)]
    assert templated.received["templateParams"] == {"1": "name5"}
    assert templated.received["languageCode"] == "en"

    async def read() -> bool:
        return (await totals(live, "spring")).read == 19

    await wait_for(read, what="every status callback counted")
    final = await totals(live, "spring")
    assert (final.delivered, final.read, final.failed) == (19, 19, {})


async def test_a_paused_campaign_stops_and_resume_continues(live: LiveBot) -> None:
    audience = [(phone(n), ()) for n in range(200)]
    await start_campaign(
        live.service.store.campaigns(),
        name="paused",
        template="t",
        audience=audience,
        expected=200,
        rate=100,  # paced, so it is still under way when paused; 2 s to send all
    )
    await wait_for(lambda: len(campaign_messages(live, "t")) >= 20, what="20 sent")
    campaigns = live.service.store.campaigns()
    await campaigns.change_state("paused", [CampaignState.RUNNING], CampaignState.PAUSED)
    paused_at = time.time()
    # Nothing can prove a negative sooner: watch for two seconds that nothing more goes.
    await asyncio.sleep(2.0)
    late = [m for m in live.emulator.messages if m.received_at > paused_at + 1.0]
    assert late == []
    count = len(campaign_messages(live, "t"))
    assert count < 200
    await campaigns.change_state("paused", [CampaignState.PAUSED], CampaignState.RUNNING)
    result = await finished(live, "paused")
    assert result.sent == 200
    assert sorted(campaign_messages(live, "t")) == sorted(phone(n) for n in range(200))


def achieved_rate(times: list[float]) -> float:
    """Messages per second between the first and the last of ``times``."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


async def test_the_achieved_rate_stays_within_ten_percent_of_the_configured_one(
    quiet: LiveBot,
) -> None:
    live = quiet
    # The default rate, over 8 seconds.
    rate = 20.0
    await start_campaign(
        live.service.store.campaigns(),
        name="paced",
        template="t",
        audience=[(phone(n), ()) for n in range(160)],
        expected=160,
        rate=rate,
    )
    await finished(live, "paced")
    times = [m.received_at for m in live.emulator.messages]
    assert len(times) == 160
    assert abs(achieved_rate(times) - rate) <= 0.1 * rate, achieved_rate(times)
    # Batched: a few requests a second, not one per message.
    assert len(live.emulator.requests) < 160 / 3


async def test_a_user_who_writes_during_a_campaign_gets_the_reply_before_queued_messages(
    quiet: LiveBot,
) -> None:
    live = quiet
    # As fast as a slow provider takes them: the sender sends full batches back to back.
    live.emulator.response_delay = 0.1
    writer = phone(7)
    await start_campaign(
        live.service.store.campaigns(),
        name="busy",
        template="t",
        audience=[(phone(n), ()) for n in range(1000)],
        expected=1000,
        rate=0,
    )
    await wait_for(lambda: len(live.emulator.messages) >= 200, what="the campaign under way")
    answer = await live.emulator.inject(writer, "where is my order?")
    assert answer.status_code == 200  # the turn committed: its reply is in the outbox
    accepted_then = len(live.emulator.messages)
    await finished(live, "busy")
    messages = live.emulator.messages
    reply_at = next(n for n, m in enumerate(messages) if m.message.to == writer and m.message.text)
    # At most the batch then at the provider went first; the reply led the next one,
    # ahead of the campaign messages still queued.
    assert reply_at <= accepted_then + 100
    assert len(messages) - reply_at > 400
    assert sum(1 for m in messages if not m.message.text) == 1000


async def test_a_2301_halves_the_rate_and_the_recipient_is_retried_later(live: LiveBot) -> None:
    live.emulator.rate_limit = type(live.emulator.rate_limit)(messages=1, per=3600)
    throttled = phone(3)
    # The throttled recipient had a message a moment ago: the campaign's is their second.
    await live.service.runtime.send(throttled, template=__import__("botkit").Template("earlier"))
    await wait_for(lambda: len(live.emulator.messages) == 1, what="the earlier message")
    await start_campaign(
        live.service.store.campaigns(),
        name="slowed",
        template="t",
        audience=[(phone(n), ()) for n in range(40)],
        expected=40,
        rate=20,
    )

    async def slowed() -> bool:
        return (await totals(live, "slowed")).rate < 15

    await wait_for(slowed, what="the rate halved after the 2301")
    result = await finished(live, "slowed")
    assert result.sent == 40

    # The campaign's message to the throttled recipient failed 2301 and was retried.
    async def failed_2301() -> bool:
        return (await totals(live, "slowed")).failed == {"2301": 1}

    await wait_for(failed_2301, what="the 2301 counted")
    tries = [m for m in live.emulator.messages if m.message.to == throttled]
    assert len(tries) == 2


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_recipients_template_parameters_keep_their_count_when_empty(
    backend: str, redis_url: str, redis_prefix: str
) -> None:
    # An empty CSV cell is a parameter too: dropping it would shift or lose the template's.
    store = (
        MemoryStore()
        if backend == "memory"
        else RedisStore(redis_url, bot=bot.name, prefix=redis_prefix, shards=4)
    )
    rows = {phone(1): ("",), phone(2): (), phone(3): ("", "b"), phone(4): ("a", "")}
    try:
        campaigns = store.campaigns()
        await start_campaign(
            campaigns,
            name="blanks",
            template="t",
            audience=list(rows.items()),
            expected=len(rows),
            rate=0,
        )
        campaign = await campaigns.get("blanks")
        assert campaign is not None
        taken = await campaigns.take(campaign, "c1", 10)
        assert {r.phone: r.params for r in taken} == rows
    finally:
        await store.close()
