"""Conversation core throughput: turns, dispatch with many handlers, flow transitions.

In one run:

1. turns per second through ``BotTester`` (memory store, the whole turn:
   begin, dispatch, commit, outbox) for an echo bot, and for a bot whose
   handler is bound to a flow state and updates ``ctx.data`` (what the
   aiogram yardstick, a script kept outside this repository, measures);
2. time per dispatch with 10 handlers against 1,000 handlers spread over 100
   flow states, at the handler index and as whole turns (target ratio <= 1.5);
3. the cost of one flow transition through the flow's shared AsyncMachine
   against building an AsyncMachine per turn (the ratio is reported).

Times are this process's CPU time (``time.process_time``), best of several
rounds: nothing here waits on I/O, so on an idle machine they equal wall
time, and on a busy one they are not inflated by other processes.

Run: ``python tests/bench/bench_dispatch.py [--turns 20000]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from transitions.extensions.asyncio import AsyncMachine  # noqa: E402

from botkit import (  # noqa: E402
    Bot,
    Context,
    EventKind,
    Flow,
    TextMessage,
)
from botkit.storage.base import Conversation  # noqa: E402
from botkit.testing import BotTester  # noqa: E402

USERS = 1000
STATES = 100


async def timed(fn: Callable[[], Awaitable[object]], repeat: int, rounds: int = 5) -> float:
    """Seconds per call of ``fn``: the best of ``rounds`` runs of ``repeat`` calls."""
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            await fn()
        results.append((time.process_time() - started) / repeat)
    return min(results)


# -- 1. turns per second ----------------------------------------------------------------


def echo_bot() -> Bot:
    bot = Bot("bench-echo")

    @bot.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply(ctx.message.text)  # type: ignore[attr-defined]

    return bot


def wizard_bot(handlers: int) -> tuple[Bot, Flow]:
    """``handlers`` handlers: one in state s0 that counts, the rest over s1..s99."""
    bot = Bot("bench-wizard")
    wizard = Flow("wizard", states=[f"s{i}" for i in range(STATES)])
    bot.include_router(wizard)
    for i in range(handlers - 1):

        @wizard.text(state=f"s{1 + i % (STATES - 1)}")
        async def other(ctx: Context) -> None:
            pass

    @wizard.text(state="s0")
    async def count(ctx: Context) -> None:
        ctx.data["count"] = ctx.data.get("count", 0) + 1

    @bot.text(state=None)
    async def enter(ctx: Context) -> None:
        await ctx.flow.start(wizard)

    return bot, wizard


async def turns_per_second(
    bot: Bot, turns: int, warm_up: Callable[[BotTester], Awaitable[None]], rounds: int = 5
) -> float:
    """The best rate of ``rounds`` runs of ``turns // rounds`` turns."""
    async with BotTester(bot) as chat:
        await warm_up(chat)
        rates = []
        per_round = turns // rounds
        for r in range(rounds):
            messages = [
                TextMessage(id=f"t{r}-{i}", user=f"7900{i % USERS:07d}", text=f"hello {i}")
                for i in range(per_round)
            ]
            started = time.process_time()
            for message in messages:
                await chat.send(message)
            rates.append(per_round / (time.process_time() - started))
    return max(rates)


async def no_warm_up(chat: BotTester) -> None:
    for i in range(200):
        await chat.send_text("warm", user=f"7800{i:07d}")


async def enter_flow(chat: BotTester) -> None:
    for u in range(USERS):
        await chat.send_text("enter", user=f"7900{u:07d}")


# -- 2. dispatch with many handlers -------------------------------------------------------


async def dispatch_cost(handlers: int) -> float:
    """Seconds per HandlerIndex.dispatch for a user in wizard:s0."""
    bot, _ = wizard_bot(handlers)
    chat = BotTester(bot)
    runtime = chat.runtime
    event = TextMessage(id="d", user="79000000001", text="hi")
    conversation = Conversation(user="79000000001", state="wizard:s0")
    index = runtime.index

    async def one() -> None:
        ctx = Context(runtime, event, conversation, 0.0)
        await index.dispatch(ctx, EventKind.TEXT, "wizard:s0")

    return await timed(one, 20_000)


async def turn_cost(handlers: int, turns: int) -> float:
    bot, _ = wizard_bot(handlers)
    rate = await turns_per_second(bot, turns, enter_flow)
    return 1 / rate


# -- 3. a flow transition: shared machine against a machine per turn ----------------------


class PerTurnModel:
    def __init__(self, state: str) -> None:
        self.state = state


async def transition_costs(size: int, repeat: int) -> tuple[float, float]:
    """Seconds per transition in a ring of ``size`` states: shared machine, machine per turn."""
    steps = [f"s{i}" for i in range(size)]
    ring = [["next", steps[i], steps[(i + 1) % size]] for i in range(size)]
    bot = Bot("bench-flow")
    flow = Flow("steps", states=steps, transitions=ring)
    bot.include_router(flow)
    runtime = BotTester(bot).runtime
    conversation = Conversation(user="79000000001", state="steps:s3")
    event = TextMessage(id="f", user="79000000001", text="next")

    async def shared() -> None:
        ctx = Context(runtime, event, conversation, 0.0)  # builds the throwaway model
        await ctx.flow.trigger("next")

    async def per_turn() -> None:
        model = PerTurnModel("s3")
        AsyncMachine(
            model=model, states=steps, transitions=ring, initial="s3", auto_transitions=False
        )
        await model.next()  # type: ignore[attr-defined]

    return await timed(shared, repeat), await timed(per_turn, repeat)


# -- the run -------------------------------------------------------------------------------


async def main(turns: int) -> None:
    print(f"Python {sys.version.split()[0]}; {turns:,} turns over {USERS:,} users per figure\n")

    echo_rate = await turns_per_second(echo_bot(), turns, no_warm_up)
    bot, _ = wizard_bot(1)
    fsm_rate = await turns_per_second(bot, turns, enter_flow)
    print("1. turns through BotTester.send (begin, dispatch, commit, outbox read; memory)")
    print(f"   echo bot                              {echo_rate:>10,.0f} turns/s")
    print(f"   flow-state handler updating ctx.data  {fsm_rate:>10,.0f} turns/s\n")

    few, many = await dispatch_cost(10), await dispatch_cost(1000)
    few_turn = await turn_cost(10, turns // 2)
    many_turn = await turn_cost(1000, turns // 2)
    print("2. dispatch, user in state s0; the other handlers spread over s1..s99")
    print(f"   index.dispatch   10 handlers  {few * 1e6:8.2f} us")
    print(
        f"   index.dispatch 1000 handlers  {many * 1e6:8.2f} us   ratio {many / few:.2f} (<= 1.5)"
    )
    print(f"   whole turn       10 handlers  {few_turn * 1e6:8.2f} us")
    print(
        f"   whole turn     1000 handlers  {many_turn * 1e6:8.2f} us   "
        f"ratio {many_turn / few_turn:.2f} (<= 1.5)\n"
    )

    print("3. one flow transition: shared machine (throwaway model) vs AsyncMachine per turn")
    for size, repeat in ((10, 5000), (100, 1000)):
        shared, per_turn = await transition_costs(size, repeat)
        print(
            f"   {size:>3} states   shared {shared * 1e6:8.2f} us   per turn "
            f"{per_turn * 1e6:8.2f} us   ratio {per_turn / shared:5.1f}x"
        )
    ok = many / few <= 1.5 and many_turn / few_turn <= 1.5
    print(f"\ndispatch ratio target {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.turns))
