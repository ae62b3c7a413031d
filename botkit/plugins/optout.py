"""The opt-out plugin: "STOP" unsubscribes a user from the bot, "START" brings them back.

Enable it by name; it is installed through the ``botkit.plugins`` entry point
(``optout = "botkit.plugins.optout:plugin"`` in ``pyproject.toml``)::

    bot = Bot("pizza", plugins=["optout"])      # or BOTKIT_PLUGINS=optout

What the user sees:

- ``STOP`` (any case, surrounding spaces ignored) gets one confirmation, then
  nothing more: no reply from any handler, no ``bot.send``, no ``/api/send``
  (those raise :class:`~botkit.OptedOut`; the API answers 409
  ``{"error": "opted_out"}``). A flow the user was in is left.
- ``STOP`` again while opted out gets nothing (no second confirmation).
- ``START`` while opted out opts back in and confirms. ``START`` from a user
  who never opted out is not ours: it goes on to the bot's own handlers.

How it works: plugin handlers run before the bot's own, so this router sees
every message first. The reply policy already drops any reply to an opted-out
user; on top of that, a catch-all handler takes every other message of an
opted-out user and does nothing, so the bot's handlers do not even run for
them (no flow moves, no order is placed, no side effect happens for a user
who asked to be left alone). Delivery status callbacks still reach the bot.
"""

from __future__ import annotations

from botkit import Context, Plugin, Predicate, Router, SkipHandler, Text

STOP_WORDS = ("stop",)
START_WORDS = ("start",)
STOPPED = "You have unsubscribed and will get no more messages from us. Send START to come back."
STARTED = "Welcome back! You will get our messages again. Send STOP to unsubscribe."


def make_router(
    *,
    stop_words: tuple[str, ...] = STOP_WORDS,
    start_words: tuple[str, ...] = START_WORDS,
    stopped: str = STOPPED,
    started: str = STARTED,
) -> Router:
    """A fresh opt-out router; change the words or the confirmations here.

    Words match the whole message, case-insensitively (``Text``). Register it
    yourself with ``bot.include_router(make_router(...))`` *before* your own
    handlers, or use the plugin (which always comes first).
    """
    router = Router("optout")

    @router.text(Text(*stop_words))
    async def stop(ctx: Context) -> None:
        """Opt the user out, confirming once."""
        if ctx.opted_out:
            return  # already out: one confirmation is enough
        await ctx.flow.finish()
        # The reply is planned now, while the user may still be written to;
        # it leaves when the turn commits, opt-out included.
        await ctx.reply(stopped)
        ctx.opt_out()

    @router.text(Text(*start_words))
    async def start(ctx: Context) -> None:
        """Opt the user back in and confirm; from a subscribed user, let the bot have it."""
        if not ctx.opted_out:
            raise SkipHandler
        ctx.opt_in()
        await ctx.reply(started)

    @router.message(Predicate(lambda _message, ctx: ctx.opted_out))
    async def muted(ctx: Context) -> None:
        """Take any other message of an opted-out user, so no bot handler runs for it."""

    return router


def plugin() -> Plugin:
    """The entry point: each bot that enables ``optout`` gets its own router."""
    return Plugin(router=make_router(), name="optout")
