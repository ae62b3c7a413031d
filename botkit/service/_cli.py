"""The ``botkit`` command.

::

    botkit run MODULE[:ATTR]       the production service under uvicorn
    botkit dev MODULE[:ATTR]       local development: emulator, memory store, chat page
    botkit chat MODULE[:ATTR]      talk to a bot in the terminal
    botkit graph MODULE[:ATTR]     draw a bot's flows
    botkit emulator                a standalone Devino emulator

``ATTR`` defaults to ``bot``; the current directory is on the import path.
Exit code 2 means the command could not start (bad arguments, a module that
does not import, missing settings), with one clear line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence

from botkit._bot import Bot

TARGET_ENV = "BOTKIT_TARGET"


class BotLoadError(Exception):
    """``MODULE[:ATTR]`` does not lead to a Bot; the message says why."""


def load_bot(target: str) -> Bot:
    """Import ``MODULE[:ATTR]`` (ATTR defaults to ``bot``) and return the Bot there."""
    module_name, _, attr = target.partition(":")
    attr = attr or "bot"
    if not module_name:
        raise BotLoadError(f"{target!r} is not MODULE[:ATTR], e.g. bots.echo:bot")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise BotLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise BotLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(found, Bot):
        raise BotLoadError(f"{module_name}:{attr} is a {type(found).__name__}, not a botkit.Bot")
    return found


def _fail(command: str, message: str) -> int:
    for line in message.splitlines():
        print(f"botkit {command}: {line}", file=sys.stderr)
    return 2


# -- run ---------------------------------------------------------------------


def service_app() -> object:
    """The application factory uvicorn's workers call (``botkit run``)."""
    from botkit.service._app import create_app
    from botkit.service._logs import configure_logging
    from botkit.service._serving import tune_gc
    from botkit.service._settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(load_bot(os.environ[TARGET_ENV]), settings)
    tune_gc()
    return app


def _run(args: argparse.Namespace) -> int:
    from botkit.service._settings import GENERATE_SECRET, SettingsError, load_settings

    try:
        bot = load_bot(args.target)
        settings = load_settings()
    except (BotLoadError, SettingsError) as exc:
        return _fail("run", str(exc))
    problems = []
    if not settings.webhook_token:
        problems.append(
            "BOTKIT_WEBHOOK_TOKEN: required (the secret in the webhook URLs); "
            f"generate one with: {GENERATE_SECRET}"
        )
    if not settings.callback_secret and not settings.redis_url:
        problems.append(
            "BOTKIT_CALLBACK_SECRET: required without BOTKIT_REDIS_URL (the key that signs "
            "status callbacks; with Redis one is created and shared); "
            f"generate one with: {GENERATE_SECRET}"
        )
    problems.extend(settings.weak_secrets())
    if not settings.devino_api_key and not settings.devino_login:
        problems.append("BOTKIT_DEVINO_API_KEY: required (or BOTKIT_DEVINO_LOGIN and _PASSWORD)")
    if not (bot.sender or settings.sender):
        problems.append("BOTKIT_SENDER: required (the sender name), or Bot(sender=...)")
    if args.workers > 1 and not settings.redis_url:
        problems.append(
            f"--workers {args.workers} needs BOTKIT_REDIS_URL: without Redis each worker "
            "would keep its own conversations and outbox; use one worker or set Redis"
        )
    if problems:
        return _fail("run", "\n".join(problems))

    import uvicorn

    os.environ[TARGET_ENV] = args.target
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="botkit-metrics-")
    uvicorn.run(
        "botkit.service._cli:service_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )
    return 0


# -- dev ---------------------------------------------------------------------


def _dev(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from botkit.devtools._server import create_dev_app
    from botkit.service._logs import configure_logging
    from botkit.service._serving import run_app
    from botkit.service._settings import SettingsError

    try:
        bot = load_bot(args.target)
        server = create_dev_app(bot, host=args.host, port=args.port)
    except (BotLoadError, SettingsError) as exc:
        return _fail("dev", str(exc))
    configure_logging("console", "INFO")

    def started(_: str) -> None:
        print(server.banner(), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_app(
                server.app,
                args.host,
                int(server.base_url.rsplit(":", 1)[1]),
                log_level="warning",
                on_started=started,
            )
        )
    return 0


# -- the parser --------------------------------------------------------------


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if workers < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return workers


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="botkit", description="WhatsApp chatbots on the Devino WhatsApp API."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a bot as a production service under uvicorn")
    run.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is (ATTR: bot)")
    run.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    run.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    run.add_argument(
        "--workers", type=_workers, default=1, help="worker processes (1; >1 needs Redis)"
    )
    run.set_defaults(handler=_run)

    dev = sub.add_parser(
        "dev", help="run a bot locally: provider emulator, memory store, chat page at /_dev"
    )
    dev.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is (ATTR: bot)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    dev.add_argument("--port", type=_port, default=8000, help="port to listen on (8000; 0 = free)")
    dev.set_defaults(handler=_dev)

    emulator = sub.add_parser("emulator", help="run a standalone Devino emulator", add_help=False)
    emulator.add_argument("rest", nargs=argparse.REMAINDER)
    emulator.set_defaults(handler=None)

    _add_devtools(sub)
    return parser


def _add_devtools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from botkit.devtools import _commands as commands
    except ImportError:
        return
    commands.register(sub, load_bot, _fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``botkit`` command; return its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        from botkit.devtools.emulator import main as emulator_main

        return emulator_main(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
