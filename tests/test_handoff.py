"""Human handoff in the core: ctx.handoff, the runtime's agent actions, handoff_ended, funnels."""

from __future__ import annotations

import pytest

from botkit import (
    Bot,
    Context,
    Flow,
    HandoffEnded,
    HandoffError,
    HandoffStatus,
    Outcome,
    OutsideSessionWindow,
    Template,
)
from botkit.testing import BotTester

AGENT_WORDS = ("agent", "human")


def make_bot() -> Bot:
    """A bot with a two-step flow, a handoff word and a handoff_ended handler."""
    bot = Bot("handoff-test", plugins=["optout"])
    order = Flow(
        "order", states=["size", "address"], transitions=[("next", "size", "address")], timeout=3600
    )

    @bot.text(*AGENT_WORDS)
    async def person(ctx: Context) -> None:
        await ctx.handoff(reason="asked", note=f"said {ctx.text}")
        await ctx.reply("Connecting you to a person. They will answer here.")

    @bot.text("order")
    async def start(ctx: Context) -> None:
        await ctx.flow.start(order)
        await ctx.reply("size?")

    @order.text(state="size")
    async def size(ctx: Context) -> None:
        await ctx.flow.next()
        await ctx.reply("address?")

    @order.text(state="address")
    async def address(ctx: Context) -> None:
        await ctx.reply(f"to {ctx.text}, handed off: {ctx.handed_off}")

    bot.include_router(order)

    @bot.handoff_ended
    async def back(ctx: Context) -> None:
        assert isinstance(ctx.event, HandoffEnded)
        await ctx.reply(f"bot again ({ctx.event.reason}), state {ctx.state}")

    @bot.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply(f"echo: {ctx.text}")

    return bot


@pytest.fixture
async def chat() -> BotTester:
    async with BotTester(make_bot()) as tester:
        yield tester  # type: ignore[misc]


async def test_a_handed_off_user_is_not_answered_by_the_bot_until_released(
    chat: BotTester,
) -> None:
    assert (await chat.send_text("order")).texts == ["size?"]
    assert (await chat.send_text("agent")).texts == [
        "Connecting you to a person. They will answer here."
    ]
    for text in ("hello?", "anyone", "M"):
        assert (await chat.send_text(text)).texts == []
        assert chat.last is not None and chat.last.outcome is Outcome.HANDED_OFF
    conversation = await chat.conversation()
    assert conversation.handoff is not None
    assert conversation.handoff.last_text == "M"
    assert conversation.state == "order:size"  # kept while handed off
    assert "botkit.flow-timeout" not in conversation.timers

    outcome = await chat.runtime.release(chat.user, "alice")
    assert outcome.outcome is Outcome.HANDLED
    assert [m.text for m in outcome.replies] == ["bot again (released), state size"]
    assert (await chat.send_text("M")).texts == ["address?"]  # the flow goes on


async def test_the_transcript_records_messages_flow_moves_and_handoff_events(
    chat: BotTester,
) -> None:
    await chat.send_text("order")
    await chat.send_text("human")
    await chat.send_text("still there?")
    page = await chat.runtime.transcript(chat.user)
    lines = [
        (e.kind.value, e.data.get("text") or e.data.get("event") or e.data.get("to"))
        for e in page.entries
    ]
    assert lines == [
        ("in", "order"),
        ("flow", "size"),
        ("out", "size?"),
        ("in", "human"),
        ("flow", None),  # left the flow at size, for the funnels (its state is kept)
        ("handoff", "started"),
        ("out", "Connecting you to a person. They will answer here."),
        ("in", "still there?"),
    ]
    assert all(chat.user not in str(e.to_dict()) for e in page.entries)


async def test_claim_reply_and_a_second_agent_gets_a_conflict(chat: BotTester) -> None:
    await chat.send_text("agent")
    taken = await chat.runtime.claim(chat.user, "alice")
    assert (taken.status, taken.agent) == (HandoffStatus.TAKEN, "alice")
    assert (await chat.runtime.claim(chat.user, "alice")).agent == "alice"  # idempotent
    with pytest.raises(HandoffError) as conflict:
        await chat.runtime.claim(chat.user, "bob")
    assert conflict.value.reason == "claimed_by_another"
    with pytest.raises(HandoffError):
        await chat.runtime.agent_reply(chat.user, "bob", "me too")
    [sent] = await chat.runtime.agent_reply(chat.user, "alice", "Hi, Alice here")
    assert sent.text == "Hi, Alice here"
    assert [m.text for m in await chat.sent()] == ["Hi, Alice here"]
    entries = (await chat.runtime.transcript(chat.user)).entries
    assert entries[-1].data["by"] == "agent:alice"


async def test_agent_actions_need_a_handed_off_conversation(chat: BotTester) -> None:
    await chat.send_text("hi")
    for act in (
        chat.runtime.claim(chat.user, "alice"),
        chat.runtime.agent_reply(chat.user, "alice", "hello"),
    ):
        with pytest.raises(HandoffError) as refused:
            await act
        assert refused.value.reason == "not_handed_off"
    assert (await chat.runtime.release(chat.user)).outcome is Outcome.IGNORED


async def test_an_agent_reply_outside_the_window_needs_a_template(chat: BotTester) -> None:
    await chat.send_text("agent")
    chat.advance(hours=25)  # not awaited: the handoff's own timeout does not run
    with pytest.raises(OutsideSessionWindow):
        await chat.runtime.agent_reply(chat.user, "alice", "are you there?")
    [sent] = await chat.runtime.agent_reply(
        chat.user, "alice", "ignored", template=Template("follow_up", ["Anna"])
    )
    assert sent.template is not None and sent.template.id == "follow_up"


async def test_a_handoff_times_out_without_agent_messages(chat: BotTester) -> None:
    await chat.send_text("order")
    await chat.send_text("agent")
    await chat.advance(minutes=20)
    await chat.runtime.agent_reply(chat.user, "alice", "looking into it")
    assert (await chat.advance(minutes=29)).texts == []  # the reply restarted the clock
    fired = await chat.advance(minutes=2)
    assert fired.texts == ["bot again (timed_out), state size"]
    conversation = await chat.conversation()
    assert conversation.handoff is None
    assert "botkit.flow-timeout" in conversation.timers  # the flow's clock runs again


async def test_opt_out_still_works_while_handed_off(chat: BotTester) -> None:
    await chat.send_text("agent")
    assert (await chat.send_text("STOP")).texts[0].startswith("You have unsubscribed")
    assert (await chat.conversation()).opted_out
    with pytest.raises(Exception, match="opted out"):
        await chat.runtime.agent_reply(chat.user, "alice", "wait!")


async def test_an_operator_hands_off_a_conversation_the_bot_is_handling(
    chat: BotTester,
) -> None:
    await chat.send_text("hi")
    assert await chat.runtime.hand_off(chat.user, reason="vip", note="call back")
    assert not await chat.runtime.hand_off(chat.user)  # already
    assert (await chat.send_text("hello")).texts == []
    [(user, handoff)], total = await chat.store.handoffs()
    assert (user, total) == (chat.user, 1)
    assert (handoff.by, handoff.reason) == ("operator", "vip")


async def test_a_failing_handoff_ended_handler_still_ends_the_handoff() -> None:
    bot = Bot("failing-end")

    @bot.text("agent")
    async def person(ctx: Context) -> None:
        await ctx.handoff()

    @bot.handoff_ended()
    async def back(ctx: Context) -> None:
        raise RuntimeError("boom")

    async with BotTester(bot, raise_errors=False) as chat:
        await chat.send_text("agent")
        outcome = await chat.runtime.release(chat.user)
        assert outcome.outcome is Outcome.ERROR
        assert (await chat.conversation()).handoff is None
        assert "botkit.handoff-timeout" not in (await chat.conversation()).timers


async def test_timers_still_run_while_handed_off_and_see_it() -> None:
    bot = Bot("timers-handed-off")

    @bot.text("agent")
    async def person(ctx: Context) -> None:
        await ctx.handoff()

    @bot.text("remind me")
    async def remind(ctx: Context) -> None:
        ctx.schedule("nudge", after=600)

    @bot.timer("nudge")
    async def nudge(ctx: Context) -> None:
        await ctx.reply(f"nudge (handed off: {ctx.handed_off})")

    @bot.before_window_closes(margin=60)
    async def still_there(ctx: Context) -> None:
        await ctx.reply("still there?")

    async with BotTester(bot) as chat:
        await chat.send_text("remind me")
        await chat.send_text("agent")
        assert (await chat.advance(minutes=11)).texts == ["nudge (handed off: True)"]
        await chat.runtime.claim(chat.user, "alice")
        for _ in range(47):  # the agent keeps it alive into the window's last hour
            chat.advance(minutes=29)
            await chat.runtime.agent_reply(chat.user, "alice", "still with you")
        assert any(n.startswith("botkit.window-closes.") for n in await chat.timers())
        assert (await chat.advance(minutes=29)).texts == []  # no "still there?": a person is on
        assert not any(n.startswith("botkit.window-closes.") for n in await chat.timers())
        assert (await chat.conversation()).handoff is not None


async def test_flow_moves_are_counted_by_flow_and_state(chat: BotTester) -> None:
    from prometheus_client import REGISTRY

    from botkit.service import metrics

    def value(name: str, **labels: str) -> float:
        metrics.flush()
        return REGISTRY.get_sample_value(name, labels) or 0.0

    entered = value("botkit_flow_entries_total", flow="order", state="size")
    moved = value(
        "botkit_flow_transitions_total", flow="order", **{"from": "size", "to": "address"}
    )
    left = value("botkit_flow_exits_total", flow="order", state="address", reason="handoff")
    await chat.send_text("order")
    await chat.send_text("M")
    await chat.send_text("agent")
    assert value("botkit_flow_entries_total", flow="order", state="size") == entered + 1
    assert (
        value("botkit_flow_transitions_total", flow="order", **{"from": "size", "to": "address"})
        == moved + 1
    )
    assert (
        value("botkit_flow_exits_total", flow="order", state="address", reason="handoff")
        == left + 1
    )
