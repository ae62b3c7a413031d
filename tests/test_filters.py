"""Filters: the built-ins, the algebra (&, |, ~) and custom predicates, sync and async."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from botkit import (
    Bot,
    Choices,
    Context,
    DefinitionError,
    Filter,
    Keywords,
    MediaMessage,
    MediaType,
    Message,
    Mime,
    Predicate,
    Regex,
    Text,
)
from botkit.testing import BotTester


async def takes(flt: object, text: str) -> bool:
    """Whether a text handler registered with ``flt`` takes ``text``."""
    bot = Bot("filter-probe")

    @bot.text(flt)
    async def handler(ctx: Context) -> None:
        await ctx.reply("taken")

    async with BotTester(bot) as chat:
        return (await chat.send_text(text)).texts == ["taken"]


# -- built-ins -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "taken"),
    [("yes", True), ("Yes", True), ("  YES ", True), ("y", True), ("yes please", False)],
)
async def test_text_is_case_and_space_insensitive_by_default(text: str, taken: bool) -> None:
    assert await takes(Text("yes", "y"), text) is taken


async def test_text_can_be_exact() -> None:
    exact = Text("Yes", ignore_case=False, ignore_space=False)
    assert await takes(exact, "Yes")
    assert not await takes(exact, "yes")
    assert not await takes(exact, " Yes")


async def test_text_collapses_inner_spaces_when_ignoring_space() -> None:
    assert await takes(Text("new order"), "new    order")
    assert not await takes(Text("new order", ignore_space=False), "new    order")


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("show me the MENU please", True),
        ("menu", True),
        ("menus", False),
        ("the price   list now", True),
        ("price", False),
    ],
)
async def test_keywords_match_whole_words(text: str, taken: bool) -> None:
    assert await takes(Keywords("menu", "price list"), text) is taken


async def test_a_string_is_exact_text_and_a_compiled_pattern_is_a_regex() -> None:
    assert await takes("hello", "HELLO")
    assert not await takes("hello", "hello there")
    assert await takes(re.compile(r"\d{3}"), "code 123")
    assert not await takes(Regex(r"^\d+$"), "12a")
    assert await takes(Regex(r"^hi$", re.IGNORECASE), "HI")


async def test_regex_is_case_sensitive_unless_told_otherwise() -> None:
    assert not await takes(Regex(r"^order \d+$"), "Order 7")
    assert await takes(Regex(r"^order \d+$", ignore_case=True), "Order 7")
    assert await takes(Regex(re.compile(r"^order \d+$"), ignore_case=True), "ORDER 7")
    assert repr(Regex("x", ignore_case=True)) == "Regex('x', ignore_case=True)"


async def test_several_strings_in_a_decorator_mean_any_of_them() -> None:
    bot = Bot("any-of")

    @bot.text("hi", "hello")
    async def greet(ctx: Context) -> None:
        await ctx.reply("greeting")

    @bot.text("yes", "y", Predicate(lambda m: m.text.isupper()))
    async def shouted_yes(ctx: Context) -> None:
        await ctx.reply("shouted yes")

    @bot.text()
    async def other(ctx: Context) -> None:
        await ctx.reply("other")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi")).texts == ["greeting"]
        assert (await chat.send_text("Hello")).texts == ["greeting"]
        assert (await chat.send_text("hi hello")).texts == ["other"]
        # The strings are one Text filter; a filter object beside them must pass too.
        assert (await chat.send_text("YES")).texts == ["shouted yes"]
        assert (await chat.send_text("Y")).texts == ["shouted yes"]
        assert (await chat.send_text("yes")).texts == ["other"]
        assert (await chat.send_text("NO")).texts == ["other"]


def test_choices_render_a_numbered_menu() -> None:
    pizzas = Choices("Margherita", "Pepperoni", "Veggie")
    assert pizzas.menu == "1) Margherita\n2) Pepperoni\n3) Veggie"
    assert f"Pick one:\n{pizzas}" == "Pick one:\n" + pizzas.menu
    assert list(pizzas) == ["Margherita", "Pepperoni", "Veggie"] and len(pizzas) == 3


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("1", "Margherita"),
        (" 2) ", "Pepperoni"),
        ("3.", "Veggie"),
        ("#2", "Pepperoni"),
        ("pepperoni", "Pepperoni"),
        ("  VEGGIE ", "Veggie"),
        ("0", None),
        ("4", None),
        ("veg", None),
        ("2 please", None),
        ("", None),
    ],
)
async def test_choices_take_a_number_or_a_name_and_hand_the_item_over(
    answer: str, chosen: str | None
) -> None:
    bot = Bot("choices")
    pizzas = Choices("Margherita", "Pepperoni", "Veggie")

    @bot.text(pizzas)
    async def picked(ctx: Context, choice: str) -> None:
        await ctx.reply(f"picked {choice}")

    @bot.text()
    async def other(ctx: Context) -> None:
        await ctx.reply("not on the menu")

    async with BotTester(bot) as chat:
        expected = f"picked {chosen}" if chosen else "not on the menu"
        assert (await chat.send_text(answer)).texts == [expected]


async def test_choices_name_the_handler_argument_and_multi_word_items_ignore_spacing() -> None:
    bot = Bot("named-choices")
    sizes = Choices("Small box", "Family box", name="box")

    @bot.text(sizes)
    async def picked(ctx: Context, box: str) -> None:
        await ctx.reply(box)

    async with BotTester(bot) as chat:
        assert (await chat.send_text("family   BOX")).texts == ["Family box"]
        assert (await chat.send_text("1")).texts == ["Small box"]

    # Items that are numbers themselves: the name wins, then the position.
    amounts = Choices("5", "10", "20")
    assert [amounts.pick(a) for a in ("10", "2", "3)", "5", "4")] == ["10", "10", "20", "5", None]

    with pytest.raises(DefinitionError, match="takes 'choice'"):

        @bot.text(sizes)
        async def wrong_name(ctx: Context, choice: str) -> None: ...


@pytest.mark.parametrize(
    "make",
    [
        lambda: Choices(),
        lambda: Choices("a", ""),
        lambda: Choices("Veggie", " veggie"),
        lambda: Choices("a", name="not a name"),
    ],
)
def test_choices_reject_what_cannot_be_a_menu(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        make()


async def test_media_kind_and_mime_pattern_filters() -> None:
    bot = Bot("media-filters")

    @bot.media(MediaType("image", "sticker") & ~Mime("image/png"))
    async def picture(ctx: Context) -> None:
        await ctx.reply("picture")

    @bot.media(Mime("application/pdf", "application/vnd.*"))
    async def document(ctx: Context) -> None:
        await ctx.reply("document")

    @bot.media(MediaType("voice"))
    async def voice(ctx: Context) -> None:
        await ctx.reply("voice")

    async with BotTester(bot) as chat:
        assert (await chat.send_media("https://x/a.jpg", "image/jpeg")).texts == ["picture"]
        assert (await chat.send_media("https://x/s.webp", "image/webp")).texts == ["picture"]
        assert await chat.send_media("https://x/a.png", "image/png") == []
        assert (await chat.send_media("https://x/a.pdf", "Application/PDF")).texts == ["document"]
        assert (await chat.send_media("https://x/a.xls", "application/vnd.ms-excel")).texts == [
            "document"
        ]
        assert (await chat.send_media("https://x/v.ogg", "audio/ogg; codecs=opus")).texts == [
            "voice"
        ]
        assert await chat.send_media("https://x/a.mp3", "audio/mpeg") == []


async def test_text_filters_read_a_media_caption() -> None:
    bot = Bot("caption")

    @bot.media(Keywords("invoice"))
    async def invoice(ctx: Context) -> None:
        await ctx.reply(f"invoice: {ctx.text}")

    async with BotTester(bot) as chat:
        replies = await chat.send_media("https://x/a.pdf", "application/pdf", caption="Invoice 7")
        assert replies.texts == ["invoice: Invoice 7"]
        assert await chat.send_media("https://x/a.pdf", "application/pdf") == []


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Text(), TypeError),
        (lambda: Text(1), TypeError),
        (lambda: Keywords(" "), TypeError),
        (lambda: Regex(1), TypeError),
        (lambda: MediaType("gif"), ValueError),
        (lambda: Mime(), TypeError),
        (lambda: Predicate(1), TypeError),
        (lambda: Predicate(lambda: True), TypeError),
    ],
)
def test_built_in_filters_reject_wrong_arguments(
    make: Callable[[], Filter], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make()


def test_an_unknown_media_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="image, video, audio, voice, document, sticker"):
        MediaType("gif")


# -- algebra -------------------------------------------------------------------


def const(value: bool) -> Predicate:
    return Predicate(lambda message: value)


def aconst(value: bool) -> Predicate:
    async def predicate(message: Message) -> bool:
        await asyncio.sleep(0)
        return value

    return Predicate(predicate)


@pytest.mark.parametrize(("a", "b"), list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("make", [const, aconst], ids=["sync", "async"])
async def test_and_or_not_follow_boolean_logic(
    a: bool, b: bool, make: Callable[[bool], Predicate]
) -> None:
    assert await takes(make(a) & make(b), "x") is (a and b)
    assert await takes(make(a) | make(b), "x") is (a or b)
    assert await takes(~make(a), "x") is (not a)
    assert await takes(~(make(a) & make(b)) | ~make(b), "x") is (not (a and b) or not b)


async def test_plain_values_combine_with_filters_on_either_side() -> None:
    assert await takes("hi" | Text("hello"), "hello")
    assert await takes(Text("hello") | "hi", "hi")
    assert not await takes(Keywords("hi") & (lambda m: len(m.text) > 20), "hi there")


async def test_values_of_combined_regexes_all_reach_the_handler() -> None:
    bot = Bot("merge")
    got: list[dict[str, Any]] = []

    @bot.text(Regex(r"(?P<qty>\d+) x") & Regex(r"x (?P<item>\w+)"))
    async def both(ctx: Context, qty: str, item: str) -> None:
        got.append({"qty": qty, "item": item})

    @bot.text(Regex(r"^buy (?P<item>\w+)$") | Regex(r"^(?P<item>\w+) please$"))
    async def either(ctx: Context, item: str) -> None:
        got.append({"item": item})

    async with BotTester(bot) as chat:
        await chat.send_text("3 x pizza")
        await chat.send_text("buy cola")
        await chat.send_text("juice please")
    assert got == [{"qty": "3", "item": "pizza"}, {"item": "cola"}, {"item": "juice"}]


async def test_a_failed_regex_in_a_negation_lets_the_handler_run_without_values() -> None:
    bot = Bot("negated")
    got: list[object] = []

    @bot.text(~Regex(r"\d"))
    async def no_digits(ctx: Context) -> None:
        got.append(ctx.match)

    async with BotTester(bot) as chat:
        await chat.send_text("no digits here")
        await chat.send_text("4 digits")
    assert got == [None]


# -- custom predicates -------------------------------------------------------------


async def test_sync_predicates_run_inline_in_the_turn_not_in_a_thread() -> None:
    bot = Bot("inline")
    where: list[tuple[int, asyncio.Task[Any] | None]] = []
    handled_in: list[asyncio.Task[Any] | None] = []

    def short(message: Message) -> bool:
        # asyncio.current_task() raises outside the event loop's thread.
        where.append((threading.get_ident(), asyncio.current_task()))
        return len(getattr(message, "text", "")) < 10

    @bot.text(Predicate(short))
    async def handler(ctx: Context) -> None:
        handled_in.append(asyncio.current_task())
        await ctx.reply("short")

    async with BotTester(bot) as chat:
        before = threading.active_count()
        assert (await chat.send_text("hi")).texts == ["short"]
        assert await chat.send_text("a much longer message") == []
        assert threading.active_count() == before

    assert [ident for ident, _ in where] == [threading.get_ident()] * 2
    assert where[0][1] is handled_in[0]  # the very task that runs the turn


async def test_async_predicates_are_awaited_and_may_use_the_context() -> None:
    bot = Bot("async-predicate")
    vips = {"79990000007"}

    async def is_vip(message: Message, ctx: Context) -> bool:
        await asyncio.sleep(0)
        return ctx.user in vips and message.kind.value == "text"

    @bot.text(Predicate(is_vip))
    async def vip(ctx: Context) -> None:
        await ctx.reply("welcome back, VIP")

    @bot.text()
    async def regular(ctx: Context) -> None:
        await ctx.reply("hello")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi", user="79990000007")).texts == ["welcome back, VIP"]
        assert (await chat.send_text("hi", user="79990000008")).texts == ["hello"]


async def test_a_predicate_can_hand_values_to_the_handler() -> None:
    bot = Bot("predicate-values")

    def parse_amount(message: Message) -> dict[str, int] | bool:
        text = getattr(message, "text", "")
        return {"amount": int(text)} if text.isdigit() else False

    @bot.text(parse_amount)
    async def amount(ctx: Context, amount: int) -> None:
        await ctx.reply(f"{amount * 2}")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("21")).texts == ["42"]
        assert await chat.send_text("abc") == []


async def test_callable_objects_with_async_call_are_awaited() -> None:
    class HasAttachment:
        async def __call__(self, message: Message) -> bool:
            return isinstance(message, MediaMessage)

    bot = Bot("callable")

    @bot.message(Predicate(HasAttachment()))
    async def attached(ctx: Context) -> None:
        await ctx.reply("attachment")

    async with BotTester(bot) as chat:
        assert (await chat.send_media("https://x/a.jpg", "image/jpeg")).texts == ["attachment"]
        assert await chat.send_text("no attachment") == []


def test_a_predicate_that_takes_no_message_fails_where_it_is_registered() -> None:
    bot = Bot("no-args")
    with pytest.raises(DefinitionError, match="takes no arguments") as caught:

        @bot.text(lambda: True)  # mark: no-args
        async def handler(ctx: Context) -> None: ...

    line = next(
        n
        for n, text in enumerate(Path(__file__).read_text().splitlines(), start=1)
        if text.rstrip().endswith("# mark: no-args")
    )
    assert f"{Path(__file__).name}:{line}" in str(caught.value)
