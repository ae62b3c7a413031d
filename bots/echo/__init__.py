"""The echo bot: the smoke test every deployment can run.

Each user's message count lives in their conversation data, so it survives
restarts and is shared by replicas.

    botkit dev bots.echo:bot
"""

from botkit import Bot, Context

bot = Bot("echo")


def _count(ctx: Context) -> int:
    """This user's messages handled so far, this one included."""
    n = int(ctx.data.get("n", 0)) + 1
    ctx.data["n"] = n
    return n


@bot.text()
async def echo_text(ctx: Context) -> None:
    """``echo #<n>: <text>``."""
    n = _count(ctx)
    await ctx.reply(f"echo #{n}: {ctx.message.text}")  # type: ignore[attr-defined]


@bot.media()
async def echo_media(ctx: Context) -> None:
    """``#<n>: got media <contentType>``."""
    n = _count(ctx)
    await ctx.reply(f"#{n}: got media {ctx.message.media.mime_type}")  # type: ignore[attr-defined]


@bot.contacts()
async def echo_contacts(ctx: Context) -> None:
    """``#<n>: got contacts <number of contacts>``."""
    n = _count(ctx)
    await ctx.reply(f"#{n}: got contacts {len(ctx.message.contacts)}")  # type: ignore[attr-defined]


@bot.location()
async def echo_location(ctx: Context) -> None:
    """``#<n>: got location``."""
    n = _count(ctx)
    await ctx.reply(f"#{n}: got location")
