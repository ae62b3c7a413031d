"""The pizza bot's contract, transcript by transcript.

Each behaviour runs through the test kit (fast, with a clock we move) and,
for the main transcripts, end to end: the user's messages enter through the
real webhook from the provider emulator, and the replies are read where the
provider received them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from botkit import ManualClock, OptedOut, Template
from botkit.testing import BotTester, LiveBot
from bots.pizza import CONNECTING, bot, notify_order_ready

USER = "79031234567"
MENU_LINES = ("1) Margherita", "2) Pepperoni", "3) Veggie")


def shows_menu(text: str) -> bool:
    return all(line in text for line in MENU_LINES)


@pytest.fixture(autouse=True)
def _no_extra_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BOTKIT_PLUGINS", raising=False)
    yield


async def order_until_confirm(chat: BotTester, pizza: str = "2", size: str = "L") -> str:
    """Menu, pizza, size, typed address; return the summary."""
    await chat.send_text("hi")
    await chat.send_text(pizza)
    await chat.send_text(size)
    return (await chat.send_text("12 Baker Street")).text


# -- through the test kit -------------------------------------------------------


async def test_any_text_without_an_order_shows_the_menu() -> None:
    async with BotTester(bot) as chat:
        for n, text in enumerate(("hi", "I am hungry", "?")):
            user = f"7903000000{n}"
            replies = await chat.send_text(text, user=user)
            assert shows_menu(replies.text), replies.text
            assert await chat.state(user) == "order:menu"


async def test_an_answer_not_on_the_menu_shows_the_menu_again() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        for wrong in ("7", "sushi", "0"):
            replies = await chat.send_text(wrong)
            assert shows_menu(replies.text)
            assert await chat.state() == "order:menu"


@pytest.mark.parametrize("choice", ["2", "2)", "pepperoni", " PEPPERONI "])
async def test_a_valid_choice_asks_for_the_size(choice: str) -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        replies = await chat.send_text(choice)
        assert "size" in replies.text.lower()
        assert all(s in replies.text for s in ("S", "M", "L"))
        assert await chat.state() == "order:size"


async def test_a_wrong_size_asks_again_and_a_size_asks_for_the_address() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        assert "size" in (await chat.send_text("XXL")).text.lower()
        assert await chat.state() == "order:size"
        assert "address" in (await chat.send_text("m")).text
        assert await chat.state() == "order:address"


async def test_the_summary_names_pizza_size_and_address_and_asks_yes_or_no() -> None:
    async with BotTester(bot) as chat:
        summary = await order_until_confirm(chat, "3", "S")
        assert "Veggie" in summary and "S" in summary and "12 Baker Street" in summary
        assert '"yes"' in summary and '"no"' in summary
        assert await chat.state() == "order:confirm"


async def test_a_shared_location_gives_its_address() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        await chat.send_text("L")
        replies = await chat.send_location(55.7558, 37.6173, address="Red Square 1, Moscow")
        assert "Red Square 1, Moscow" in replies.text and "Margherita" in replies.text


async def test_a_location_without_an_address_gives_its_coordinates() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        await chat.send_text("L")
        replies = await chat.send_location(55.7558, 37.6173)
        assert "55.7558" in replies.text and "37.6173" in replies.text
        assert await chat.state() == "order:confirm"


async def test_yes_confirms_with_an_order_id_and_ends_the_flow() -> None:
    async with BotTester(bot) as chat:
        await order_until_confirm(chat)
        replies = await chat.send_text("yes")
        assert re.match(r"Order #\d+ confirmed", replies.text), replies.text
        assert await chat.state() is None
        # A new message starts a new order.
        assert shows_menu((await chat.send_text("L")).text)


async def test_no_goes_back_to_the_menu() -> None:
    async with BotTester(bot) as chat:
        await order_until_confirm(chat)
        replies = await chat.send_text("no")
        assert shows_menu(replies.text)
        assert await chat.state() == "order:menu"
        assert "size" in (await chat.send_text("1")).text.lower()


async def test_anything_but_yes_or_no_asks_again() -> None:
    async with BotTester(bot) as chat:
        await order_until_confirm(chat)
        replies = await chat.send_text("maybe")
        assert '"yes"' in replies.text and "Pepperoni" in replies.text
        assert await chat.state() == "order:confirm"


@pytest.mark.parametrize("steps", [["hi"], ["hi", "1"], ["hi", "1", "M"], ["hi", "1", "M", "x st"]])
async def test_cancel_at_any_step_ends_the_flow(steps: list[str]) -> None:
    async with BotTester(bot) as chat:
        for text in steps:
            await chat.send_text(text)
        replies = await chat.send_text("Cancel")
        assert "cancel" in replies.text.lower()
        assert await chat.state() is None
        # A later "L" is not taken as a size: it starts a new order.
        assert shows_menu((await chat.send_text("L")).text)
        assert await chat.state() == "order:menu"


async def test_media_and_contacts_get_an_explanation_and_the_question_again() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("2")
        image = await chat.send_media("https://example.com/pizza.jpg", "image/jpeg")
        assert len(image) == 1 and "size" in image.text.lower()
        assert "picture" in image.text.lower()
        contact = await chat.send_contacts(("Ann", "79035550000"))
        assert len(contact) == 1 and "contact" in contact.text.lower()
        assert "size" in contact.text.lower()
        assert await chat.state() == "order:size"
        await chat.send_text("L")
        voice = await chat.send_media("https://example.com/v.ogg", "audio/ogg")
        assert "address" in voice.text
        assert await chat.state() == "order:address"


async def test_thirty_minutes_of_silence_ends_the_flow() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        chat.advance(minutes=29)
        assert "address" in (await chat.send_text("L")).text  # still in time
        chat.advance(minutes=30, seconds=1)
        replies = await chat.send_text("10 Downing Street")
        assert "30 minutes" in replies.texts[0]
        assert shows_menu(replies.texts[-1])
        assert await chat.state() == "order:menu"
        assert (await chat.data())["order"] == {}, "the unfinished order was dropped"


async def test_order_ready_is_text_inside_the_window_and_the_template_outside() -> None:
    async with BotTester(bot) as chat:
        await order_until_confirm(chat)
        confirmation = (await chat.send_text("yes")).text
        order_id = re.search(r"#(\d+)", confirmation)[1]  # type: ignore[index]

        await notify_order_ready(chat.user, order_id)
        [inside] = await chat.sent()
        assert inside.mode.value == "text" and order_id in (inside.text or "")
        assert inside.fallback == Template("order_ready", [order_id])

        chat.advance(hours=25)
        await notify_order_ready(chat.user, order_id)
        [outside] = await chat.sent()
        assert outside.mode.value == "template"
        assert outside.template == Template("order_ready", [order_id])


async def test_stop_silences_the_pizza_bot_until_start() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        assert len(await chat.send_text("STOP")) == 1
        assert await chat.state() is None
        for text in ("hi", "1", "L", "cancel"):
            assert (await chat.send_text(text)).texts == []
        with pytest.raises(OptedOut):
            await notify_order_ready(chat.user, "123456")
        assert (await chat.send_text("start")).texts[0].startswith("Welcome back")
        assert shows_menu((await chat.send_text("hi")).text)


async def test_agent_or_human_hands_off_in_any_state_and_release_brings_the_bot_back() -> None:
    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        for word in ("agent", "Human"):
            user = chat.user if word == "agent" else "79030000099"
            replies = await chat.send_text(word, user=user)
            assert replies.texts == [CONNECTING]
            assert (await chat.conversation(user)).handoff is not None
        for text in ("L", "cancel", "hi"):
            assert (await chat.send_text(text)).texts == []  # the bot does not answer
        assert await chat.state() == "order:size"
        released = await chat.runtime.release(chat.user, "alice")
        assert [m.text for m in released.replies] == [
            "You are back with the pizza bot.\n\nMargherita, good choice! Which size: S, M or L?"
        ]
        assert (await chat.send_text("L")).texts == [
            "What is the delivery address? Type it, or share a location."
        ]


# -- end to end: webhook in, provider emulator out -----------------------------


class Chat:
    """One user talking to the live bot; returns the texts each message got back."""

    def __init__(self, live: LiveBot, user: str = USER) -> None:
        self.live, self.user, self.seen = live, user, 0

    async def say(self, text: str | None = None, *, expect: int = 1, **content: object) -> str:
        await self.live.say(self.user, text, **content)
        self.seen += expect
        messages = await self.live.replies(self.seen)
        got = [m.received.get("text") or "" for m in messages[self.seen - expect :]]
        return "\n".join(got)


async def test_e2e_an_order_from_menu_to_confirmation() -> None:
    async with LiveBot(bot) as live:
        chat = Chat(live)
        assert shows_menu(await chat.say("hello"))
        assert shows_menu(await chat.say("pizza please"))  # not on the menu
        assert "size" in (await chat.say("2")).lower()
        assert "address" in await chat.say("L")
        summary = await chat.say(
            expect=1, geo_location={"latitude": 55.75, "longitude": 37.61, "address": "Tverskaya 1"}
        )
        assert "Pepperoni" in summary and "L" in summary and "Tverskaya 1" in summary
        assert shows_menu(await chat.say("no"))
        await chat.say("1")
        await chat.say("S")
        assert "Margherita" in await chat.say("5 Arbat")
        confirmed = await chat.say("yes")
        assert re.match(r"Order #\d+ confirmed", confirmed)
        assert shows_menu(await chat.say("L"))  # a new order, not a size


async def test_e2e_cancel_media_and_contacts() -> None:
    async with LiveBot(bot) as live:
        chat = Chat(live)
        await chat.say("hi")
        await chat.say("3")
        explained = await chat.say(
            content_url="https://example.com/a.jpg", content_type="image/jpeg"
        )
        assert "size" in explained.lower()
        explained = await chat.say(
            contacts=[{"contactName": [{"formattedName": "Ann"}], "phones": [{"phone": "7903"}]}]
        )
        assert "contact" in explained.lower() and "size" in explained.lower()
        assert "cancel" in (await chat.say("cancel")).lower()
        assert shows_menu(await chat.say("L"))


async def test_e2e_silence_ends_the_flow() -> None:
    async with LiveBot(bot) as live:
        chat = Chat(live)
        await chat.say("hi")
        await chat.say("1")
        live.clock.advance(minutes=31)
        replies = await chat.say("L", expect=2)
        assert "30 minutes" in replies and shows_menu(replies)


async def test_e2e_order_ready_after_the_window_closed_goes_as_the_template() -> None:
    clock = ManualClock()
    async with LiveBot(bot, clock=clock, api_token="api-secret") as live:
        chat = Chat(live)
        await chat.say("hi")
        clock.advance(hours=25)

        async with httpx.AsyncClient(base_url=live.url) as http:
            answer = await http.post(
                "/api/send",
                json={
                    "to": USER,
                    "text": "Your order #424242 is ready!",
                    "template": {"id": "order_ready", "params": ["424242"]},
                },
                headers={"Authorization": "Bearer api-secret"},
            )
        assert answer.status_code == 202 and answer.json()["mode"] == "template"
        await notify_order_ready(USER, "424243")
        messages = await live.replies(3)
        assert [m.received.get("templateId") for m in messages[1:]] == ["order_ready"] * 2
        assert [m.received["templateParams"] for m in messages[1:]] == [
            {"1": "424242"},
            {"1": "424243"},
        ]
        assert all("text" not in m.received for m in messages[1:])
