"""A bot for the campaign tests of ``botkit run``: the opt-out plugin and an echo."""

from botkit import Bot, Context

bot = Bot("campaignbot", plugins=["optout"])


@bot.text()
async def echo(ctx: Context) -> None:
    await ctx.reply(f"you said: {ctx.text}")
