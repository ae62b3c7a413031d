"""The router: dispatch by kind, order and pass-through, nesting, middlewares, the index."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from botkit import (
    ANY,
    Bot,
    Context,
    DefinitionError,
    ErrorCode,
    EventKind,
    Flow,
    Predicate,
    Regex,
    Router,
    SkipHandler,
)
from botkit.testing import BotTester

THIS_FILE = Path(__file__).name

Next = Callable[[Context], Awaitable[Any]]


def _line_of(marker: str) -> int:
    """The line number in this file of the line ending with ``# <marker>``."""
    for number, line in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"no line marked {marker!r}")


def assert_points_here(error: DefinitionError, marker: str) -> None:
    assert f"{THIS_FILE}:{_line_of(marker)}" in str(error), str(error)


# -- routing by kind ------------------------------------------------------------


async def test_each_kind_goes_to_its_own_handler() -> None:
    bot = Bot("kinds")

    @bot.text()
    async def on_text(ctx: Context) -> None:
        await ctx.reply("text")

    @bot.media()
    async def on_media(ctx: Context) -> None:
        await ctx.reply("media")

    @bot.contacts()
    async def on_contacts(ctx: Context) -> None:
        await ctx.reply("contacts")

    @bot.location()
    async def on_location(ctx: Context) -> None:
        await ctx.reply("location")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi")).texts == ["text"]
        assert (await chat.send_media("https://x/a.jpg", "image/jpeg")).texts == ["media"]
        assert (await chat.send_contacts(("Bob", "7999"))).texts == ["contacts"]
        assert (await chat.send_location(1.0, 2.0)).texts == ["location"]


async def test_message_handler_takes_every_kind_but_not_statuses() -> None:
    bot = Bot("any-message")
    kinds: list[EventKind] = []

    @bot.message()
    async def any_message(ctx: Context) -> None:
        kinds.append(ctx.message.kind)
        await ctx.reply("seen")

    async with BotTester(bot) as chat:
        (reply,) = await chat.send_text("hi")
        await chat.send_media("https://x/a.ogg", "audio/ogg")
        await chat.send_contacts(("Bob", "7999"))
        await chat.send_location(1.0, 2.0)
        status_turn = await chat.send_status(reply, "read")

    assert kinds == [EventKind.TEXT, EventKind.MEDIA, EventKind.CONTACTS, EventKind.LOCATION]
    assert status_turn.outcome == "unhandled"


async def test_an_event_no_handler_takes_is_unhandled_and_answers_nothing() -> None:
    bot = Bot("unhandled")

    @bot.text("menu")
    async def menu(ctx: Context) -> None:
        await ctx.reply("menu")

    async with BotTester(bot) as chat:
        assert await chat.send_text("something else") == []
        assert chat.last is not None
        assert chat.last.outcome == "unhandled"
        assert await chat.send_location(1.0, 2.0) == []


# -- order, pass-through and fallback ------------------------------------------


async def test_first_match_wins_in_registration_order() -> None:
    bot = Bot("order")

    @bot.text(Predicate(lambda m: "a" in m.text))
    async def first(ctx: Context) -> None:
        await ctx.reply("first")

    @bot.text()
    async def second(ctx: Context) -> None:
        await ctx.reply("second")

    @bot.text("abc")
    async def never(ctx: Context) -> None:  # shadowed by `first`
        await ctx.reply("never")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("abc")).texts == ["first"]
        assert chat.last is not None and chat.last.handler is not None
        assert chat.last.handler.endswith("first")
        assert (await chat.send_text("xyz")).texts == ["second"]


async def test_skip_handler_passes_the_event_to_the_next_match() -> None:
    bot = Bot("skip")
    calls: list[str] = []

    @bot.text()
    async def picky(ctx: Context) -> None:
        calls.append("picky")
        if ctx.text != "mine":
            raise SkipHandler
        await ctx.reply("picky")

    @bot.text("nobody")
    async def filtered_out(ctx: Context) -> None:
        calls.append("filtered_out")

    @bot.text()
    async def general(ctx: Context) -> None:
        calls.append("general")
        await ctx.reply("general")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("mine")).texts == ["picky"]
        assert calls == ["picky"]
        calls.clear()
        assert (await chat.send_text("other")).texts == ["general"]
        assert calls == ["picky", "general"]


async def test_fallback_runs_only_when_no_other_handler_took_the_message() -> None:
    bot = Bot("fallback")

    @bot.fallback()
    async def fallback(ctx: Context) -> None:  # registered first, still runs last
        await ctx.reply(f"sorry, I do not understand {ctx.message.kind.value}")

    @bot.text("hi")
    async def hi(ctx: Context) -> None:
        await ctx.reply("hello")

    @bot.text("skip")
    async def skipper(ctx: Context) -> None:
        raise SkipHandler

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi")).texts == ["hello"]
        assert (await chat.send_text("what?")).texts == ["sorry, I do not understand text"]
        assert (await chat.send_text("skip")).texts == ["sorry, I do not understand text"]
        assert (await chat.send_location(1, 2)).texts == ["sorry, I do not understand location"]


async def test_a_handler_that_skips_after_the_last_candidate_leaves_the_turn_unhandled() -> None:
    bot = Bot("skip-all")

    @bot.text()
    async def skipper(ctx: Context) -> None:
        raise SkipHandler

    async with BotTester(bot) as chat:
        assert await chat.send_text("x") == []
        assert chat.last is not None and chat.last.outcome == "unhandled"


# -- regex groups --------------------------------------------------------------


async def test_regex_groups_reach_the_handler_as_match_and_keyword_arguments() -> None:
    bot = Bot("regex")
    got: list[tuple[Any, ...]] = []

    @bot.text(Regex(r"order (?P<number>\d+)(?: for (?P<who>\w+))?"))
    async def order(ctx: Context, number: str, who: str | None = "nobody") -> None:
        assert ctx.match is not None
        got.append((ctx.match.group(0), number, who))

    @bot.text(re.compile(r"^(\w+)@(\w+)$"))
    async def positional(ctx: Context) -> None:
        assert ctx.match is not None
        got.append(ctx.match.groups())

    @bot.text(Regex(r"^set (?P<key>\w+)=(?P<value>\w+)$"))
    async def everything(ctx: Context, **values: Any) -> None:
        got.append(tuple(sorted(k for k in values if k != "match")))
        got.append((values["key"], values["value"], isinstance(values["match"], re.Match)))

    async with BotTester(bot) as chat:
        await chat.send_text("order 42 for ann please")
        await chat.send_text("order 7")
        await chat.send_text("ann@home")
        await chat.send_text("set size=large")

    assert got == [
        ("order 42 for ann", "42", "ann"),
        ("order 7", "7", None),
        ("ann", "home"),
        ("key", "value"),
        ("size", "large", True),
    ]


async def test_match_is_none_when_no_regex_took_the_event() -> None:
    bot = Bot("no-match")
    matches: list[object] = []

    @bot.text()
    async def any_text(ctx: Context) -> None:
        matches.append(ctx.match)

    async with BotTester(bot) as chat:
        await chat.send_text("order 42")
    assert matches == [None]


# -- nested routers ------------------------------------------------------------


async def test_included_routers_keep_registration_order_depth_first() -> None:
    bot = Bot("nested")
    shop, cart = Router("shop"), Router("cart")

    @bot.text("early")
    async def early(ctx: Context) -> None:
        await ctx.reply("bot:early")

    @cart.text()
    async def cart_any(ctx: Context) -> None:
        await ctx.reply("cart:any")

    @shop.text("shop")
    async def shop_word(ctx: Context) -> None:
        await ctx.reply("shop:shop")

    shop.include_router(cart)

    @shop.text()
    async def shop_any(ctx: Context) -> None:  # after cart: cart's catch-all wins
        await ctx.reply("shop:any")

    bot.include_router(shop)

    @bot.text()
    async def late(ctx: Context) -> None:
        await ctx.reply("bot:late")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("early")).texts == ["bot:early"]
        assert (await chat.send_text("shop")).texts == ["shop:shop"]
        assert (await chat.send_text("other")).texts == ["cart:any"]


async def test_a_handler_added_after_start_takes_part_at_once() -> None:
    bot = Bot("late-registration")
    extra = Router("extra")
    bot.include_router(extra)

    async with BotTester(bot) as chat:
        assert await chat.send_text("ping") == []

        @extra.text("ping")
        async def pong(ctx: Context) -> None:
            await ctx.reply("pong")

        assert (await chat.send_text("ping")).texts == ["pong"]


def test_a_router_can_be_included_only_once_and_never_in_a_cycle() -> None:
    bot, a, b = Bot("tree"), Router("a"), Router("b")
    bot.include_router(a)
    a.include_router(b)
    with pytest.raises(DefinitionError, match="already included") as twice:
        bot.include_router(b)  # mark: included-twice
    assert_points_here(twice.value, "mark: included-twice")
    c = Router("c")
    c.include_router(bot)
    with pytest.raises(DefinitionError, match="cycle"):
        b.include_router(c)
    with pytest.raises(DefinitionError, match="takes a Router"):
        bot.include_router("a")  # type: ignore[arg-type]


# -- middlewares ---------------------------------------------------------------


async def test_root_middleware_wraps_the_turn_and_router_middleware_only_its_handlers() -> None:
    bot = Bot("mw")
    admin = Router("admin")
    log: list[str] = []

    @bot.middleware
    async def outer(ctx: Context, call_next: Next) -> Any:
        log.append("bot:before")
        result = await call_next(ctx)
        log.append(f"bot:after:{len(ctx.replies)}")
        return result

    @admin.middleware
    async def inner(ctx: Context, call_next: Next) -> Any:
        log.append("admin:before")
        result = await call_next(ctx)
        log.append("admin:after")
        return result

    @admin.text("stats")
    async def stats(ctx: Context) -> None:
        log.append("stats")
        await ctx.reply("42 users")

    bot.include_router(admin)

    @bot.text("hi")
    async def hi(ctx: Context) -> None:
        log.append("hi")
        await ctx.reply("hello")

    async with BotTester(bot) as chat:
        await chat.send_text("stats")
        assert log == ["bot:before", "admin:before", "stats", "admin:after", "bot:after:1"]
        log.clear()
        await chat.send_text("hi")
        assert log == ["bot:before", "hi", "bot:after:1"]
        log.clear()
        await chat.send_text("nobody handles this")
        assert log == ["bot:before", "bot:after:0"]


async def test_middlewares_run_in_registration_order_and_can_stop_the_turn() -> None:
    bot = Bot("mw-order")
    log: list[str] = []

    @bot.middleware
    async def first(ctx: Context, call_next: Next) -> Any:
        log.append("first")
        return await call_next(ctx)

    @bot.middleware
    async def gate(ctx: Context, call_next: Next) -> Any:
        log.append("gate")
        if ctx.text == "blocked":
            await ctx.reply("you are blocked")
            return None
        return await call_next(ctx)

    @bot.text()
    async def echo(ctx: Context) -> None:
        log.append("echo")
        await ctx.reply(ctx.message.text)  # type: ignore[attr-defined]

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hello")).texts == ["hello"]
        assert log == ["first", "gate", "echo"]
        log.clear()
        assert (await chat.send_text("blocked")).texts == ["you are blocked"]
        assert log == ["first", "gate"]


async def test_middleware_chains_are_built_once_not_per_event() -> None:
    bot = Bot("mw-once")
    inner = Router("inner")
    nexts: dict[str, list[Next]] = {"outer": [], "inner": []}

    @bot.middleware
    async def outer(ctx: Context, call_next: Next) -> Any:
        nexts["outer"].append(call_next)
        return await call_next(ctx)

    @inner.middleware
    async def wrap(ctx: Context, call_next: Next) -> Any:
        nexts["inner"].append(call_next)
        return await call_next(ctx)

    @inner.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply("ok")

    bot.include_router(inner)
    async with BotTester(bot) as chat:
        for i in range(20):
            assert (await chat.send_text(str(i))).texts == ["ok"]
    # Each middleware was handed the same next link every time: the chain was
    # built once, not per event (a chain built per event hands out new ones).
    for name, seen in nexts.items():
        assert len(seen) == 20, name
        assert all(link is seen[0] for link in seen), name


# -- status and error handlers on routers ---------------------------------------


async def test_status_handlers_filter_by_status_name_and_error_code() -> None:
    bot = Bot("status-routing")
    seen: list[str] = []

    @bot.text()
    async def answer(ctx: Context) -> None:
        await ctx.reply("ok")

    @bot.status("read", "delivered")
    async def good(ctx: Context) -> None:
        seen.append(f"good:{ctx.status.status}")

    @bot.status(ErrorCode(2305))
    async def not_on_whatsapp(ctx: Context) -> None:
        seen.append(f"2305:{ctx.status.user}")

    async with BotTester(bot, user="79990000001") as chat:
        (reply,) = await chat.send_text("hi")
        assert (await chat.send_status(reply, "delivered")).outcome == "handled"
        assert (await chat.send_status(reply, "READ")).outcome == "handled"
        assert (await chat.send_status(reply, "sent")).outcome == "unhandled"
        await chat.send_status(reply, "undelivered", error_code=2305)

    assert seen == ["good:delivered", "good:read", "2305:79990000001"]


# -- the index -------------------------------------------------------------------


async def test_handlers_bound_to_other_states_are_never_looked_at() -> None:
    bot = Bot("index")
    states = [f"s{i}" for i in range(100)]
    wizard = Flow("wizard", states=states)
    bot.include_router(wizard)
    checked: list[str] = []

    def make(state: str, n: int) -> None:
        @wizard.text(Predicate(lambda m: checked.append(state) or False), state=state)
        async def never(ctx: Context) -> None:
            raise AssertionError("filters say no")

    for n in range(1_000):
        make(states[n % 100], n)

    @wizard.text(state="s42")
    async def in_s42(ctx: Context) -> None:
        await ctx.reply("s42")

    @bot.text("go")
    async def go(ctx: Context) -> None:
        await ctx.flow.start(wizard, "s42")

    async with BotTester(bot) as chat:
        await chat.send_text("go")
        assert checked == []  # out of the flow: none of the 1,000 was even filtered
        assert (await chat.send_text("x")).texts == ["s42"]
        assert checked == ["s42"] * 10  # only the 10 handlers of s42 were tried

        index = chat.runtime.index
        assert len(index.candidates(EventKind.TEXT, "wizard:s7")) == 10 + 1  # + the bot's "go"
        assert len(index.candidates(EventKind.TEXT, None)) == 1
        assert index.candidates(EventKind.MEDIA, "wizard:s7") == ()


async def test_state_any_none_and_flow_state_on_a_plain_router() -> None:
    bot = Bot("states")
    quiz = Flow("quiz", states=["q1", "q2"], transitions=[("next", "q1", "q2")])
    bot.include_router(quiz)
    answers = Router("answers")

    @answers.text(state="quiz:q2")
    async def second(ctx: Context) -> None:
        await ctx.reply("answer to q2")

    @answers.text(state=None)
    async def outside(ctx: Context) -> None:
        if ctx.text == "start":
            await ctx.flow.start("quiz")
            await ctx.reply("q1?")
            return
        await ctx.reply("not in a quiz")

    @answers.text(state=ANY)
    async def anywhere(ctx: Context) -> None:
        await ctx.flow.next()
        await ctx.reply("moved on")

    bot.include_router(answers)

    async with BotTester(bot) as chat:
        assert (await chat.send_text("hello")).texts == ["not in a quiz"]
        assert (await chat.send_text("start")).texts == ["q1?"]
        assert (await chat.send_text("a")).texts == ["moved on"]
        assert await chat.state() == "quiz:q2"
        assert (await chat.send_text("b")).texts == ["answer to q2"]


# -- definition-time errors -----------------------------------------------------


def test_a_filter_of_the_wrong_type_fails_where_it_is_written() -> None:
    bot = Bot("bad-filter")
    with pytest.raises(DefinitionError, match="is not a filter") as caught:

        @bot.text(42)  # mark: bad-filter
        async def handler(ctx: Context) -> None: ...

    assert_points_here(caught.value, "mark: bad-filter")


def test_a_sync_handler_fails_where_it_is_written() -> None:
    bot = Bot("sync-handler")
    with pytest.raises(DefinitionError, match="must be an 'async def'") as caught:

        @bot.text()  # mark: sync-handler
        def handler(ctx: Context) -> None: ...

    assert_points_here(caught.value, "mark: sync-handler")


def test_a_handler_without_the_context_parameter_fails_where_it_is_written() -> None:
    bot = Bot("no-ctx")
    with pytest.raises(DefinitionError, match="must take the context") as caught:

        @bot.text()  # mark: no-ctx
        async def handler() -> None: ...

    assert_points_here(caught.value, "mark: no-ctx")


def test_a_handler_argument_no_filter_gives_fails_where_it_is_written() -> None:
    bot = Bot("missing-arg")
    with pytest.raises(DefinitionError, match=r"takes 'number'.*they give: match, num") as caught:

        @bot.text(Regex(r"order (?P<num>\d+)"))  # mark: missing-arg
        async def order(ctx: Context, number: str) -> None: ...

    assert_points_here(caught.value, "mark: missing-arg")

    with pytest.raises(DefinitionError, match=r"takes 'name'.*they give: none") as caught:

        @bot.text()  # mark: no-filter-arg
        async def named(ctx: Context, name: str) -> None: ...

    assert_points_here(caught.value, "mark: no-filter-arg")

    # Either side of | may pass: only what both give is sure to arrive.
    with pytest.raises(DefinitionError, match="takes 'size'"):

        @bot.text(Regex(r"(?P<item>\w+) (?P<size>[sml])") | Regex(r"(?P<item>\w+)"))
        async def partly(ctx: Context, item: str, size: str) -> None: ...


async def test_handler_arguments_with_defaults_or_from_custom_predicates_are_accepted() -> None:
    bot = Bot("ok-args")
    got: list[tuple[Any, ...]] = []

    @bot.text(Regex(r"(?P<item>\w+) (?P<size>[sml])") | Regex(r"(?P<item>\w+)"))
    async def partly(ctx: Context, item: str, size: str | None = None) -> None:
        got.append((item, size))

    @bot.message(
        Predicate(lambda m: {"custom": 1})
    )  # a predicate may give anything: checked at run time
    async def custom(ctx: Context, custom: int) -> None:
        got.append((custom,))

    async with BotTester(bot) as chat:
        await chat.send_text("pizza l")
        await chat.send_text("cola")
        await chat.send_location(1.0, 2.0)
    assert got == [("pizza", "l"), ("cola", None), (1,)]


def test_a_malformed_state_on_a_plain_router_fails_where_it_is_written() -> None:
    router = Router("r")
    with pytest.raises(DefinitionError, match="'flow:state'") as caught:

        @router.text(state="size")  # mark: bad-state
        async def handler(ctx: Context) -> None: ...

    assert_points_here(caught.value, "mark: bad-state")


def test_a_plain_router_bound_to_an_unknown_flow_state_fails_before_any_message() -> None:
    bot = Bot("unknown-flow")
    bot.include_router(Flow("order", states=["size", "address"]))

    @bot.text(state="order:colour")  # mark: unknown-flow-state
    async def colour(ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match="no state 'colour'") as caught:
        BotTester(bot)
    assert_points_here(caught.value, "mark: unknown-flow-state")

    other = Bot("unknown-flow-2")

    @other.text(state="missing:size")  # mark: unknown-flow
    async def size(ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match="flow 'missing'") as caught:
        BotTester(other)
    assert_points_here(caught.value, "mark: unknown-flow")


def test_error_and_middleware_registration_check_their_arguments() -> None:
    bot = Bot("bad-registrations")
    with pytest.raises(DefinitionError, match="exception classes") as caught:
        bot.error("oops")  # type: ignore[arg-type]  # mark: bad-error
    assert_points_here(caught.value, "mark: bad-error")

    def sync_mw(ctx: Context, call_next: Next) -> None: ...

    with pytest.raises(DefinitionError, match="async def") as caught:
        bot.middleware(sync_mw)  # type: ignore[arg-type]  # mark: sync-mw
    assert_points_here(caught.value, "mark: sync-mw")
