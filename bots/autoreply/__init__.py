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

The rules are read and checked when this module is imported, so a bad file
stops ``botkit run`` before it serves anything, with one line per problem
naming the file and the line. When ``BOTKIT_AUTOREPLY_RULES`` is unset the
example file is used (and a warning says so). The opt-out plugin is on:
"STOP" silences the service for that user.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from botkit import Bot, Context
from bots.autoreply.rules import Rule, Rules, RulesError, load_rules, parse_rules, reply_key

__all__ = [
    "EXAMPLE_RULES",
    "RULES_ENV",
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


def build_bot(rules: Rules, name: str = "autoreply") -> Bot:
    """A bot answering by ``rules``: one handler per rule, then hours and the default."""
    bot = Bot(name, plugins=["optout"])
    longest = rules.longest_cooldown

    def answer_with(rule: Rule) -> None:
        cooldown = rules.cooldown if rule.cooldown is None else rule.cooldown

        async def answer(ctx: Context) -> None:
            groups = ctx.match.groupdict() if ctx.match is not None else {}
            await send_once(ctx, rule.render(groups), cooldown, longest)

        answer.__qualname__ = answer.__name__ = rule.name
        bot.message(rule.filter)(answer)

    for rule in rules.rules:
        answer_with(rule)

    @bot.message()
    async def no_rule_matched(ctx: Context) -> None:
        """Out of hours: the out-of-hours reply; in hours: the default reply, if any."""
        text = rules.default_reply if rules.is_open(ctx.now) else rules.out_of_hours_reply
        if text:
            await send_once(ctx, text, rules.cooldown, longest)

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


#: The rules in use, checked: importing this module fails on a bad file.
active_rules = load_rules(rules_path())
bot = build_bot(active_rules)
