"""Flows: definition checks, transitions and callbacks, timeouts, and the shared machine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from transitions.core import Machine

from botkit import (
    Bot,
    Context,
    DefinitionError,
    Flow,
    FlowError,
    InvalidTrigger,
    NotInFlow,
    State,
)
from botkit.testing import BotTester

THIS_FILE = Path(__file__).name


def _line_of(marker: str) -> int:
    for number, line in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"no line marked {marker!r}")


def assert_points_here(error: DefinitionError, marker: str) -> None:
    assert f"{THIS_FILE}:{_line_of(marker)}" in str(error), str(error)


def pizza_bot(**flow_options: Any) -> tuple[Bot, Flow]:
    """A pizza order: menu -> size -> address -> done (final)."""
    bot = Bot("pizza")
    order = Flow(
        "order",
        states=["size", "address", "confirm", "done"],
        transitions=[
            ("sized", "size", "address"),
            ("addressed", "address", "confirm"),
            ("confirmed", "confirm", "done"),
            {"trigger": "back", "source": ["address", "confirm"], "dest": "size"},
        ],
        final=["done"],
        **flow_options,
    )
    bot.include_router(order)

    @bot.text("pizza", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(order)
        await ctx.reply("Which size?")

    @order.text("back")
    async def back(ctx: Context) -> None:
        await ctx.flow.back()
        await ctx.reply("Which size?")

    @order.text(state="size")
    async def size(ctx: Context) -> None:
        ctx.data["size"] = ctx.text
        await ctx.flow.trigger("sized")
        await ctx.reply("Address?")

    @order.text(state="address")
    async def address(ctx: Context) -> None:
        ctx.data["address"] = ctx.text
        await ctx.flow.addressed()
        await ctx.reply("Confirm?")

    @order.text(state="confirm")
    async def confirm(ctx: Context) -> None:
        await ctx.flow.confirmed()
        await ctx.reply(f"Ordered a {ctx.data['size']} pizza to {ctx.data['address']}")

    @bot.text()
    async def idle(ctx: Context) -> None:
        await ctx.reply("Say pizza")

    return bot, order


# -- moving through a flow ------------------------------------------------------------


async def test_a_user_walks_a_flow_to_its_final_state_which_ends_it() -> None:
    bot, _ = pizza_bot()
    async with BotTester(bot) as chat:
        assert (await chat.send_text("hello")).texts == ["Say pizza"]
        assert (await chat.send_text("pizza")).texts == ["Which size?"]
        assert await chat.state() == "order:size"
        assert (await chat.send_text("large")).texts == ["Address?"]
        assert await chat.state() == "order:address"
        await chat.send_text("back")
        assert await chat.state() == "order:size"
        await chat.send_text("small")
        await chat.send_text("1 Main St")
        assert await chat.state() == "order:confirm"
        assert (await chat.send_text("yes")).texts == ["Ordered a small pizza to 1 Main St"]
        assert await chat.state() is None
        assert (await chat.send_text("thanks")).texts == ["Say pizza"]


async def test_users_move_through_a_flow_independently() -> None:
    bot, _ = pizza_bot()
    async with BotTester(bot) as chat:
        await chat.send_text("pizza", user="71")
        await chat.send_text("pizza", user="72")
        await chat.send_text("large", user="72")
        assert await chat.state("71") == "order:size"
        assert await chat.state("72") == "order:address"


async def test_an_invalid_trigger_names_the_triggers_the_state_allows() -> None:
    bot = Bot("invalid")
    flow = Flow(
        "f",
        states=["a", "b", "c"],
        transitions=[("go", "a", "b"), ("skip", "a", "c"), ("complete", "b", "c")],
    )
    bot.include_router(flow)
    caught: list[InvalidTrigger] = []

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @flow.text()
    async def fire(ctx: Context) -> None:
        ctx.data["touched"] = True
        await ctx.reply("about to fail")
        await ctx.flow.trigger(ctx.text or "")

    @bot.error(InvalidTrigger)
    async def on_invalid(ctx: Context, exc: BaseException) -> None:
        assert isinstance(exc, InvalidTrigger)
        caught.append(exc)

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert await chat.send_text("complete") == []  # the handler's reply was dropped
        assert await chat.state() == "f:a"
        assert await chat.data() == {}
        await chat.send_text("nonsense")

    first, second = caught
    assert (first.flow, first.state, first.trigger, first.allowed) == (
        "f",
        "a",
        "complete",
        ("go", "skip"),
    )
    assert "cannot 'complete' from state 'a'" in str(first)
    assert "triggers allowed there: go, skip" in str(first)
    assert second.trigger == "nonsense"


async def test_conditions_sync_and_async_decide_whether_a_transition_happens() -> None:
    bot = Bot("conditions")

    def has_size(ctx: Context) -> bool:
        return bool(ctx.data.get("size"))

    async def in_stock(ctx: Context) -> bool:
        await asyncio.sleep(0)
        return ctx.data.get("size") != "XXL"

    def closed(ctx: Context) -> bool:
        return ctx.text == "closed"

    flow = Flow(
        "order",
        states=["size", "pay"],
        transitions=[
            {
                "trigger": "next",
                "source": "size",
                "dest": "pay",
                "conditions": [has_size, in_stock],
                "unless": closed,
            }
        ],
    )
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @flow.text(state="size")
    async def size(ctx: Context) -> None:
        if ctx.text not in ("none", "closed"):
            ctx.data["size"] = ctx.text
        moved = await ctx.flow.next()
        await ctx.reply("moved" if moved else "stay")

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.send_text("none")).texts == ["stay"]
        assert (await chat.send_text("XXL")).texts == ["stay"]
        assert (await chat.send_text("closed")).texts == ["stay"]
        assert await chat.state() == "order:size"
        assert (await chat.send_text("M")).texts == ["moved"]
        assert await chat.state() == "order:pay"


async def test_callbacks_run_in_order_and_receive_the_trigger_arguments() -> None:
    bot = Bot("callbacks")
    log: list[str] = []

    def record(name: str) -> Any:
        def callback(ctx: Context, **kwargs: Any) -> None:
            log.append(f"{name}{sorted(kwargs.items()) if kwargs else ''}")

        return callback

    async def async_after(ctx: Context) -> None:
        await asyncio.sleep(0)
        log.append("after(async)")
        await ctx.reply(f"now in {ctx.flow.state}")

    flow = Flow(
        "cb",
        states=[
            State("a", on_exit=record("exit a")),
            {"name": "b", "on_enter": [record("enter b")], "on_exit": record("exit b")},
        ],
        transitions=[
            (
                "go",
                "a",
                "b",
                {
                    "prepare": record("prepare"),
                    "conditions": lambda ctx: log.append("condition") or True,
                    "before": record("before"),
                    "after": [record("after"), async_after],
                },
            ),
            {"trigger": "stay", "source": "b", "dest": None, "after": record("internal")},
        ],
    )
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @flow.text("go", state="a")
    async def go(ctx: Context) -> None:
        await ctx.flow.go(size="L")

    @flow.text("stay", state="b")
    async def stay(ctx: Context) -> None:
        await ctx.flow.stay()

    @flow.text("leave")
    async def leave(ctx: Context) -> None:
        await ctx.flow.finish()

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.send_text("go")).texts == ["now in b"]
        assert log == [
            "prepare[('size', 'L')]",
            "condition",
            "before[('size', 'L')]",
            "exit a[('size', 'L')]",
            "enter b[('size', 'L')]",
            "after[('size', 'L')]",
            "after(async)",
        ]
        log.clear()
        await chat.send_text("stay")
        assert log == ["internal"]  # an internal transition neither exits nor enters
        assert await chat.state() == "cb:b"
        log.clear()
        await chat.send_text("leave")
        assert log == ["exit b"]
        assert await chat.state() is None


async def test_async_callbacks_run_one_after_another_in_declared_order() -> None:
    bot = Bot("sequential")

    async def slow_first(ctx: Context) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await ctx.reply("first")

    async def quick_second(ctx: Context) -> None:
        await ctx.reply("second")

    flow_with_callbacks = Flow(
        "g",
        states=["a", "b"],
        transitions=[
            {"trigger": "go", "source": "a", "dest": "b", "after": [slow_first, quick_second]}
        ],
    )
    bot.include_router(flow_with_callbacks)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow_with_callbacks)

    @flow_with_callbacks.text(state="a")
    async def go(ctx: Context) -> None:
        await ctx.flow.go()

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.send_text("go")).texts == ["first", "second"]


async def test_conditions_stop_at_the_first_that_says_no() -> None:
    bot = Bot("short-circuit")
    checked: list[str] = []

    def has_size(ctx: Context) -> bool:
        checked.append("has_size")
        return "size" in ctx.data

    async def in_stock(ctx: Context) -> bool:
        checked.append("in_stock")
        return ctx.data["size"] != "XXL"  # safe: only asked once a size is known

    flow = Flow(
        "order",
        states=["size", "pay"],
        transitions=[
            {"trigger": "pay", "source": "size", "dest": "pay", "conditions": [has_size, in_stock]}
        ],
    )
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @flow.text(state="size")
    async def size(ctx: Context) -> None:
        if ctx.text != "pay":
            ctx.data["size"] = ctx.text
        await ctx.reply("paying" if await ctx.flow.pay() else "no size yet")

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.send_text("pay")).texts == ["no size yet"]
        assert checked == ["has_size"]
        assert (await chat.send_text("M")).texts == ["paying"]
        assert checked == ["has_size", "has_size", "in_stock"]


async def test_starting_a_flow_enters_its_initial_state_or_the_one_given() -> None:
    bot = Bot("start")
    entered: list[str] = []
    flow = Flow(
        "f",
        states=[State("one", on_enter=lambda ctx: entered.append("one")), "two", "three"],
        initial="two",
    )
    bot.include_router(flow)

    @bot.text("default")
    async def default(ctx: Context) -> None:
        await ctx.flow.start("f")

    @bot.text("one")
    async def one(ctx: Context) -> None:
        await flow.start(ctx, "one")

    @bot.text("bad")
    async def bad(ctx: Context) -> None:
        await ctx.flow.start(flow, "nowhere")

    async with BotTester(bot) as chat:
        await chat.send_text("default")
        assert await chat.state() == "f:two"
        await chat.send_text("one")
        assert await chat.state() == "f:one"
        assert entered == ["one"]
        with pytest.raises(ValueError, match="no state 'nowhere'"):
            await chat.send_text("bad")


async def test_starting_a_flow_the_bot_does_not_include_fails_at_once() -> None:
    bot = Bot("forgotten")
    forgotten = Flow("survey", states=["q1", "q2"])  # never passed to include_router

    @bot.text("survey")
    async def by_object(ctx: Context) -> None:
        await ctx.flow.start(forgotten)

    @bot.text("quiz")
    async def by_name(ctx: Context) -> None:
        await ctx.flow.start("quiz")

    async with BotTester(bot) as chat:
        with pytest.raises(FlowError, match=r"bot.include_router\(survey\)"):
            await chat.send_text("survey")
        with pytest.raises(KeyError, match="no flow 'quiz'"):
            await chat.send_text("quiz")
        assert await chat.state() is None


async def test_a_user_is_in_at_most_one_flow_at_a_time() -> None:
    bot = Bot("two-flows")
    log: list[str] = []
    order = Flow("order", states=[State("size", on_exit=lambda ctx: log.append("left order"))])
    support = Flow("support", states=["topic"])
    bot.include_router(order)
    bot.include_router(support)

    @order.text("help")
    async def to_support(ctx: Context) -> None:
        await ctx.flow.start(support)
        await ctx.reply(f"support, was {ctx.flow.name!r} before? no: now {ctx.flow.name}")

    @order.text()
    async def in_order(ctx: Context) -> None:
        await ctx.reply("order")

    @support.text()
    async def in_support(ctx: Context) -> None:
        await ctx.reply("support")

    @bot.text(state=None)
    async def outside(ctx: Context) -> None:
        await ctx.flow.start(order)
        await ctx.reply("started order")

    async with BotTester(bot) as chat:
        await chat.send_text("hi")
        assert (await chat.send_text("x")).texts == ["order"]
        await chat.send_text("help")
        assert log == ["left order"]
        assert await chat.state() == "support:topic"
        assert (await chat.send_text("x")).texts == ["support"]


async def test_flow_controls_outside_any_flow() -> None:
    bot = Bot("no-flow")
    bot.include_router(Flow("f", states=["a", "b"], transitions=[("go", "a", "b")]))
    seen: list[Any] = []

    @bot.text("trigger")
    async def trigger(ctx: Context) -> None:
        await ctx.flow.trigger("go")

    @bot.text("method")
    async def method(ctx: Context) -> None:
        await ctx.flow.go()

    @bot.text("inspect")
    async def inspect_(ctx: Context) -> None:
        await ctx.flow.finish()  # a no-op
        seen.extend([ctx.flow.active, ctx.flow.name, ctx.flow.state, ctx.flow.allowed])

    async with BotTester(bot) as chat:
        with pytest.raises(NotInFlow, match="is in no flow"):
            await chat.send_text("trigger")
        with pytest.raises(AttributeError, match="no trigger 'go'"):
            await chat.send_text("method")
        await chat.send_text("inspect")
    assert seen == [False, None, None, ()]


async def test_flow_control_reports_the_state_and_the_allowed_triggers() -> None:
    bot = Bot("inspect")
    flow = Flow(
        "order",
        states=["size", "address", "confirm"],
        transitions=[("sized", "size", "address"), ("back", ["address", "confirm"], "size")],
        initial="address",
    )
    bot.include_router(flow)
    seen: list[Any] = []

    @bot.text(state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @flow.text(state="address")
    async def where(ctx: Context) -> None:
        seen.extend([ctx.flow.active, ctx.flow.name, ctx.flow.state, ctx.state])
        seen.append(ctx.flow.allowed)
        with pytest.raises(AttributeError, match=r"has \['sized', 'back'\]"):
            await ctx.flow.fly()

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        await chat.send_text("where")
    assert seen == [True, "order", "address", "address", ("back",)]


# -- inactivity timeout ----------------------------------------------------------------


async def test_after_the_inactivity_timeout_the_user_is_back_at_the_start() -> None:
    timed_out: list[str] = []

    async def on_timeout(ctx: Context) -> None:
        timed_out.append(ctx.user)
        await ctx.reply("Your order timed out.")

    bot, _ = pizza_bot(timeout=30 * 60, on_timeout=on_timeout)
    async with BotTester(bot) as chat:
        await chat.send_text("pizza")
        chat.advance(minutes=29)
        assert (await chat.send_text("large")).texts == ["Address?"]
        chat.advance(minutes=29)  # each message restarts the countdown
        assert await chat.state() == "order:address"
        chat.advance(minutes=2)
        assert (await chat.send_text("1 Main St")).texts == ["Your order timed out.", "Say pizza"]
        assert await chat.state() is None
        assert timed_out == [chat.user]
        assert (await chat.send_text("pizza")).texts == ["Which size?"]


async def test_a_timeout_given_as_timedelta_and_without_callback() -> None:
    from datetime import timedelta

    bot, _ = pizza_bot(timeout=timedelta(minutes=30))
    async with BotTester(bot) as chat:
        await chat.send_text("pizza")
        chat.advance(minutes=31)
        assert (await chat.send_text("large")).texts == ["Say pizza"]
        assert await chat.state() is None


async def test_a_flow_that_timed_out_stays_ended_when_the_next_handler_fails() -> None:
    bot = Bot("timeout-then-fail")
    flow = Flow("f", states=["a"], timeout=60)
    bot.include_router(flow)

    @bot.text("start")
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)

    @bot.text("boom")
    async def boom(ctx: Context) -> None:
        raise RuntimeError("boom")

    async with BotTester(bot, raise_errors=False) as chat:
        await chat.send_text("start")
        assert await chat.state() == "f:a"
        chat.advance(minutes=2)
        await chat.send_text("boom")
        assert chat.last is not None and chat.last.outcome == "error"
        assert await chat.state() is None


# -- definition-time errors ------------------------------------------------------------


def test_an_unknown_initial_state_fails_where_the_flow_is_defined() -> None:
    with pytest.raises(DefinitionError, match="initial state 'start'") as caught:
        Flow("f", states=["a", "b"], initial="start")  # mark: bad-initial
    assert_points_here(caught.value, "mark: bad-initial")


def test_an_unknown_final_state_fails_where_the_flow_is_defined() -> None:
    with pytest.raises(DefinitionError, match="final state 'end'") as caught:
        Flow("f", states=["a", "b"], final=["end"])  # mark: bad-final
    assert_points_here(caught.value, "mark: bad-final")


def test_a_transition_to_an_unknown_state_fails_where_the_flow_is_defined() -> None:
    with pytest.raises(DefinitionError, match="transition 'go': dest state 'c'") as caught:
        Flow("f", states=["a", "b"], transitions=[("go", "a", "c")])  # mark: bad-dest
    assert_points_here(caught.value, "mark: bad-dest")


def test_a_trigger_from_a_state_that_does_not_exist_fails_where_it_is_defined() -> None:
    with pytest.raises(DefinitionError, match="transition 'go': source state 'x'") as caught:
        Flow(  # mark: bad-source
            "f",
            states=["a", "b"],
            transitions=[{"trigger": "go", "source": ["a", "x"], "dest": "b"}],
        )
    assert_points_here(caught.value, "mark: bad-source")


def test_a_handler_bound_to_an_unknown_state_fails_where_it_is_written() -> None:
    flow = Flow("f", states=["a", "b"])
    with pytest.raises(DefinitionError, match="handler state 'c'") as caught:

        @flow.text(state="c")  # mark: bad-handler-state
        async def handler(ctx: Context) -> None: ...

    assert_points_here(caught.value, "mark: bad-handler-state")
    with pytest.raises(DefinitionError, match="state=None"):

        @flow.text(state=None)
        async def outside(ctx: Context) -> None: ...


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"states": []}, "at least one state"),
        ({"states": ["a", "a"]}, "lists a state twice"),
        ({"states": ["a:b"]}, "without ':'"),
        ({"states": [1]}, "a state is a name"),
        ({"states": [{"name": "a", "on_entry": print}]}, "unknown keys"),
        ({"states": ["a"], "transitions": [("go", "a")]}, "a transition is"),
        ({"states": ["a"], "transitions": [("go-on", "a", "a")]}, "must be a name"),
        ({"states": ["a"], "transitions": [("start", "a", "a")]}, "clashes"),
        ({"states": ["a"], "transitions": [{"trigger": "go", "source": "a"}]}, "needs"),
        ({"states": ["a"], "transitions": [("go", "a", "a", {"when": 1})]}, "unknown keys"),
        ({"states": ["a"], "transitions": [("go", "a", "a", {"after": 1})]}, "function"),
        ({"states": ["a"], "timeout": 0}, "timeout must be positive"),
        ({"states": ["a"], "on_timeout": "reset"}, "on_timeout"),
    ],
)
def test_malformed_flows_fail_at_definition(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as caught:
        Flow("f", **kwargs)
    assert THIS_FILE in str(caught.value)


def test_two_flows_with_one_name_in_one_bot_are_refused() -> None:
    bot = Bot("dupes")
    bot.include_router(Flow("order", states=["a"]))
    bot.include_router(Flow("order", states=["b"]))
    with pytest.raises(ValueError, match="two flows are named 'order'"):
        BotTester(bot)


# -- one machine per flow ----------------------------------------------------------------


async def test_turns_build_no_machine_and_leave_nothing_on_the_shared_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot, order = pizza_bot()
    built = 0
    real_init = Machine.__init__

    def counting_init(self: Machine, *args: Any, **kwargs: Any) -> None:
        nonlocal built  # every kind of Machine, AsyncMachine included, passes here
        built += 1
        real_init(self, *args, **kwargs)

    async with BotTester(bot) as chat:
        monkeypatch.setattr(Machine, "__init__", counting_init)
        for i in range(25):
            user = f"7000{i}"
            for text in ("pizza", "large", "back", "small", "1 Main St", "yes"):
                await chat.send_text(text, user=user)
            assert await chat.state(user) is None
        monkeypatch.undo()

    assert built == 0
    assert order.held_between_turns == 0


async def test_concurrent_users_trigger_the_shared_machine_without_interference() -> None:
    bot, order = pizza_bot()
    users = [f"7100{i}" for i in range(30)]
    async with BotTester(bot) as chat:
        await asyncio.gather(*(chat.send_text("pizza", user=u) for u in users))
        await asyncio.gather(*(chat.send_text(f"size-{u}", user=u) for u in users))
        for user in users:
            assert await chat.state(user) == "order:address"
            assert (await chat.data(user))["size"] == f"size-{user}"
    assert order.held_between_turns == 0
