"""A bot for the timer tests of ``botkit run``: each message schedules a batch of timers.

``schedule N AFTER STEP`` schedules timers ``t0``..``t<N-1>`` due AFTER + k*STEP
seconds from now; each replies ``fired <k>`` when it fires.
"""

from botkit import Bot, Context, Regex

bot = Bot("timerbot")


@bot.text(Regex(r"^schedule (?P<n>\d+) (?P<after>[\d.]+) (?P<step>[\d.]+)$"))
async def schedule(ctx: Context, n: str, after: str, step: str) -> None:
    for k in range(int(n)):
        ctx.schedule(f"t{k}", after=float(after) + k * float(step), data=k)


@bot.timer()
async def fired(ctx: Context) -> None:
    await ctx.reply(f"fired {ctx.timer.data}")
