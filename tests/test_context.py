"""Context: what a handler reads and does during one turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from botkit import (
    Bot,
    Context,
    Media,
    OptedOut,
    OutsideSessionWindow,
    SendMode,
    Template,
)
from botkit.testing import BotTester

Next = Callable[[Context], Awaitable[Any]]


async def test_data_persists_between_turns_per_user() -> None:
    bot = Bot("data")

    @bot.text()
    async def count(ctx: Context) -> None:
        ctx.data["count"] = ctx.data.get("count", 0) + 1
        ctx.data.setdefault("history", []).append(ctx.text)
        await ctx.reply(str(ctx.data["count"]))

    async with BotTester(bot) as chat:
        assert (await chat.send_text("a", user="71")).texts == ["1"]
        assert (await chat.send_text("b", user="71")).texts == ["2"]
        assert (await chat.send_text("c", user="72")).texts == ["1"]
        assert await chat.data("71") == {"count": 2, "history": ["a", "b"]}
        assert await chat.data("72") == {"count": 1, "history": ["c"]}


async def test_data_read_from_the_store_cannot_be_changed_behind_the_turn() -> None:
    bot = Bot("isolation")

    @bot.text()
    async def remember(ctx: Context) -> None:
        ctx.data.setdefault("items", []).append(ctx.text)

    async with BotTester(bot) as chat:
        await chat.send_text("a")
        snapshot = await chat.data()
        snapshot["items"].append("tampered")
        await chat.send_text("b")
        assert await chat.data() == {"items": ["a", "b"]}


async def test_replies_are_buffered_until_the_turn_commits() -> None:
    bot = Bot("buffered")
    observed: list[tuple[int, int]] = []
    tester: BotTester

    @bot.middleware
    async def watch(ctx: Context, call_next: Next) -> Any:
        result = await call_next(ctx)
        observed.append((len(ctx.replies), await tester.store.outbox_size()))
        return result

    @bot.text()
    async def two_replies(ctx: Context) -> None:
        first = await ctx.reply("one")
        assert [m.text for m in first] == ["one"]
        await ctx.reply("two")
        observed.append((len(ctx.replies), await tester.store.outbox_size()))

    tester = BotTester(bot)
    async with tester as chat:
        replies = await chat.send_text("hi")
    assert observed == [(2, 0), (2, 0)]  # nothing reached the outbox during the turn
    assert replies.texts == ["one", "two"]


async def test_reply_forms_text_media_and_template() -> None:
    bot = Bot("forms")
    menu = Media("https://cdn.example/menu.pdf", "application/pdf", name="menu.pdf")
    promo = Template("promo", ["10%"])

    @bot.text("media")
    async def media(ctx: Context) -> None:
        await ctx.reply("our menu", media=menu)

    @bot.text("template")
    async def template(ctx: Context) -> None:
        await ctx.reply(template=promo)

    @bot.text("both")
    async def both(ctx: Context) -> None:
        await ctx.reply("hello", template=promo)

    async with BotTester(bot) as chat:
        (m,) = await chat.send_text("media")
        assert (m.mode, m.media, m.text) == (SendMode.MEDIA, menu, "our menu")
        (t,) = await chat.send_text("template")
        assert (t.mode, t.template) == (SendMode.TEMPLATE, promo)
        (b,) = await chat.send_text("both")
        assert (b.mode, b.text, b.fallback) == (SendMode.TEXT, "hello", promo)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({}, ValueError), ({"text": 42}, TypeError), ({"media": "https://x"}, TypeError)],
)
async def test_a_malformed_reply_fails_the_turn(kwargs: dict[str, Any], error: type) -> None:
    bot = Bot("malformed")

    @bot.text()
    async def bad(ctx: Context) -> None:
        await ctx.reply(**kwargs)

    async with BotTester(bot) as chat:
        with pytest.raises(error):
            await chat.send_text("x")


async def test_what_a_handler_reads_about_its_turn() -> None:
    bot = Bot("reads")
    seen: dict[str, Any] = {}

    @bot.message()
    async def read(ctx: Context) -> None:
        seen[ctx.message.kind.value] = {
            "text": ctx.text,
            "user": ctx.user,
            "bot": ctx.bot is bot,
            "now": ctx.now,
            "window": ctx.in_session_window,
            "state": ctx.state,
            "opted_out": ctx.opted_out,
        }

    async with BotTester(bot, user="79991112233") as chat:
        await chat.send_text("hello")
        await chat.send_media("https://x/a.jpg", "image/jpeg", caption="look")
        await chat.send_location(1.0, 2.0)
        now = chat.clock.now()

    common = {"user": "79991112233", "bot": True, "now": now, "window": True}
    common |= {"state": None, "opted_out": False}
    assert seen == {
        "text": {"text": "hello", **common},
        "media": {"text": "look", **common},
        "location": {"text": None, **common},
    }


async def test_outside_the_window_a_status_handler_cannot_send_free_text() -> None:
    bot = Bot("late-status")
    seen: list[Any] = []

    @bot.text()
    async def answer(ctx: Context) -> None:
        await ctx.reply("ok")

    @bot.status("read")
    async def late(ctx: Context) -> None:
        seen.append(ctx.in_session_window)
        try:
            await ctx.reply("thanks for reading")
        except OutsideSessionWindow as exc:
            seen.append(exc)
        await ctx.reply("thanks for reading", template=Template("thanks"))

    async with BotTester(bot) as chat:
        (reply,) = await chat.send_text("hi")
        chat.advance(hours=25)
        outcome = await chat.send_status(reply, "read")

    window, refused = seen
    assert window is False
    assert isinstance(refused, OutsideSessionWindow)
    assert [m.mode for m in outcome.replies] == [SendMode.TEMPLATE]


async def test_opting_out_persists_and_silences_replies() -> None:
    bot = Bot("optout")
    refused: list[Any] = []

    @bot.text("stop")
    async def stop(ctx: Context) -> None:
        await ctx.reply("You will not hear from us again.")
        ctx.opt_out()

    @bot.text("start")
    async def start(ctx: Context) -> None:
        ctx.opt_in()
        await ctx.reply("Welcome back!")

    @bot.text()
    async def anything(ctx: Context) -> None:
        assert ctx.opted_out
        sent = await ctx.reply("are you there?")
        refused.extend([sent, list(ctx.refused)])

    async with BotTester(bot) as chat:
        assert (await chat.send_text("stop")).texts == ["You will not hear from us again."]
        assert (await chat.conversation()).opted_out
        assert await chat.send_text("hello") == []
        assert (await chat.send_text("start")).texts == ["Welcome back!"]
        assert not (await chat.conversation()).opted_out

    sent, refusals = refused
    assert sent == []
    (refusal,) = refusals
    assert isinstance(refusal, OptedOut)
    assert refusal.user == chat.user
