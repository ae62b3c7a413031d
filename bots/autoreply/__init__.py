"""The auto-reply service: a bot whose answers come from a TOML rules file.

::

    BOTKIT_AUTOREPLY_RULES=/etc/botkit/autoreply.toml botkit run bots.autoreply:bot
    botkit dev bots.autoreply:bot     # unset: the example rules beside this file

For each message, in this order:

1. the first ``[[rules]]`` entry whose keywords or regex match the text (or a
   media caption) answers, at any hour;
2. otherwise, outside the business hours of ``[hours]``, ``out_of_hours_reply``;
3. otherwise ``default_reply`` (if the file gives one).

The same auto-reply (the same text) goes to a user at most once per
``cooldown_hours``: within the cooldown the message gets no answer at all,
as a mail auto-responder would do. The times sent are kept in the user's
conversation data, so they hold across restarts and replicas.

The rules are read and checked when the bot is first used (``botkit run``
loads it before serving), so a bad file stops ``botkit run`` before it serves
anything, with one line per problem naming the file and the line. When
``BOTKIT_AUTOREPLY_RULES`` is unset the example file is used (and a warning
says so). While it runs, the service re-reads the file when it changes and on
SIGHUP (:mod:`bots.autoreply.live`); a bad file then keeps the rules in force
and logs one line per problem. ``botkit autoreply check FILE`` checks a file
and shows what sample messages would get. The opt-out plugin is on: "STOP"
silences the service for that user.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from botkit import Bot, Context
from bots.autoreply.live import LiveRules
from bots.autoreply.rules import (
    Choice,
    Rule,
    Rules,
    RulesError,
    load_rules,
    parse_rules,
    reply_key,
)

__all__ = [
    "EXAMPLE_RULES",
    "RULES_ENV",
    "Choice",
    "LiveRules",
    "Rule",
    "Rules",
    "RulesError",
    "active_rules",
    "bot",
    "build_bot",
    "load_rules",
    "parse_rules",
    "rules_path",
]

log = logging.getLogger("bots.autoreply")

RULES_ENV = "BOTKIT_AUTOREPLY_RULES"
EXAMPLE_RULES = Path(__file__).with_name("rules.example.toml")
SENT_KEY = "autoreply_sent"
"""``ctx.data[SENT_KEY]``: when each auto-reply was last sent, ``{reply key: unix time}``."""


def rules_path() -> Path:
    """The rules file to use: ``$BOTKIT_AUTOREPLY_RULES``, else the example file."""
    configured = os.environ.get(RULES_ENV, "").strip()
    if configured:
        return Path(configured)
    log.warning("%s is not set: using the example rules in %s", RULES_ENV, EXAMPLE_RULES)
    return EXAMPLE_RULES


def build_bot(rules: Rules | LiveRules, name: str = "autoreply") -> Bot:
    """A bot answering by ``rules``: the first rule that matches, then hours and the default.

    Given :class:`LiveRules`, it answers by whatever rules are in force at each
    message, and follows their file while it runs (started and stopped with
    the bot).
    """
    live = rules if isinstance(rules, LiveRules) else LiveRules(rules)
    bot = Bot(name, plugins=["optout"])

    @bot.message()
    async def autoreply(ctx: Context) -> None:
        """The first matching rule at any hour; else out of hours or the default reply."""
        current = live.rules
        choice = current.choose(ctx)
        if choice.text:
            await send_once(ctx, choice.text, choice.cooldown, current.longest_cooldown)

    bot.on_startup(live.start)
    bot.on_shutdown(live.stop)
    return bot


async def send_once(ctx: Context, text: str, cooldown: float, forget_after: float) -> bool:
    """Reply ``text`` unless it was sent to this user less than ``cooldown`` seconds ago.

    Records older than ``forget_after`` seconds (the longest cooldown) are
    dropped, so the user's data stays small. Returns True when it replied.
    """
    sent: dict[str, float] = ctx.data.setdefault(SENT_KEY, {})
    for key, at in list(sent.items()):
        if ctx.now - at >= forget_after:
            del sent[key]
    key = reply_key(text)
    last = sent.get(key)
    if last is not None and ctx.now - last < cooldown:
        return False
    await ctx.reply(text)
    if cooldown > 0:
        sent[key] = ctx.now
    return True


_loaded: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # ``bot`` and ``live_rules`` are built on first use, not at import: the
    # ``botkit autoreply check`` command imports this package to check another file.
    if name in ("bot", "live_rules", "active_rules"):
        if not _loaded:
            live = LiveRules.from_file(rules_path())
            _loaded.update(live_rules=live, bot=build_bot(live))
        if name == "active_rules":  # the rules in force now
            return _loaded["live_rules"].rules
        return _loaded[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
