"""Talk to a bot in the terminal (``botkit chat MODULE[:ATTR] [--as NUMBER]``).

The bot runs in this process, turn by turn, exactly as the web service runs
it (:class:`~botkit.testing.BotTester`: the memory store and a clock you can
move), so nothing is sent anywhere and no provider account is needed::

    $ botkit chat bots.pizza --as 79031234567
    you: hi
    bot: What would you like? Answer with a number: ...
      · entered flow order at menu

A line is sent as a text message; these commands send other kinds of
message or look inside (``/help`` lists them)::

    /media URL TYPE [CAPTION]   a picture, video, document... (TYPE: image/jpeg, ...)
    /location LAT LON [NAME]    a shared location
    /contact NAME PHONE         a contact card
    /send TEXT                  the bot writes to you unprompted (bot.send)
    /state                      flow, state, ctx.data and the 24-hour window
    /wait HOURS                 move the clock forward (window, flow timeouts, timers)
    /quit                       leave (Ctrl-D too)

Any other ``/word`` is sent to the bot as text, for bots with commands of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from botkit._bot import Bot
from botkit._clock import ManualClock
from botkit._events import EventKind
from botkit._outbound import OutboundMessage, SendMode
from botkit._policy import DeliveryRefused
from botkit._turn import Outcome, TurnOutcome
from botkit._where import raised_at
from botkit.service._logs import configure_logging
from botkit.testing import BotTester, Replies

__all__ = ["HELP", "TerminalChat", "run_chat"]

DEFAULT_NUMBER = "79031234567"

HELP = """\
Type a message and press Enter to send it as text. Commands:
  /media URL TYPE [CAPTION]  send media, e.g. /media https://example.com/a.jpg image/jpeg
  /location LAT LON [NAME]   send a location, e.g. /location 55.75 37.62
  /contact NAME PHONE        send a contact card, e.g. /contact Ann 79035551234
  /send TEXT                 the bot writes to you unprompted, as bot.send() would
  /state                     your flow and state, ctx.data and the 24-hour window
  /wait HOURS                move the clock forward, e.g. /wait 25 closes the window;
                             timers that came due fire (/wait 0.5: half an hour)
  /help                      this list
  /quit                      leave (Ctrl-D too)
Any other /word goes to the bot as text."""


@dataclass(frozen=True, slots=True)
class _Style:
    """ANSI colours, or none (not a terminal, NO_COLOR set, or --no-color)."""

    on: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text

    def bot(self, text: str) -> str:
        return self._wrap("32", text)

    def note(self, text: str) -> str:
        return self._wrap("2", text)

    def error(self, text: str) -> str:
        return self._wrap("31", text)

    def template(self, text: str) -> str:
        return self._wrap("35", text)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    minutes = int(abs(seconds) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


def _flow_state(stored: str | None) -> tuple[str | None, str | None]:
    if not stored:
        return None, None
    flow, _, state = stored.partition(":")
    return flow, state


def describe_state_change(before: str | None, after: str | None) -> str | None:
    """A line for a stored state that moved (``flow order: menu → size``), or None.

    ``before`` and ``after`` are stored states, ``"<flow>:<state>"`` or None.
    """
    if before == after:
        return None
    (old_flow, old_state), (new_flow, new_state) = _flow_state(before), _flow_state(after)
    if old_flow == new_flow:
        return f"flow {new_flow}: {old_state} → {new_state}"
    parts = []
    if old_flow is not None:
        parts.append(f"left flow {old_flow} (was at {old_state})")
    if new_flow is not None:
        parts.append(f"entered flow {new_flow} at {new_state}")
    return "; ".join(parts)


class TerminalChat:
    """One terminal conversation with ``bot`` as ``user``; :meth:`handle` takes a typed line.

    Output goes to ``out`` (a text stream). The bot runs in-process under a
    :class:`~botkit.testing.BotTester` with a running :class:`ManualClock`.
    """

    def __init__(
        self,
        bot: Bot,
        user: str = DEFAULT_NUMBER,
        *,
        out: TextIO | None = None,
        color: bool = False,
        tracebacks: bool = False,
    ) -> None:
        self.bot = bot
        self.tracebacks = tracebacks
        self.user = user
        self.out = out or sys.stdout
        self.style = _Style(color)
        self.clock = ManualClock()
        self.tester = BotTester(bot, user=user, clock=self.clock, raise_errors=False)
        self._commands: dict[str, Callable[[list[str], str], object]] = {
            "/media": self._media,
            "/location": self._location,
            "/contact": self._contact,
            "/send": self._send,
            "/state": self._state,
            "/wait": self._wait,
            "/help": self._help,
        }

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start the bot (its start-up hooks run) and print the greeting."""
        await self.tester.start()
        self._print(
            self.style.note(
                f"botkit chat: bot {self.bot.name!r}, you are +{self.user} "
                "(in-process, memory store: nothing is sent anywhere).\n"
                "Type a message; /help lists the commands, /quit leaves."
            )
        )

    async def stop(self) -> None:
        """Stop the bot (its shutdown hooks run)."""
        await self.tester.stop()

    # -- input -------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Act on one typed line; False when the user asked to leave."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        command = word.lower()
        if command in ("/quit", "/exit", "/q"):
            return False
        await self._fire_due()  # timers that came due while you typed
        action = self._commands.get(command)
        if action is None:
            await self._turn(self.tester.send_text(line))
            return True
        try:
            args = shlex.split(rest)
        except ValueError as exc:
            self._print(self.style.error(f"! {exc}"))
            return True
        result = action(args, rest.strip())
        if asyncio.iscoroutine(result):
            await result
        return True

    async def _media(self, args: list[str], rest: str) -> None:
        if len(args) < 2:
            self._usage("/media URL TYPE [CAPTION]", "/media https://example.com/a.jpg image/jpeg")
            return
        url, mime_type, caption = args[0], args[1], " ".join(args[2:]) or None
        name = url.rstrip("/").rsplit("/", 1)[-1] or None
        await self._turn(self.tester.send_media(url, mime_type, name=name, caption=caption))

    async def _location(self, args: list[str], rest: str) -> None:
        try:
            latitude, longitude = float(args[0]), float(args[1])
        except (IndexError, ValueError):
            self._usage("/location LAT LON [NAME]", "/location 55.75 37.62 Red Square")
            return
        name = " ".join(args[2:]) or None
        await self._turn(self.tester.send_location(latitude, longitude, name=name))

    async def _contact(self, args: list[str], rest: str) -> None:
        if len(args) < 2:
            self._usage("/contact NAME PHONE", "/contact Ann 79035551234")
            return
        name, phone = " ".join(args[:-1]), args[-1]
        await self._turn(self.tester.send_contacts((name, phone)))

    async def _send(self, args: list[str], rest: str) -> None:
        if not rest:
            self._usage("/send TEXT", "/send Your order is ready")
            return
        try:
            await self.tester.runtime.send(self.user, rest)
        except DeliveryRefused as refused:
            self._print(self.style.error(f"! not sent: {refused}"))
            return
        self._replies(await self.tester.sent())

    async def _state(self, args: list[str], rest: str) -> None:
        conversation = await self.tester.conversation()
        flow_name, state = _flow_state(conversation.state)
        now = self.clock.now()
        lines = []
        if flow_name is None:
            lines.append("flow    none")
        else:
            allowed: Sequence[str] = ()
            flow = self.bot.flows.get(flow_name)
            if flow is not None and state is not None:
                allowed = flow.allowed_triggers(state)
            triggers = ", ".join(allowed) or "none"
            lines.append(f"flow    {flow_name}, state {state}  (triggers: {triggers})")
        data = json.dumps(conversation.data, ensure_ascii=False, sort_keys=True, default=str)
        lines.append(f"data    {data}")
        lines.append(f"window  {self._window_text(conversation.last_inbound, now)}")
        for timer in sorted(conversation.timers.values(), key=lambda t: t.due):
            when = f"{_when(timer.due)} (in {_duration(max(0.0, timer.due - now))})"
            lines.append(f"timer   {timer.name} at {when}")
        if self.clock.offset:
            lines.append(
                f"clock   {_when(now)} ({_duration(self.clock.offset)} ahead of real time)"
            )
        for text in lines:
            self._print(self.style.note(f"  {text}"))

    def _window_text(self, last_inbound: float | None, now: float) -> str:
        window = self.tester.runtime.policy.window
        closes = window.closes_at(last_inbound)
        if closes is None:
            return "never opened (you have not written yet): only templates can be sent"
        if now < closes:
            return f"open, closes {_when(closes)} (in {_duration(closes - now)})"
        fallback = self.tester.runtime.policy.default_template
        then = (
            f"replies go as template {fallback.id}"
            if fallback
            else "replies need template=... (no default_template)"
        )
        return f"closed since {_when(closes)}: {then} until you write again"

    async def _wait(self, args: list[str], rest: str) -> None:
        try:
            hours = float(args[0])
            if hours <= 0:
                raise ValueError
        except (IndexError, ValueError):
            self._usage("/wait HOURS", "/wait 25")
            return
        now = self.clock.advance(hours=hours)
        self._print(self.style.note(f"  · the clock moved {args[0]} h forward, to {_when(now)}"))
        await self._fire_due()

    async def _fire_due(self) -> None:
        """Run the timers due by now and show what they sent (as the bot's messages)."""
        before = (await self.tester.conversation()).state
        replies = await self.tester.fire_timers()
        if self.tester.last is not None and self.tester.last.kind is EventKind.TIMER:
            error = self.tester.last.error
            if error is not None and not self.tester.last.error_handled:
                self._print(self.style.error(f"! a timer handler failed: {error!r}"))
        if replies:
            self._print(self.style.note("  · timers fired:"))
            self._replies(replies)
        change = describe_state_change(before, (await self.tester.conversation()).state)
        if change:
            self._print(self.style.note(f"  · {change}"))

    def _help(self, args: list[str], rest: str) -> None:
        self._print(self.style.note(HELP))

    # -- output ------------------------------------------------------------------

    async def _turn(self, sending: Awaitable[Replies]) -> None:
        before = (await self.tester.conversation()).state
        replies = await sending
        outcome: TurnOutcome | None = self.tester.last
        self._replies(replies)
        if outcome is None:
            return
        change = describe_state_change(before, outcome.state)
        if change:
            self._print(self.style.note(f"  · {change}"))
        if outcome.outcome is Outcome.UNHANDLED:
            self._print(self.style.note(f"  · no handler took this {outcome.kind} message"))
        elif outcome.error is not None:
            what = f"{type(outcome.error).__name__}: {outcome.error} at {raised_at(outcome.error)}"
            where = f"handler {outcome.handler}" if outcome.handler else "the turn"
            if outcome.error_handled:
                self._print(self.style.note(f"  · {where} raised {what}; an error handler took it"))
            else:
                self._print(self.style.error(f"! {where} raised {what} (nothing was saved)"))
            if self.tracebacks:
                trace = "".join(traceback.format_exception(outcome.error)).rstrip("\n")
                self._print(self.style.note(trace))
        for refused in outcome.refused:
            self._print(self.style.error(f"! not sent: {refused}"))

    def _replies(self, replies: Sequence[OutboundMessage]) -> None:
        for message in replies:
            self._print(self._render(message))

    def _render(self, message: OutboundMessage) -> str:
        if message.mode is SendMode.TEMPLATE and message.template is not None:
            template = message.template
            params = " ".join(template.params.values())
            body = self.style.template(f"[template {template.id}{' ' + params if params else ''}]")
        elif message.mode is SendMode.MEDIA and message.media is not None:
            media = message.media
            body = f"[{media.kind.value} {media.url}]" + (
                f" {message.text}" if message.text else ""
            )
        else:
            body = message.text or ""
        lines = body.splitlines() or [""]
        head = self.style.bot("bot: ")
        return "\n".join([head + lines[0], *("     " + line for line in lines[1:])])

    def _usage(self, usage: str, example: str) -> None:
        self._print(self.style.error(f"! usage: {usage}   e.g. {example}"))

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def run_chat(
    bot: Bot, user: str = DEFAULT_NUMBER, *, color: bool | None = None, tracebacks: bool = False
) -> int:
    """Run the interactive chat on stdin/stdout until /quit, Ctrl-D or Ctrl-C; return 0.

    A failed handler is one line (the exception and where it was raised);
    ``tracebacks`` adds the full traceback under it.
    """
    # The chat reports each turn itself; the log keeps warnings from the bot's
    # own code and libraries, not the turn's log line for the same failure.
    configure_logging("console", "WARNING")
    logging.getLogger("botkit.turn").setLevel(logging.CRITICAL)
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    prompt = "\x1b[1myou: \x1b[0m" if color else "you: "
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        else:  # readline must be told which prompt bytes take no room on screen
            prompt = "\x01\x1b[1m\x02you: \x01\x1b[0m\x02" if color else prompt
    chat = TerminalChat(bot, user, color=color, tracebacks=tracebacks)
    with asyncio.Runner() as runner:
        runner.run(chat.start())
        try:
            while True:
                try:
                    line = input(prompt)
                except EOFError:
                    print(file=sys.stdout)
                    break
                if not interactive:  # piped in: show what was "typed", for a readable log
                    print(line, flush=True)
                if not runner.run(chat.handle(line)):
                    break
        except KeyboardInterrupt:
            print(file=sys.stdout)
        finally:
            runner.run(chat.stop())
    return 0
