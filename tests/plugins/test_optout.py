"""The opt-out plugin: STOP, START, and silence for opted-out users everywhere."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from botkit import Bot, Context, Flow, OptedOut
from botkit.plugins import installed
from botkit.plugins.optout import STARTED, STOPPED
from botkit.testing import BotTester, LiveBot
from bots import pizza

USER = "79031234567"


@pytest.fixture(autouse=True)
def _no_extra_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BOTKIT_PLUGINS", raising=False)
    yield


def busy_bot(calls: list[str]) -> Bot:
    """A bot with handlers of every kind, a flow and a fallback, recording what ran."""
    bot = Bot("busy", plugins=["optout"])
    survey = Flow("survey", states=["q1"])
    bot.include_router(survey)

    @survey.text(state="q1")
    async def answer(ctx: Context) -> None:
        calls.append("flow")
        await ctx.reply("thanks")

    @bot.text("survey")
    async def start(ctx: Context) -> None:
        calls.append("start survey")
        await ctx.flow.start(survey)
        await ctx.reply("Question 1?")

    @bot.text()
    async def echo(ctx: Context) -> None:
        calls.append("text")
        await ctx.reply(f"echo: {ctx.text}")

    @bot.media()
    async def media(ctx: Context) -> None:
        calls.append("media")
        await ctx.reply("nice picture")

    @bot.fallback()
    async def other(ctx: Context) -> None:
        calls.append("fallback")
        await ctx.reply("hm?")

    @bot.status("delivered")
    async def delivered(ctx: Context) -> None:
        calls.append("status")

    return bot


def test_the_plugin_is_installed_through_the_entry_point() -> None:
    assert installed()["optout"].value == "botkit.plugins.optout:plugin"
    assert "optout" in pizza.bot.plugins


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop "])
async def test_stop_in_any_case_opts_out_with_one_confirmation(word: str) -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        assert (await chat.send_text(word)).texts == [STOPPED]
        assert (await chat.conversation()).opted_out
        assert (await chat.send_text(word)).texts == [], "no second confirmation"
        assert calls == []


async def test_an_opted_out_user_gets_nothing_from_any_handler() -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        await chat.send_text("stop")
        assert (await chat.send_text("hello")).texts == []
        assert (await chat.send_text("survey")).texts == []
        assert (await chat.send_media("https://example.com/a.jpg", "image/jpeg")) == []
        assert (await chat.send_location(55.7, 37.6)) == []
        assert (await chat.send_contacts(("Ann", "79035550000"))) == []
        assert calls == [], "no bot handler ran for the opted-out user"
        assert await chat.state() is None
        with pytest.raises(OptedOut):
            await chat.bot.send(chat.user, "news!")
        assert await chat.sent() == []


async def test_delivery_statuses_still_reach_the_bot() -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        [confirmation] = await chat.send_text("STOP")
        await chat.send_status(confirmation, "delivered")
        assert calls == ["status"]


async def test_stop_leaves_the_flow_the_user_was_in() -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        await chat.send_text("survey")
        assert await chat.state() == "survey:q1"
        await chat.send_text("STOP")
        assert await chat.state() is None
        await chat.send_text("START")
        assert (await chat.send_text("blue")).texts == ["echo: blue"]


async def test_start_opts_back_in_and_the_bot_answers_again() -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        await chat.send_text("STOP")
        assert (await chat.send_text("Start")).texts == [STARTED]
        assert not (await chat.conversation()).opted_out
        assert (await chat.send_text("hello")).texts == ["echo: hello"]
        assert calls == ["text"]


async def test_start_from_a_subscribed_user_goes_to_the_bot() -> None:
    calls: list[str] = []
    async with BotTester(busy_bot(calls)) as chat:
        assert (await chat.send_text("start")).texts == ["echo: start"]


async def test_e2e_opt_out_across_the_webhook_and_the_send_api() -> None:
    async with LiveBot(pizza.bot, api_token="api-secret") as live:
        await live.say(USER, "hi")
        await live.say(USER, "STOP")
        messages = await live.replies(2)
        assert messages[1].received["text"] == STOPPED

        await live.say(USER, "hi")
        await live.say(USER, "1")
        async with httpx.AsyncClient(base_url=live.url) as http:
            refused = await http.post(
                "/api/send",
                json={"to": USER, "text": "Your order is ready!"},
                headers={"Authorization": "Bearer api-secret"},
            )
        assert refused.status_code == 409
        assert refused.json()["error"] == "opted_out"

        await live.say(USER, "START")
        await live.say(USER, "hi")
        messages = await live.replies(4)
        # The replies leave in order: had "hi" or "1" been answered while opted
        # out, that answer would stand before START's confirmation.
        texts = [m.received.get("text") or "" for m in messages]
        assert texts[2] == STARTED
        assert "1) Margherita" in texts[3]
