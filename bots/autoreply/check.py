"""``botkit autoreply check FILE [MESSAGE ...]``: check a rules file, show what it answers.

The file is checked as the service checks it (every problem, one line each,
with its line; exit code 2). A valid file is summarised, and each sample
message is put through the service's own choice (:meth:`Rules.choose`) at
the time given by ``--at`` (default: now), as the first message of a user::

    $ botkit autoreply check rules.toml "how much?" "order #123" hello
    rules.toml: 3 rules; hours in Europe/Moscow; cooldown 4 h; at 2026-12-01 10:00 (open)
      "how much?"  ->  rule at line 40: Our prices: ...
      "order #123" ->  rule at line 44: Order 123: we are checking it ...
      "hello"      ->  default_reply: Thanks for your message! ...

Without messages, the first keyword of each keyword rule and "hello" are tried.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime

from botkit import Bot, Context, ManualClock
from botkit.testing import BotTester
from bots.autoreply.rules import Choice, Rules, RulesError, counted, load_rules

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``check`` command's arguments."""
    parser.add_argument("file", metavar="FILE", help="the rules file to check")
    parser.add_argument(
        "messages",
        metavar="MESSAGE",
        nargs="*",
        help="sample messages to try (default: a keyword of each rule, and 'hello')",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="when the messages arrive, 'YYYY-MM-DD HH:MM' in the rules' time zone (default: now)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Check ``args.file`` and print the answers; return the exit code (0, or 2)."""
    try:
        rules = load_rules(args.file)
    except RulesError as exc:
        for line in str(exc).splitlines():
            print(f"botkit autoreply: {line}", file=sys.stderr)
        return 2
    zone = rules.hours.zone if rules.hours is not None else rules.zone
    try:
        at = datetime.fromisoformat(args.at).replace(tzinfo=zone) if args.at else None
    except ValueError:
        print(f"botkit autoreply: --at {args.at!r} is not 'YYYY-MM-DD HH:MM'", file=sys.stderr)
        return 2
    when = at or datetime.now(zone)
    messages = list(args.messages) or _samples(rules)
    choices = asyncio.run(_choices(rules, messages, when.timestamp()))
    print(_summary(args.file, rules, when))
    width = max(len(_quoted(m)) for m in messages)
    for message, choice in zip(messages, choices, strict=True):
        answer = f"{choice.source}: {choice.text}" if choice.text else f"{choice.source}: (silent)"
        print(f"  {_quoted(message):{width}} ->  {answer}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bots.autoreply.check FILE [MESSAGE ...]``."""
    parser = add_arguments(argparse.ArgumentParser(prog="botkit autoreply check"))
    return run(parser.parse_args(argv))


def _samples(rules: Rules) -> list[str]:
    return [rule.keywords[0] for rule in rules.rules if rule.keywords] + ["hello"]


async def _choices(rules: Rules, messages: list[str], at: float) -> list[Choice]:
    """Each message as a new user's first message, through the rules' own choice."""
    seen: list[Choice] = []
    bot = Bot("autoreply-check")

    @bot.message()
    async def choose(ctx: Context) -> None:
        seen.append(rules.choose(ctx))

    async with BotTester(bot, clock=ManualClock(at, frozen=True)) as tester:
        for index, message in enumerate(messages):
            await tester.send_text(message, user=f"7900000{index:04d}")
    return seen


def _summary(path: str, rules: Rules, when: datetime) -> str:
    parts = [counted(len(rules.rules), "rule")]
    if rules.hours is not None:
        closed = len(rules.hours.closed) + len(rules.hours.closed_yearly)
        parts.append(f"hours in {rules.hours.zone.key}, {counted(closed, 'closed date')}")
    cooldown = rules.cooldown / 3600
    parts.append(f"cooldown {cooldown:g} h" if cooldown else "no cooldown")
    state = "open" if rules.is_open(when.timestamp()) else "closed"
    parts.append(f"at {when:%Y-%m-%d %H:%M} {when.tzname()} ({state})")
    return f"{path}: " + "; ".join(parts)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
