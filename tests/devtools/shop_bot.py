"""A small pizza-like bot for the dev tools' tests: a visible flow state, a fallback template.

``order`` goes menu → size → address → confirm → placed (or cancelled from
any step). The bot has a ``default_template``, so whatever it sends once the
24-hour window has closed goes as the template ``come_back``.
"""

from __future__ import annotations

from botkit import Bot, Context, Flow, State, Template, Text

PIZZAS = ("Margherita", "Pepperoni")


async def _ask(ctx: Context) -> None:
    questions = {
        "menu": "Menu: 1) Margherita 2) Pepperoni",
        "size": "Which size: S, M or L?",
        "address": "Where to?",
        "confirm": "Confirm? yes or no",
    }
    await ctx.reply(questions[ctx.state or "menu"])


def _big(ctx: Context) -> bool:
    return (ctx.text or "").strip().upper() == "L"


order = Flow(
    "order",
    states=[
        State("menu", on_enter=_ask),
        State("size", on_enter=_ask),
        State("address", on_enter=_ask),
        State("confirm", on_enter=_ask),
        "placed",
        "cancelled",
    ],
    transitions=[
        ("pick", "menu", "size"),
        ("sized", "size", "address"),
        {"trigger": "upsized", "source": "size", "dest": "address", "conditions": _big},
        ("addressed", "address", "confirm"),
        ("place", "confirm", "placed"),
        ("restart", "confirm", "menu"),
        ("cancel", ["menu", "size", "address", "confirm"], "cancelled"),
    ],
    final=["placed", "cancelled"],
    timeout=30 * 60,
)

bot = Bot("shop", default_template=Template("come_back", ["friend"]))
bot.include_router(order)


@order.text(Text("cancel"))
async def cancel(ctx: Context) -> None:
    await ctx.flow.cancel()
    await ctx.reply("Cancelled.")


@order.text(state="menu")
async def pick(ctx: Context) -> None:
    choice = (ctx.text or "").strip()
    if choice not in ("1", "2"):
        await ctx.reply("Answer 1 or 2.")
        return
    ctx.data["pizza"] = PIZZAS[int(choice) - 1]
    await ctx.flow.pick()


@order.text(state="size")
async def size(ctx: Context) -> None:
    ctx.data["size"] = (ctx.text or "").strip().upper()
    await ctx.flow.sized()


@order.text(state="address")
async def address(ctx: Context) -> None:
    ctx.data["address"] = ctx.text
    await ctx.flow.addressed()


@order.location(state="address")
async def located(ctx: Context) -> None:
    ctx.data["address"] = "a shared location"
    await ctx.flow.addressed()


@order.text(Text("yes"), state="confirm")
async def place(ctx: Context) -> None:
    await ctx.flow.place()
    await ctx.reply(f"Ordered: {ctx.data['pizza']} {ctx.data['size']}.")


@order.fallback()
async def not_now(ctx: Context) -> None:
    await ctx.reply(f"Got your {ctx.message.kind.value}, but I need an answer.")


@bot.media(state=None)
async def media(ctx: Context) -> None:
    await ctx.reply(f"Nice {ctx.message.media.kind.value}!")  # type: ignore[attr-defined]


@bot.location(state=None)
async def location(ctx: Context) -> None:
    msg = ctx.message
    await ctx.reply(f"You are at {msg.latitude}, {msg.longitude}.")  # type: ignore[attr-defined]


@bot.contacts(state=None)
async def contacts(ctx: Context) -> None:
    names = ", ".join(c.name or "?" for c in ctx.message.contacts)  # type: ignore[attr-defined]
    await ctx.reply(f"Thanks for the card of {names}.")


@bot.text(state=None)
async def start(ctx: Context) -> None:
    await ctx.flow.start(order)
