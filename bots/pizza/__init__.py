"""The pizza bot: an order taken as a conversation flow.

::

    botkit dev bots.pizza:bot

The conversation, state by state (``order`` flow)::

    (no order)  any message        -> the menu                      -> menu
    menu        1, 2, 3 or a name  -> "Which size? S, M or L"       -> size
    size        S, M or L          -> "What is the delivery address?" -> address
    address     text or a location -> the summary, "yes" or "no"?   -> confirm
    confirm     yes                -> "Order #<id> confirmed ..."   (flow ends)
    confirm     no                 -> the menu again                -> menu
    any state   cancel             -> "Order cancelled ..."         (flow ends)
    any state   agent or human     -> "Connecting you to a person..." (handed off)

Each state asks its question when it is entered (``State(on_enter=...)``), so
a transition is all a handler does to move on. A wrong answer gets a hint and
the same question; a picture, a file or a contact card gets a short
explanation and the current question again. 30 minutes of silence drops the
order. The opt-out plugin is on: "STOP" silences the bot for that user.

"agent" or "human" hands the conversation to a person (``ctx.handoff``): the
bot stays quiet while an agent answers from the ``/agent`` page or the agent
API, and when the agent releases it (or 30 minutes pass without an agent
message) the bot is back, at the step the order was at.

When the kitchen is done, another part of the system calls
:func:`notify_order_ready` (or ``POST /api/send``); outside the 24-hour window
that message goes as the pre-approved template ``order_ready``.
"""

from __future__ import annotations

import secrets
from typing import Any

from botkit import (
    Bot,
    Choices,
    Context,
    Flow,
    LocationMessage,
    MediaMessage,
    OutboundMessage,
    State,
    Template,
    Text,
)

PIZZAS = Choices("Margherita", "Pepperoni", "Veggie")
SIZES = {"S": "small", "M": "medium", "L": "large"}
TIMEOUT_MINUTES = 30
ORDER_READY = "order_ready"
"""The template id of "your order is ready" (params: 1 = the order id)."""


# -- the questions each state asks -------------------------------------------


def menu_text() -> str:
    """The menu, one pizza per line: ``1) Margherita``..."""
    return f"What would you like? Answer with a number:\n{PIZZAS.menu}"


def _order(ctx: Context) -> dict[str, Any]:
    """The order in progress, kept in the user's data between turns."""
    order: dict[str, Any] = ctx.data.setdefault("order", {})
    return order


def _question(ctx: Context) -> str:
    """The question of the user's current state."""
    order = _order(ctx)
    match ctx.state:
        case "size":
            return f"{order['pizza']}, good choice! Which size: S, M or L?"
        case "address":
            return "What is the delivery address? Type it, or share a location."
        case "confirm":
            size = f"{order['size']} ({SIZES[order['size']]})"
            return (
                f"Your order: {order['pizza']}, size {size}, to {order['address']}.\n"
                'Answer "yes" to confirm or "no" to start over.'
            )
        case _:
            return menu_text()


async def ask(ctx: Context, hint: str | None = None) -> None:
    """Ask the current state's question, after a ``hint`` about the last answer."""
    question = _question(ctx)
    await ctx.reply(f"{hint}\n\n{question}" if hint else question)


async def _new_order(ctx: Context) -> None:
    ctx.data["order"] = {}
    await ask(ctx)


async def _timed_out(ctx: Context) -> None:
    ctx.data.pop("order", None)
    await ctx.reply(
        f"Your unfinished order was dropped after {TIMEOUT_MINUTES} minutes without an answer."
    )


# -- the flow ------------------------------------------------------------------

order = Flow(
    "order",
    states=[
        State("menu", on_enter=_new_order),
        State("size", on_enter=ask),
        State("address", on_enter=ask),
        State("confirm", on_enter=ask),
        "placed",
        "cancelled",
    ],
    transitions=[
        ("pick", "menu", "size"),
        ("sized", "size", "address"),
        ("addressed", "address", "confirm"),
        ("place", "confirm", "placed"),
        ("restart", "confirm", "menu"),
        ("cancel", ["menu", "size", "address", "confirm"], "cancelled"),
    ],
    final=["placed", "cancelled"],
    timeout=TIMEOUT_MINUTES * 60,
    on_timeout=_timed_out,
)

bot = Bot("pizza", plugins=["optout"])

CONNECTING = "Connecting you to a person. They will answer here."


# Registered before the flow, so it wins in every state.
@bot.text(Text("agent", "human"))
async def to_a_person(ctx: Context) -> None:
    """``agent`` or ``human``: hand the conversation to a person."""
    await ctx.handoff(reason="asked for a person", note=f"step: {ctx.state or 'no order'}")
    await ctx.reply(CONNECTING)


@bot.handoff_ended
async def back_from_a_person(ctx: Context) -> None:
    """The person is done (or did not answer in time): the bot is back, where it was."""
    if ctx.flow.active:
        await ask(ctx, "You are back with the pizza bot.")
    else:
        await ctx.reply("You are back with the pizza bot. Send any message to order.")


bot.include_router(order)


# Registered first in the flow, so it wins in every state.
@order.text(Text("cancel", "/cancel"))
async def cancel(ctx: Context) -> None:
    """``cancel`` at any step ends the flow and forgets the order."""
    await ctx.flow.cancel()
    ctx.data.pop("order", None)
    await ctx.reply("Order cancelled. Send any message when you want to order again.")


@order.text(PIZZAS, state="menu")
async def pick_pizza(ctx: Context, choice: str) -> None:
    """A number from the menu (or a pizza's name) picks the pizza."""
    _order(ctx)["pizza"] = choice
    await ctx.flow.pick()


@order.text(state="menu")
async def not_on_the_menu(ctx: Context) -> None:
    """Any other answer: the menu again."""
    await ask(ctx, "Sorry, that is not on our menu.")


@order.text(state="size")
async def pick_size(ctx: Context) -> None:
    """S, M or L (or small, medium, large)."""
    size = _size_named(ctx.text or "")
    if size is None:
        await ask(ctx, "Please answer S, M or L.")
        return
    _order(ctx)["size"] = size
    await ctx.flow.sized()


@order.text(state="address")
async def typed_address(ctx: Context) -> None:
    """A typed delivery address."""
    address = " ".join((ctx.text or "").split())
    if len(address) < 3:
        await ask(ctx, "That looks too short for an address.")
        return
    _order(ctx)["address"] = address
    await ctx.flow.addressed()


@order.location(state="address")
async def shared_location(ctx: Context) -> None:
    """A shared location: its address, or its coordinates when it has none."""
    place = ctx.message
    assert isinstance(place, LocationMessage)
    if place.address:
        address = place.address
    elif place.latitude is not None and place.longitude is not None:
        address = f"{place.latitude:.5f}, {place.longitude:.5f}"
    else:
        await ask(ctx, "That location came without an address or coordinates.")
        return
    _order(ctx)["address"] = address
    await ctx.flow.addressed()


@order.text(Text("yes", "y"), state="confirm")
async def confirmed(ctx: Context) -> None:
    """``yes``: the order is placed and the flow ends."""
    placed = ctx.data.pop("order")
    order_id = str(100_000 + secrets.randbelow(900_000))
    ctx.data["last_order"] = {"id": order_id, **placed}
    await ctx.flow.place()
    await ctx.reply(
        f"Order #{order_id} confirmed: {placed['pizza']} ({placed['size']}) to "
        f"{placed['address']}. We will message you when it is ready."
    )


@order.text(Text("no", "n"), state="confirm")
async def start_over(ctx: Context) -> None:
    """``no``: back to the menu (the menu state asks again)."""
    await ctx.flow.restart()


@order.text(state="confirm")
async def unclear_confirmation(ctx: Context) -> None:
    """Anything but yes or no."""
    await ask(ctx, 'Please answer "yes" or "no".')


@order.fallback()
async def not_an_answer(ctx: Context) -> None:
    """Media, contact cards (or a location before the address step): explain, ask again."""
    if isinstance(ctx.message, MediaMessage):
        hint = "I cannot look at pictures, voice notes or files here."
    elif isinstance(ctx.message, LocationMessage):
        hint = "Thanks, I will ask for your location when I need the address."
    else:
        hint = "Thanks, but I cannot use a contact card here."
    await ask(ctx, hint)


@bot.message(state=None)
async def show_menu(ctx: Context) -> None:
    """Any message while no order is in progress starts one: the menu."""
    await ctx.flow.start(order)


async def notify_order_ready(user: str, order_id: str) -> list[OutboundMessage]:
    """Tell ``user`` their order is ready (from a kitchen job, a worker...).

    Inside the user's 24-hour window it goes as free text; outside it, as the
    template ``order_ready`` with the order id. Raises :class:`~botkit.OptedOut`
    when the user said STOP. The bot must be running in this process; from
    elsewhere, ``POST /api/send`` with the same text and template.
    """
    return await bot.send(
        user,
        text=f"Your order #{order_id} is ready and on its way!",
        template=Template(ORDER_READY, [order_id]),
    )


# -- parsing answers ---------------------------------------------------------------


def _size_named(answer: str) -> str | None:
    """``S``, ``M`` or ``L`` from ``l``, ``Large``...; None when the answer is no size."""
    word = answer.strip().casefold()
    for letter, name in SIZES.items():
        if word in (letter.casefold(), name):
            return letter
    return None
