"""The runtime: turns as transactions, error handlers, serialisation, dedupe, hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from botkit import (
    Bot,
    BotNotRunning,
    Context,
    Flow,
    Outcome,
    Router,
    Runtime,
    StatusUpdate,
    StoreConfig,
    TextMessage,
    TurnOutcome,
)
from botkit.storage.base import TurnLease
from botkit.storage.memory import MemoryStore
from botkit.testing import BotTester

Next = Callable[[Context], Awaitable[Any]]


def order_bot() -> tuple[Bot, list[tuple[str, Any, Any]]]:
    """A bot whose "fail" handler changes everything and then raises."""
    bot = Bot("tx")
    flow = Flow("order", states=["size", "address"], transitions=[("sized", "size", "address")])
    bot.include_router(flow)
    errors: list[tuple[str, Any, Any]] = []

    @bot.text("start")
    async def start(ctx: Context) -> None:
        ctx.data["step"] = 1
        await ctx.flow.start(flow)

    @flow.text("fail", state="size")
    async def fail(ctx: Context) -> None:
        ctx.data["step"] = 2
        ctx.data["junk"] = True
        await ctx.flow.sized()
        await ctx.reply("this must never be sent")
        raise KeyError("boom")

    @bot.error(KeyError)
    async def on_key_error(ctx: Context, exc: BaseException) -> None:
        errors.append((ctx.state, dict(ctx.data), exc))
        ctx.data["errors"] = ctx.data.get("errors", 0) + 1
        await ctx.reply("Sorry, something went wrong.")

    return bot, errors


# -- the transaction rule ------------------------------------------------------------


async def test_a_handler_that_raises_changes_nothing_and_sends_nothing() -> None:
    bot, errors = order_bot()
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        replies = await chat.send_text("fail")

        assert replies.texts == ["Sorry, something went wrong."]  # only the error handler's
        assert await chat.state() == "order:size"
        assert await chat.data() == {"step": 1, "errors": 1}  # the error handler's change kept
        assert chat.last is not None
        assert (chat.last.outcome, chat.last.error_handled) == ("error", True)
        assert isinstance(chat.last.error, KeyError)
        assert chat.last.handler is not None and chat.last.handler.endswith("fail")
        assert await chat.store.outbox_size() == 0
        assert await chat.sent() == []  # nothing else went out

    # The error handler saw the turn as if the failed handler had never run.
    ((state, data, exc),) = errors
    assert state == "size"
    assert data == {"step": 1}
    assert isinstance(exc, KeyError)


async def test_a_send_to_another_user_leaves_only_when_the_turn_commits() -> None:
    bot = Bot("tx-send")
    bob = "79990000002"
    outbox_during_turn: list[int] = []
    tester: BotTester

    @bot.text("hi")
    async def greet(ctx: Context) -> None:
        await ctx.reply("hello")

    @bot.text()
    async def forward(ctx: Context) -> None:
        await ctx.bot.send(bob, f"Ann says: {ctx.text}")
        outbox_during_turn.append(await tester.store.outbox_size())
        if ctx.text == "fail":
            raise RuntimeError("after the send")
        await ctx.reply("forwarded")

    @bot.error()
    async def on_error(ctx: Context, exc: BaseException) -> None:
        await ctx.bot.send(bob, "Ann had a problem")

    tester = BotTester(bot, user="79990000001")
    async with tester as chat:
        await chat.send_text("hi", user=bob)  # opens Bob's window
        assert (await chat.send_text("hello")).texts == ["forwarded"]
        assert [m.text for m in await chat.sent()] == ["Ann says: hello"]
        assert await chat.send_text("fail") == []
        assert [m.text for m in await chat.sent()] == ["Ann had a problem"]
    assert outbox_during_turn == [0, 0]


async def test_an_error_nobody_handles_reaches_the_test_and_the_message_is_done() -> None:
    bot = Bot("unhandled-error")
    runs = 0

    @bot.text()
    async def broken(ctx: Context) -> None:
        nonlocal runs
        runs += 1
        ctx.data["x"] = 1
        await ctx.reply("lost")
        raise ZeroDivisionError

    async with BotTester(bot) as chat:
        with pytest.raises(ZeroDivisionError):
            await chat.send_text("hi")
        assert await chat.data() == {}
        chat.raise_errors = False
        message = TextMessage(id="poison", user=chat.user, text="again")
        assert await chat.send(message) == []
        assert chat.last is not None and chat.last.outcome == "error"
        assert not chat.last.error_handled
        assert isinstance(chat.last.error, ZeroDivisionError)
        # A poison message is not run again when the provider retries it.
        await chat.send(message)
        assert chat.last.outcome == "duplicate"
    assert runs == 2


async def test_error_handlers_are_chosen_by_type_in_registration_order() -> None:
    bot = Bot("error-types")
    api = Router("api")
    bot.include_router(api)

    @bot.text("value")
    async def value(ctx: Context) -> None:
        raise ValueError("bad value")

    @bot.text("lookup")
    async def lookup(ctx: Context) -> None:
        raise LookupError("missing")

    @bot.text("index")
    async def index(ctx: Context) -> None:
        raise IndexError("out of range")

    @bot.error(ValueError)
    async def on_value(ctx: Context, exc: BaseException) -> None:
        await ctx.reply(f"value: {exc}")

    @api.error(IndexError)
    async def on_index(ctx: Context, exc: BaseException) -> None:
        await ctx.reply(f"index: {exc}")

    @api.error()
    async def on_anything(ctx: Context, exc: BaseException) -> None:
        await ctx.reply(f"other: {type(exc).__name__}")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("value")).texts == ["value: bad value"]
        assert (await chat.send_text("index")).texts == ["index: out of range"]
        assert (await chat.send_text("lookup")).texts == ["other: LookupError"]


async def test_a_failing_error_handler_commits_nothing() -> None:
    bot = Bot("error-in-error")

    @bot.text()
    async def broken(ctx: Context) -> None:
        raise ValueError

    @bot.error()
    async def also_broken(ctx: Context, exc: BaseException) -> None:
        ctx.data["half"] = True
        await ctx.reply("half done")
        raise RuntimeError("error handler failed")

    async with BotTester(bot, raise_errors=False) as chat:
        assert await chat.send_text("x") == []
        assert await chat.data() == {}
        assert chat.last is not None
        assert (chat.last.outcome, chat.last.error_handled) == ("error", False)


async def test_an_error_in_a_middleware_goes_to_the_error_handlers() -> None:
    bot = Bot("mw-error")

    @bot.middleware
    async def auth(ctx: Context, call_next: Next) -> Any:
        if ctx.text == "intruder":
            raise PermissionError("not allowed")
        return await call_next(ctx)

    @bot.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply("ok")

    @bot.error(PermissionError)
    async def denied(ctx: Context, exc: BaseException) -> None:
        await ctx.reply(f"denied: {exc}")

    async with BotTester(bot) as chat:
        assert (await chat.send_text("friend")).texts == ["ok"]
        assert (await chat.send_text("intruder")).texts == ["denied: not allowed"]


# -- deduplication and serialisation ----------------------------------------------------


async def test_a_message_delivered_twice_runs_once() -> None:
    bot = Bot("dedupe")
    runs = 0

    @bot.text()
    async def count(ctx: Context) -> None:
        nonlocal runs
        runs += 1
        await ctx.reply("counted")

    async with BotTester(bot) as chat:
        message = TextMessage(id="in-1", user=chat.user, text="hi")
        assert (await chat.send(message)).texts == ["counted"]
        assert await chat.send(message) == []
        assert chat.last is not None and chat.last.outcome == "duplicate"
    assert runs == 1


async def test_fifty_concurrent_turns_of_one_user_are_serialised_and_none_is_lost() -> None:
    bot = Bot("serial")
    running = 0
    overlaps = 0

    @bot.text()
    async def increment(ctx: Context) -> None:
        nonlocal running, overlaps
        running += 1
        overlaps += running > 1
        value = ctx.data.get("counter", 0)
        for _ in range(3):  # give any other turn of this user the chance to interleave
            await asyncio.sleep(0)
        ctx.data["counter"] = value + 1
        ctx.data.setdefault("seen", []).append(ctx.text)
        await ctx.reply(str(value + 1))
        running -= 1

    store = MemoryStore(StoreConfig(lock_ttl=30.0, acquire_timeout=30.0))
    runtime = Runtime(bot, store)
    await runtime.start()
    try:
        messages = [TextMessage(id=f"m{i}", user="79990000001", text=str(i)) for i in range(50)]
        outcomes = await asyncio.gather(*(runtime.handle_message(m) for m in messages))
        conversation = await store.load("79990000001")
    finally:
        await runtime.stop()

    assert overlaps == 0
    assert [o.outcome for o in outcomes] == ["handled"] * 50
    assert conversation.data["counter"] == 50
    assert sorted(conversation.data["seen"], key=int) == [str(i) for i in range(50)]
    assert sorted(int(o.replies[0].text or "") for o in outcomes) == list(range(1, 51))
    assert store.locks_held == 0  # nothing per user is left behind


async def test_turns_of_different_users_run_concurrently() -> None:
    bot = Bot("parallel")
    both_inside = asyncio.Event()
    inside: set[str] = set()

    @bot.text()
    async def wait_for_the_other(ctx: Context) -> None:
        inside.add(ctx.user)
        if len(inside) == 2:
            both_inside.set()
        await asyncio.wait_for(both_inside.wait(), timeout=5)

    async with BotTester(bot) as chat:
        await asyncio.gather(chat.send_text("a", user="71"), chat.send_text("b", user="72"))
    assert inside == {"71", "72"}


# -- flow timeouts and statuses --------------------------------------------------------


async def test_a_status_callback_does_not_restart_the_flow_countdown() -> None:
    bot = Bot("status-activity")
    flow = Flow("f", states=["waiting"], timeout=60)
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)
        await ctx.reply("started")

    @bot.status()
    async def on_status(ctx: Context) -> None:
        pass

    @flow.text()
    async def in_flow(ctx: Context) -> None:
        await ctx.reply("still in the flow")

    @bot.text(state=None)
    async def outside(ctx: Context) -> None:
        await ctx.reply("flow over")

    async with BotTester(bot) as chat:
        (reply,) = await chat.send_text("start")
        chat.advance(50)
        await chat.send_status(reply, "read")
        assert await chat.state() == "f:waiting"
        chat.advance(20)
        assert (await chat.send_text("hello")).texts == ["flow over"]


# -- lifecycle ----------------------------------------------------------------------


async def test_startup_and_shutdown_hooks_run_for_the_bot_and_its_routers() -> None:
    bot = Bot("hooks")
    inner = Router("inner")
    bot.include_router(inner)
    log: list[str] = []

    @bot.on_startup
    async def bot_up() -> None:
        log.append("bot up")

    @inner.on_startup
    async def inner_up() -> None:
        log.append("inner up")

    @inner.on_shutdown
    async def inner_down() -> None:
        log.append("inner down")

    async with BotTester(bot):
        assert log == ["bot up", "inner up"]
        assert bot.runtime is not None
    assert log == ["bot up", "inner up", "inner down"]
    assert bot.runtime is None
    with pytest.raises(BotNotRunning, match="not running"):
        await bot.send("79990000001", "hello")


async def test_every_turn_is_reported_to_listeners() -> None:
    bot = Bot("listeners")

    @bot.text("hi")
    async def hi(ctx: Context) -> None:
        await ctx.reply("hello")

    async with BotTester(bot) as chat:
        outcomes: list[TurnOutcome] = []
        chat.runtime.on_turn.append(outcomes.append)
        await chat.send_text("hi")
        await chat.send_text("unknown")

    assert [(o.outcome, o.kind, o.user) for o in outcomes] == [
        ("handled", "text", chat.user),
        ("unhandled", "text", chat.user),
    ]
    assert [m.text for m in outcomes[0].replies] == ["hello"]
    assert all(o.duration >= 0 for o in outcomes)


async def test_a_routers_own_error_handler_wins_over_the_bots_catch_all() -> None:
    bot = Bot("errors")
    shop = Router("shop")

    @bot.error()
    async def catch_all(ctx: Context, exc: BaseException) -> None:
        await ctx.reply("the bot caught it")

    @shop.error(ValueError)
    async def shop_errors(ctx: Context, exc: BaseException) -> None:
        await ctx.reply(f"the shop caught {exc}")

    @shop.text("buy")
    async def buy(ctx: Context) -> None:
        raise ValueError("out of stock")

    @bot.text("hello")
    async def hello(ctx: Context) -> None:
        raise ValueError("not the shop's")

    bot.include_router(shop)
    async with BotTester(bot) as chat:
        assert (await chat.send_text("buy")).texts == ["the shop caught out of stock"]
        assert (await chat.send_text("hello")).texts == ["the bot caught it"]


class CountingStore(MemoryStore):
    """A memory store that lets a test wait for lock renewals."""

    def __init__(self, config: StoreConfig) -> None:
        super().__init__(config)
        self.renewals = 0
        self.renewed = asyncio.Event()

    async def renew(self, lease: TurnLease) -> bool:
        kept = await super().renew(lease)
        self.renewals += 1
        self.renewed.set()
        return kept


async def test_an_error_reported_from_outside_a_handler_runs_as_a_full_turn() -> None:
    # A rejected delivery goes to the error handlers through the same turn runner as a
    # message: the lock is renewed while the error handler runs, and the outcome is reported.
    bot = Bot("reported")
    store = CountingStore(StoreConfig(lock_ttl=0.3))
    outcomes: list[TurnOutcome] = []

    @bot.error(LookupError)
    async def on_lookup(ctx: Context, exc: BaseException) -> None:
        for _ in range(2):  # two renewals: the turn outlives its lock's first TTL
            store.renewed.clear()
            await asyncio.wait_for(store.renewed.wait(), timeout=10)
        ctx.data["rejected"] = str(exc)
        await ctx.reply("that did not go through")

    runtime = Runtime(bot, store)
    await runtime.start()
    try:
        # The user wrote (unhandled: no text handler): their window is open.
        await runtime.handle_message(TextMessage(id="in-1", user="79031234567", text="hi"))
        runtime.on_turn.append(outcomes.append)
        event = StatusUpdate(message_id="", status="rejected", user="79031234567")
        assert await runtime.report_error("79031234567", LookupError("no such user"), event)
    finally:
        await runtime.stop()
    assert store.renewals >= 2
    [outcome] = outcomes
    assert (outcome.outcome, outcome.kind, outcome.error_handled) == (Outcome.ERROR, "status", True)
    assert isinstance(outcome.error, LookupError)
    assert [m.text for m in outcome.replies] == ["that did not go through"]
    assert (await store.load("79031234567")).data == {"rejected": "no such user"}
