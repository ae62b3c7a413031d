"""The reminder bot: what it answers, and that reminders come at their time, once."""

from __future__ import annotations

from botkit import ManualClock, Template
from botkit.storage import RedisStore
from botkit.testing import BotTester, LiveBot
from bots.reminder import HELP, bot


async def test_a_reminder_is_acknowledged_and_sent_at_its_time() -> None:
    async with BotTester(bot) as chat:
        ok = await chat.send_text("remind me in 10 minutes call mom")
        assert ok.texts == ["ok, I will remind you in 10 minutes"]
        assert (await chat.advance(minutes=9, seconds=59)) == []
        assert (await chat.advance(seconds=1)).texts == ["reminder: call mom"]
        assert (await chat.advance(hours=1)) == []


async def test_seconds_and_the_singular() -> None:
    async with BotTester(bot) as chat:
        assert (await chat.send_text("remind me in 1 second tea")).text == (
            "ok, I will remind you in 1 second"
        )
        assert (await chat.send_text("Remind me in 30 seconds stretch")).text == (
            "ok, I will remind you in 30 seconds"
        )
        assert (await chat.advance(1)).texts == ["reminder: tea"]
        assert (await chat.advance(29)).texts == ["reminder: stretch"]


async def test_list_and_cancel() -> None:
    async with BotTester(bot) as chat:
        assert (await chat.send_text("list")).text == "no pending reminders"
        await chat.send_text("remind me in 5 minutes milk")
        await chat.send_text("remind me in 50 seconds call")
        chat.advance(20)
        assert (await chat.send_text("list")).text == (
            "pending reminders:\n2) in 30 seconds: call\n1) in 4 minutes 40 seconds: milk"
        )
        assert (await chat.send_text("cancel 1")).text == "cancelled reminder 1: milk"
        assert (await chat.send_text("cancel 1")).text == (
            "no pending reminder 1; send list to see them"
        )
        assert (await chat.send_text("list")).text == "pending reminders:\n2) in 30 seconds: call"
        assert (await chat.advance(minutes=10)).texts == ["reminder: call"]
        assert (await chat.send_text("list")).text == "no pending reminders"


async def test_anything_else_gets_the_help() -> None:
    async with BotTester(bot) as chat:
        assert (await chat.send_text("remind me in 2 hours x")).text == HELP
        assert (await chat.send_text("hello")).text == HELP


async def test_outside_the_window_the_reminder_is_the_template() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("remind me in 1500 minutes renew passport")
        [sent] = await chat.advance(minutes=1500)
        assert sent.template == Template("reminder", ["renew passport"])


async def test_a_reminder_over_http_with_redis_comes_once_at_its_time(
    redis_url: str, redis_prefix: str
) -> None:
    clock = ManualClock()
    store = RedisStore(redis_url, bot="reminder", prefix=redis_prefix, clock=clock)
    async with LiveBot(bot, store=store, clock=clock) as live:
        await live.say("79031234567", "remind me in 1 second stand up")
        replies = await live.replies(2, within=20)
        texts = [r.message.text for r in replies]
        assert texts == ["ok, I will remind you in 1 second", "reminder: stand up"]
        assert (await store.load("79031234567")).timers == {}
