"""The developer commands of ``botkit``: ``chat`` and ``graph``.

``botkit.cli`` calls :func:`register` to add them; each loads the bot the way
``botkit run`` does (``MODULE[:ATTR]``, ``ATTR`` defaults to ``bot``) and
exits 2 with one line per problem when it cannot start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from botkit._bot import Bot
from botkit._compat import SubParsers

__all__ = ["register"]

LoadBot = Callable[[str], Bot]
Fail = Callable[[str, str], int]


def register(sub: SubParsers[argparse.ArgumentParser], load_bot: LoadBot, fail: Fail) -> None:
    """Add the ``chat`` and ``graph`` subcommands to the ``botkit`` parser.

    ``load_bot(target)`` returns the Bot (or raises ``BotLoadError``);
    ``fail(command, message)`` prints the message and returns exit code 2.
    """
    chat = sub.add_parser(
        "chat",
        help="talk to a bot in the terminal (in-process, no provider, no server)",
        description="Talk to a bot in the terminal, as one user. The bot runs in this process "
        "on the memory store with a clock you can move; nothing is sent anywhere. "
        "Type messages; /help lists the commands (/media, /location, /contact, /send, "
        "/state, /wait HOURS, /quit).",
    )
    chat.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is (ATTR: bot)")
    chat.add_argument(
        "--as",
        dest="number",
        default="79031234567",
        metavar="NUMBER",
        help="the user's phone number, in international format",
    )
    chat.add_argument("--no-color", action="store_true", help="plain output, no ANSI colours")
    chat.add_argument(
        "--traceback",
        action="store_true",
        help="print the full traceback when a handler fails (otherwise one line: the "
        "exception and where it was raised)",
    )
    chat.set_defaults(handler=lambda args: _chat(args, load_bot, fail))

    graph = sub.add_parser(
        "graph",
        help="draw a bot's flows (Mermaid text, or svg/png with Graphviz)",
        description="Draw each Flow of a bot from its real definition: states, the triggers "
        "that move between them, the initial and final states. Mermaid text needs nothing "
        "more; svg and png need the [graph] extra (pip install 'botkit[graph]', or in a checkout "
        "pip install -e '.[graph]') and Graphviz's dot program.",
    )
    graph.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is (ATTR: bot)")
    graph.add_argument(
        "--format",
        "-f",
        dest="fmt",
        choices=["mermaid", "svg", "png"],
        default="mermaid",
        help="mermaid (text), svg or png",
    )
    graph.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here instead of stdout; with several flows, FILE-<flow>.<ext> each",
    )
    graph.add_argument("--flow", metavar="NAME", help="draw only this flow")
    graph.set_defaults(handler=lambda args: _graph(args, load_bot, fail))


# -- chat --------------------------------------------------------------------


def _chat(args: argparse.Namespace, load_bot: LoadBot, fail: Fail) -> int:
    from botkit._plugins import UnknownPlugin
    from botkit.devino.errors import InvalidPhoneNumber
    from botkit.devino.validation import normalize_phone
    from botkit.devtools._chat import run_chat
    from botkit.service import BotLoadError

    try:
        user = normalize_phone(args.number)
    except InvalidPhoneNumber as exc:
        return fail("chat", f"--as {args.number}: {exc}")
    try:
        bot = load_bot(args.target)
        return run_chat(
            bot, user, color=False if args.no_color else None, tracebacks=args.traceback
        )
    except (BotLoadError, UnknownPlugin) as exc:
        return fail("chat", str(exc))


# -- graph -------------------------------------------------------------------


def _graph(args: argparse.Namespace, load_bot: LoadBot, fail: Fail) -> int:
    from botkit.devtools._graph import GraphUnavailable, bot_flows, mermaid, render
    from botkit.service import BotLoadError

    try:
        bot = load_bot(args.target)
    except BotLoadError as exc:
        return fail("graph", str(exc))
    flows = bot_flows(bot)
    if args.flow is not None:
        flows = [f for f in flows if f.name == args.flow]
        if not flows:
            known = ", ".join(f.name for f in bot_flows(bot)) or "none"
            return fail("graph", f"bot {bot.name!r} has no flow {args.flow!r} (its flows: {known})")
    if not flows:
        return fail("graph", f"bot {bot.name!r} has no flows to draw")
    binary = args.fmt == "png"
    if binary and args.output is None and sys.stdout.isatty():
        return fail("graph", "png is binary: give -o FILE (or redirect stdout)")
    drawn: list[tuple[str, bytes]] = []
    try:
        for flow in flows:
            data = mermaid(flow).encode() if args.fmt == "mermaid" else render(flow, args.fmt)
            drawn.append((flow.name, data))
    except GraphUnavailable as exc:
        return fail("graph", f"--format {args.fmt}: {exc}")
    if args.output is None:
        out = sys.stdout.buffer
        for index, (name, data) in enumerate(drawn):
            if args.fmt == "mermaid" and len(drawn) > 1:
                out.write(("\n" if index else "").encode() + f"%% flow {name}\n".encode())
            out.write(data)
        out.flush()
        return 0
    target = Path(args.output)
    try:
        for name, data in drawn:
            path = target if len(drawn) == 1 else target.with_stem(f"{target.stem}-{name}")
            path.write_bytes(data)
            print(f"botkit graph: flow {name} → {path}", file=sys.stderr)
    except OSError as exc:
        return fail("graph", f"cannot write {exc.filename}: {exc.strerror}")
    return 0
