"""The reminder bot: durable timers in a dozen lines of handlers.

    remind me in 10 minutes call mom   ->  ok, I will remind you in 10 minutes
    (10 minutes later)                  ->  reminder: call mom
    list                                ->  the pending reminders, numbered
    cancel 2                            ->  cancels reminder 2

Each reminder is a timer of the user (``ctx.schedule``): it survives restarts
with the Redis store and fires once however many workers run. Outside the
24-hour window the reminder goes as the ``reminder`` template.

    botkit dev bots.reminder
"""

from __future__ import annotations

from botkit import Bot, Context, Regex, Template

bot = Bot("reminder")

PREFIX = "reminder-"
UNITS = {"second": 1, "minute": 60}

HELP = (
    "Send: remind me in <N> seconds|minutes <text>\n"
    "list: your pending reminders\n"
    "cancel <n>: cancel reminder n"
)


@bot.text(
    Regex(r"(?is)^\s*remind me in\s+(?P<n>\d{1,6})\s+(?P<unit>second|minute)s?\s+(?P<what>.+)$")
)
async def remind(ctx: Context, n: str, unit: str, what: str) -> None:
    """Schedule ``reminder: <what>`` in ``n`` units."""
    count, unit = int(n), unit.lower()
    number = int(ctx.data.get("next", 1))
    ctx.data["next"] = number + 1
    ctx.schedule(f"{PREFIX}{number}", after=count * UNITS[unit], data=what.strip())
    await ctx.reply(f"ok, I will remind you in {count} {unit}{'' if count == 1 else 's'}")


@bot.timer()
async def fire(ctx: Context) -> None:
    """The reminder is due: say it (as the template outside the window)."""
    if not ctx.timer.name.startswith(PREFIX):
        return
    text = f"reminder: {ctx.timer.data}"
    await ctx.reply(text, template=Template("reminder", [str(ctx.timer.data)]))


@bot.text(Regex(r"(?i)^\s*list\s*$"))
async def pending(ctx: Context) -> None:
    """The pending reminders, by number, the earliest first."""
    reminders = [t for t in ctx.timers.values() if t.name.startswith(PREFIX)]
    if not reminders:
        await ctx.reply("no pending reminders")
        return
    lines = [
        f"{t.name.removeprefix(PREFIX)}) in {_left(t.due - ctx.now)}: {t.data}" for t in reminders
    ]
    await ctx.reply("pending reminders:\n" + "\n".join(lines))


@bot.text(Regex(r"(?i)^\s*cancel\s+(?P<number>\d+)\s*$"))
async def cancel(ctx: Context, number: str) -> None:
    """Cancel reminder ``number``."""
    name = f"{PREFIX}{int(number)}"
    timer = ctx.timers.get(name)
    if timer is None or not ctx.cancel(name):
        await ctx.reply(f"no pending reminder {int(number)}; send list to see them")
        return
    await ctx.reply(f"cancelled reminder {int(number)}: {timer.data}")


@bot.text()
async def help_(ctx: Context) -> None:
    """Anything else: how to use the bot."""
    await ctx.reply(HELP)


def _left(seconds: float) -> str:
    """``4 minutes 30 seconds``-style time left (whole seconds, at least 0)."""
    total = max(0, round(seconds))
    minutes, secs = divmod(total, 60)
    parts = []
    if minutes:
        parts.append(f"{minutes} minute{'' if minutes == 1 else 's'}")
    if secs or not minutes:
        parts.append(f"{secs} second{'' if secs == 1 else 's'}")
    return " ".join(parts)
