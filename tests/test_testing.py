"""The test kit: BotTester as a bot author uses it."""

from __future__ import annotations

import pytest

from botkit import Bot, Context, ManualClock, Media, Template
from botkit.testing import BotTester, transcript


def talking_bot() -> Bot:
    bot = Bot("talker")

    @bot.text("menu")
    async def menu(ctx: Context) -> None:
        await ctx.reply("Our menu:")
        await ctx.reply("menu", media=Media("https://cdn.example/menu.pdf", "application/pdf"))
        await ctx.reply(template=Template("promo", ["10%"]))

    @bot.text("tell bob")
    async def tell_bob(ctx: Context) -> None:
        await ctx.bot.send("79990000002", "Ann says hi")
        await ctx.reply("told him")

    @bot.text("fail")
    async def fail(ctx: Context) -> None:
        raise RuntimeError("handler failed")

    @bot.message()
    async def who(ctx: Context) -> None:
        ctx.data["last"] = ctx.message.kind.value
        await ctx.reply(f"{ctx.message.kind.value} from {ctx.user}")

    return bot


async def test_each_send_returns_the_replies_of_that_turn_only() -> None:
    async with BotTester(talking_bot(), user="79990000001") as chat:
        first = await chat.send_text("hello")
        second = await chat.send_location(1.0, 2.0)
        third = await chat.send_contacts(("Bob", "79990000002"))
        fourth = await chat.send_media("https://x/a.jpg", "image/jpeg", user="79990000003")
    assert first.texts == ["text from 79990000001"]
    assert second.texts == ["location from 79990000001"]
    assert third.texts == ["contacts from 79990000001"]
    assert fourth.texts == ["media from 79990000003"]


async def test_replies_offer_texts_templates_and_a_transcript() -> None:
    async with BotTester(talking_bot()) as chat:
        replies = await chat.send_text("menu")
    assert replies.texts == ["Our menu:", "menu"]
    assert replies.text == "Our menu:\nmenu"
    assert replies.templates == [Template("promo", ["10%"])]
    assert transcript(replies).splitlines() == [
        "Our menu:",
        "[document https://cdn.example/menu.pdf] menu",
        "[template promo {'1': '10%'}]",
    ]


async def test_state_and_data_of_each_user_can_be_inspected() -> None:
    async with BotTester(talking_bot(), user="71") as chat:
        await chat.send_text("hi")
        await chat.send_location(0.0, 0.0, user="72")
        assert await chat.data() == {"last": "text"}
        assert await chat.data("72") == {"last": "location"}
        assert await chat.state() is None
        conversation = await chat.conversation("72")
        assert conversation.last_inbound == chat.clock.now()
        assert await chat.data("73") == {}  # a stranger has nothing stored


async def test_messages_sent_outside_the_turn_come_from_sent() -> None:
    async with BotTester(talking_bot(), user="79990000001") as chat:
        await chat.send_text("hello", user="79990000002")  # Bob's window is open
        replies = await chat.send_text("tell bob")
        assert replies.texts == ["told him"]
        (proactive,) = await chat.sent()
        assert (proactive.user, proactive.text) == ("79990000002", "Ann says hi")
        assert await chat.sent() == []  # each message is returned once


async def test_the_clock_stands_still_until_advanced() -> None:
    clock = ManualClock(start=1_700_000_000.0, frozen=True)
    async with BotTester(talking_bot(), clock=clock) as chat:
        await chat.send_text("hi")
        assert (await chat.conversation()).last_inbound == 1_700_000_000.0
        chat.advance(30, minutes=1, hours=1)
        assert chat.clock.now() == 1_700_000_000.0 + 3690
        await chat.send_text("hi")
        assert (await chat.conversation()).last_inbound == 1_700_003_690.0
        with pytest.raises(ValueError, match="only moves forward"):
            chat.advance(-1)


async def test_a_failing_handler_fails_the_test_unless_told_otherwise() -> None:
    bot = talking_bot()
    async with BotTester(bot) as chat:
        with pytest.raises(RuntimeError, match="handler failed"):
            await chat.send_text("fail")
    async with BotTester(bot, raise_errors=False) as chat:
        assert await chat.send_text("fail") == []
        assert chat.last is not None
        assert chat.last.outcome == "error"
        assert isinstance(chat.last.error, RuntimeError)


async def test_the_tester_starts_on_first_use_and_runs_hooks_once() -> None:
    bot = talking_bot()
    starts: list[str] = []

    @bot.on_startup
    async def up() -> None:
        starts.append("up")

    @bot.on_shutdown
    async def down() -> None:
        starts.append("down")

    chat = BotTester(bot)
    assert (await chat.send_text("hi")).texts == [f"text from {chat.user}"]
    await chat.start()
    assert bot.runtime is chat.runtime
    await chat.stop()
    await chat.stop()
    assert starts == ["up", "down"]
