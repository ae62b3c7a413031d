"""Timers as turns: ctx.schedule / ctx.cancel / ctx.timers, @router.timer, flow timeouts that fire.

Run through the test kit (memory store, a frozen clock moved by ``advance``);
the Redis store and several workers are in tests/delivery/test_timer_worker.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from botkit import Bot, Context, Flow, OutsideSessionWindow, State, Template
from botkit.service import metrics
from botkit.testing import BotTester


def reminder_bot() -> Bot:
    bot = Bot("t")

    @bot.text(r"later")
    async def later(ctx: Context) -> None:
        ctx.schedule("ping", after=60, data={"say": "time is up"})
        await ctx.reply("ok")

    @bot.text("again")
    async def again(ctx: Context) -> None:
        ctx.schedule("ping", after=300, data={"say": "replaced"})
        await ctx.reply("ok")

    @bot.text("stop")
    async def stop(ctx: Context) -> None:
        await ctx.reply("cancelled" if ctx.cancel("ping") else "nothing to cancel")

    @bot.text("pending")
    async def pending(ctx: Context) -> None:
        await ctx.reply(", ".join(ctx.timers) or "none")

    @bot.timer("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply(f"{ctx.timer.name}: {ctx.timer.data['say']}")

    return bot


async def test_a_timer_fires_as_a_turn_at_its_time_and_not_before() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("later")
        assert (await chat.advance(59)) == []
        assert list(await chat.timers()) == ["ping"]
        sent = await chat.advance(1)
        assert sent.texts == ["ping: time is up"]
        assert await chat.timers() == {}
        assert (await chat.advance(hours=1)) == [], "a timer fires once"


async def test_the_same_name_replaces_the_earlier_timer() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("later")
        await chat.send_text("again")
        assert (await chat.advance(60)) == []
        assert (await chat.advance(240)).texts == ["ping: replaced"]


async def test_cancel_and_the_list_of_pending_timers() -> None:
    async with BotTester(reminder_bot()) as chat:
        assert (await chat.send_text("pending")).text == "none"
        await chat.send_text("later")
        assert (await chat.send_text("pending")).text == "ping"
        assert (await chat.send_text("stop")).text == "cancelled"
        assert (await chat.send_text("stop")).text == "nothing to cancel"
        assert (await chat.advance(minutes=5)) == []


async def test_timers_are_per_user() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("later", user="79990000001")
        chat.advance(30)
        await chat.send_text("later", user="79990000002")
        first = await chat.advance(30)
        assert [m.user for m in first] == ["79990000001"]
        second = await chat.advance(30)
        assert [m.user for m in second] == ["79990000002"]


async def test_cancel_on_message_drops_the_timer_when_the_user_writes() -> None:
    bot = Bot("t")

    @bot.text("ask")
    async def ask(ctx: Context) -> None:
        ctx.schedule("nudge", after=600, cancel_on_message=True)
        ctx.schedule("keep", after=600)
        await ctx.reply("question?")

    @bot.text()
    async def answer(ctx: Context) -> None:
        await ctx.reply("thanks")

    @bot.timer()
    async def any_timer(ctx: Context) -> None:
        await ctx.reply(f"fired {ctx.timer.name}")

    async with BotTester(bot) as chat:
        await chat.send_text("ask")
        assert (await chat.advance(600)).texts == ["fired keep", "fired nudge"]
        await chat.send_text("ask")
        await chat.send_text("an answer")
        assert (await chat.advance(600)).texts == ["fired keep"]


async def test_at_takes_an_aware_datetime_and_ctx_timer_tells_the_due_time() -> None:
    bot = Bot("t")
    seen: list[datetime] = []

    @bot.text("tomorrow")
    async def tomorrow(ctx: Context) -> None:
        at = datetime.fromtimestamp(ctx.now, UTC) + timedelta(days=1)
        ctx.schedule("wake", at=at)

    @bot.text("naive")
    async def naive(ctx: Context) -> None:
        ctx.schedule("wake", at=datetime(2030, 1, 1, 9))

    @bot.timer("wake")
    async def wake(ctx: Context) -> None:
        seen.append(ctx.timer.due_at)

    async with BotTester(bot) as chat:
        await chat.send_text("tomorrow")
        due = (await chat.timers())["wake"].due_at
        await chat.advance(hours=23, minutes=59)
        assert seen == []
        await chat.advance(minutes=1, seconds=1)  # datetimes keep microseconds
        assert seen == [due]
        with pytest.raises(ValueError, match="time zone"):
            await chat.send_text("naive")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ctx: ctx.schedule("x"), "exactly one"),
        (lambda ctx: ctx.schedule("x", after=1, at=5.0), "exactly one"),
        (lambda ctx: ctx.schedule("x", after=-1), "0 or more"),
        (lambda ctx: ctx.schedule("", after=1), "needs a name"),
        (lambda ctx: ctx.schedule("botkit.flow-timeout", after=1), "botkit's own"),
        (lambda ctx: ctx.schedule("x", after=1, data={1, 2}), "JSON"),
    ],
)
async def test_bad_schedules_are_named_errors_and_save_nothing(call: object, message: str) -> None:
    bot = Bot("t")

    @bot.text()
    async def handler(ctx: Context) -> None:
        call(ctx)  # type: ignore[operator]

    async with BotTester(bot) as chat:
        with pytest.raises((ValueError, TypeError), match=message):
            await chat.send_text("go")
        assert await chat.timers() == {}


async def test_a_timer_turn_runs_under_the_reply_policy() -> None:
    bot = Bot("t")

    @bot.text("later")
    async def later(ctx: Context) -> None:
        ctx.schedule("late", after=25 * 3600)
        ctx.schedule("templated", after=25 * 3600 + 1)

    @bot.timer("late")
    async def late(ctx: Context) -> None:
        await ctx.reply("free text")

    @bot.timer("templated")
    async def templated(ctx: Context) -> None:
        await ctx.reply("free text", template=Template("come_back", ["x"]))

    refused: list[BaseException] = []

    @bot.error(OutsideSessionWindow)
    async def outside(ctx: Context, exc: BaseException) -> None:
        refused.append(exc)

    async with BotTester(bot) as chat:
        await chat.send_text("later")
        sent = await chat.advance(hours=26)
        assert [m.template for m in sent] == [Template("come_back", ["x"])]
        assert len(refused) == 1 and "template" in str(refused[0])
        assert await chat.timers() == {}, "the refused timer is not retried forever"


async def test_inside_the_window_a_timer_replies_as_text() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("later")
        [message] = await chat.advance(60)
        assert message.mode.value == "text"


async def test_a_failing_timer_handler_fires_once_and_its_changes_are_dropped() -> None:
    bot = Bot("t")
    calls: list[str] = []

    @bot.text("go")
    async def go(ctx: Context) -> None:
        ctx.schedule("boom", after=1)

    @bot.timer("boom")
    async def boom(ctx: Context) -> None:
        calls.append("boom")
        ctx.data["half"] = True
        ctx.schedule("other", after=1)
        raise RuntimeError("broken")

    async with BotTester(bot, raise_errors=False) as chat:
        await chat.send_text("go")
        await chat.advance(1)
        await chat.advance(60)
        assert calls == ["boom"]
        assert await chat.data() == {} and await chat.timers() == {}


async def test_a_handler_may_schedule_its_own_timer_again() -> None:
    bot = Bot("t")

    @bot.text("start")
    async def start(ctx: Context) -> None:
        ctx.schedule("tick", after=10, data=1)

    @bot.timer("tick")
    async def tick(ctx: Context) -> None:
        await ctx.reply(f"tick {ctx.timer.data}")
        if ctx.timer.data < 3:
            ctx.schedule("tick", after=10, data=ctx.timer.data + 1)

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.advance(10)).texts == ["tick 1"]
        assert (await chat.advance(10)).texts == ["tick 2"]
        assert (await chat.advance(10)).texts == ["tick 3"]
        assert (await chat.advance(10)) == []


async def test_timer_handlers_bind_to_flow_states() -> None:
    flow = Flow("f", states=["one", "two"], transitions=[("next", "one", "two")])
    bot = Bot("t")
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)
        ctx.schedule("check", after=5)
        ctx.schedule("check2", after=10)

    @flow.text("next")
    async def next_(ctx: Context) -> None:
        await ctx.flow.next()

    @flow.timer("check", "check2", state="one")
    async def in_one(ctx: Context) -> None:
        await ctx.reply(f"{ctx.timer.name} in one")

    @flow.timer("check", "check2", state="two")
    async def in_two(ctx: Context) -> None:
        await ctx.reply(f"{ctx.timer.name} in two")

    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.advance(5)).texts == ["check in one"]
        await chat.send_text("next")
        assert (await chat.advance(5)).texts == ["check2 in two"]


# -- flow timeouts ------------------------------------------------------------


def timed_flow(**state_timeouts: float) -> tuple[Bot, Flow]:
    async def dropped(ctx: Context) -> None:
        await ctx.reply(f"dropped in {ctx.state or 'no state'}")

    flow = Flow(
        "f",
        states=[State(name, timeout=state_timeouts.get(name)) for name in ("a", "b", "done")],
        transitions=[("go", "a", "b"), ("end", "b", "done")],
        final=["done"],
        timeout=60,
        on_timeout=dropped,
    )
    bot = Bot("t")
    bot.include_router(flow)

    @bot.text("start", state=None)
    async def start(ctx: Context) -> None:
        await ctx.flow.start(flow)
        await ctx.reply("started")

    @flow.text("go")
    async def go(ctx: Context) -> None:
        await ctx.flow.go()

    @flow.text("finish")
    async def finish(ctx: Context) -> None:
        await ctx.flow.finish()

    @flow.text()
    async def other(ctx: Context) -> None:
        await ctx.reply("still here")

    return bot, flow


async def test_a_flow_timeout_fires_with_no_further_message() -> None:
    bot, _ = timed_flow()
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        assert (await chat.advance(59)) == []
        assert (await chat.advance(1)).texts == ["dropped in no state"]
        assert await chat.state() is None
        assert await chat.timers() == {}


async def test_every_message_rearms_the_flow_timeout() -> None:
    bot, _ = timed_flow()
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        await chat.advance(50)
        await chat.send_text("hello")
        assert (await chat.advance(50)) == [], "the message moved the deadline"
        assert (await chat.advance(10)).texts == ["dropped in no state"]


async def test_a_state_may_have_its_own_timeout() -> None:
    bot, flow = timed_flow(b=600)
    assert (flow.timeout_for("a"), flow.timeout_for("b")) == (60, 600)
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        await chat.send_text("go")
        assert (await chat.advance(599)) == []
        assert (await chat.advance(1)).texts == ["dropped in no state"]


async def test_leaving_the_flow_disarms_its_timeout() -> None:
    bot, _ = timed_flow()
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        await chat.send_text("finish")
        assert await chat.timers() == {}
        assert (await chat.advance(hours=1)) == []


async def test_a_message_after_the_deadline_before_the_timer_fired_still_times_out() -> None:
    bot, _ = timed_flow()
    async with BotTester(bot) as chat:
        await chat.send_text("start")
        chat.advance(61)  # not awaited: the timer has not fired (say, during an outage)
        replies = await chat.send_text("hello")
        assert replies.texts[0] == "dropped in no state"
        assert (await chat.advance(60)) == [], "the timer was disarmed with the flow"


async def test_pizza_says_the_order_was_dropped_at_the_deadline() -> None:
    from bots.pizza import bot as pizza

    async with BotTester(pizza) as chat:
        await chat.send_text("hi")
        await chat.send_text("1")
        assert (await chat.advance(minutes=29)) == []
        sent = await chat.advance(minutes=1)
        assert sent.texts == [
            "Your unfinished order was dropped after 30 minutes without an answer."
        ]
        assert await chat.state() is None


# -- scheduled sends: bot.send_at ------------------------------------------------


async def test_send_at_decides_the_window_when_due_and_can_be_cancelled() -> None:
    bot = Bot("t")

    @bot.text()
    async def hello(ctx: Context) -> None:
        await ctx.reply("hi")

    async with BotTester(bot) as chat:
        await chat.send_text("hello")
        first = await bot.send_at(chat.user, "in an hour", after=3600)
        await bot.send_at(
            chat.user, "tomorrow", after=25 * 3600, template=Template("come_back", ["x"])
        )
        refused = await bot.send_at(chat.user, "tomorrow, text only", after=25 * 3600 + 1)
        assert refused.startswith(chat.user + ".")
        assert (await chat.advance(minutes=59)) == []
        assert await chat.sent() == []
        await chat.advance(minutes=1)
        assert (await chat.sent()).texts == ["in an hour"]
        assert await bot.cancel_scheduled(first) is False, "already sent"
        await chat.advance(hours=25)
        [sent] = await chat.sent()
        assert sent.template == Template("come_back", ["x"])
        assert chat.last is not None and [r.reason for r in chat.last.refused] == [
            "outside_session_window"
        ]


async def test_a_cancelled_send_at_is_not_sent() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("pending")
        scheduled = await chat.bot.send_at(chat.user, "never", after=60)
        assert await chat.bot.cancel_scheduled(scheduled) is True
        assert await chat.bot.cancel_scheduled(scheduled) is False
        await chat.advance(120)
        assert await chat.sent() == []


async def test_send_at_from_a_handler_joins_its_turn() -> None:
    bot = Bot("t")

    @bot.text("book")
    async def book(ctx: Context) -> None:
        await ctx.bot.send_at(ctx.user, "your table is ready", after=60)
        await ctx.reply("booked")

    @bot.text("fail")
    async def fail(ctx: Context) -> None:
        await ctx.bot.send_at(ctx.user, "never", after=60)
        raise RuntimeError("the booking failed")

    async with BotTester(bot, raise_errors=False) as chat:
        assert (await chat.send_text("book")).texts == ["booked"]
        await chat.send_text("fail")
        await chat.advance(60)
        assert (await chat.sent()).texts == ["your table is ready"]


# -- before the window closes --------------------------------------------------


def window_bot() -> Bot:
    bot = Bot("t")

    @bot.text()
    async def hello(ctx: Context) -> None:
        await ctx.reply("hi")

    @bot.before_window_closes(margin=60)
    async def still_there(ctx: Context) -> None:
        assert ctx.in_session_window
        await ctx.reply("Still there? Reply to keep chatting.")

    return bot


async def test_the_window_reminder_fires_its_margin_before_the_window_closes() -> None:
    async with BotTester(window_bot()) as chat:
        await chat.send_text("hello")
        margin = chat.runtime.policy.window.safety_margin
        assert (await chat.advance(hours=23, seconds=-margin - 1)) == []
        [sent] = await chat.advance(1)
        assert sent.mode.value == "text" and sent.text == "Still there? Reply to keep chatting."
        assert (await chat.advance(hours=2)) == [], "once per window"


async def test_a_newer_message_moves_the_window_reminder() -> None:
    async with BotTester(window_bot()) as chat:
        await chat.send_text("hello")
        await chat.advance(hours=12)
        await chat.send_text("hello again")
        assert (await chat.advance(hours=12)) == [], "the window moved with the new message"
        assert (await chat.advance(hours=11)).texts == ["Still there? Reply to keep chatting."]


async def test_without_a_handler_no_window_timer_is_kept() -> None:
    async with BotTester(reminder_bot()) as chat:
        await chat.send_text("hello")
        assert await chat.timers() == {}


def cancelled_total() -> float:
    metrics.flush()
    return REGISTRY.get_sample_value("botkit_timers_cancelled_total") or 0.0


async def test_the_cancelled_counter_counts_only_cancels_that_were_committed() -> None:
    bot = reminder_bot()

    @bot.text("stop and fail")
    async def stop_and_fail(ctx: Context) -> None:
        ctx.cancel("ping")
        ctx.schedule("nudge", after=10, cancel_on_message=True)
        raise RuntimeError("the turn fails after its cancel")

    @bot.text("nudge me")
    async def nudge_me(ctx: Context) -> None:
        ctx.schedule("nudge", after=10, cancel_on_message=True)

    async with BotTester(bot) as chat:
        await chat.send_text("later")
        before = cancelled_total()
        with pytest.raises(RuntimeError):
            await chat.send_text("stop and fail")
        assert list(await chat.timers()) == ["ping"], "the failed turn's cancel was rolled back"
        assert cancelled_total() == before
        assert (await chat.send_text("stop")).text == "cancelled"
        assert cancelled_total() == before + 1
        await chat.send_text("nudge me")
        await chat.send_text("hello")  # the message cancels the nudge
        assert await chat.timers() == {}
        assert cancelled_total() == before + 2
