"""The ``botkit`` command.

::

    botkit run MODULE[:ATTR]       the production service under uvicorn
    botkit dev MODULE[:ATTR]       local development: emulator, memory store, chat page
    botkit chat MODULE[:ATTR]      talk to a bot in the terminal
    botkit graph MODULE[:ATTR]     draw a bot's flows
    botkit emulator                a standalone Devino emulator
    botkit store migrate MODULE[:ATTR]   move a bot's Redis data to the current store layout

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
from typing import Any

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
    layout = _store_layout_problem(bot, settings)
    if layout:
        return _fail("run", layout)

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


def _store_layout_problem(bot: Bot, settings: Any) -> str | None:
    """Why the bot's Redis store cannot open as it is (an old layout, another shard count).

    None when it can, when there is no Redis, or when Redis does not answer
    now (the service then waits for it, unready).
    """
    if not settings.redis_url:
        return None
    import asyncio

    from botkit.service._app import build_store
    from botkit.storage.base import StorageError
    from botkit.storage.redis import StoreLayoutError

    async def check() -> str | None:
        store = build_store(bot, settings)
        try:
            await store.open()
        except StoreLayoutError as exc:
            return str(exc)
        except StorageError:
            return None
        finally:
            await store.close()
        return None

    return asyncio.run(check())


# -- store -------------------------------------------------------------------


def _store_migrate(args: argparse.Namespace) -> int:
    import asyncio

    from botkit.service._settings import SettingsError, load_settings
    from botkit.storage.base import StorageError
    from botkit.storage.redis import connection
    from botkit.storage.redis.keys import DEFAULT_SHARDS, LAYOUT, Keys
    from botkit.storage.redis.migrate import legacy_data, migrate

    try:
        bot = load_bot(args.target)
        settings = load_settings()
    except (BotLoadError, SettingsError) as exc:
        return _fail("store migrate", str(exc))
    url = settings.secret("redis_url")
    if not url:
        return _fail("store migrate", "BOTKIT_REDIS_URL: required (the Redis to migrate)")

    async def run() -> str:
        client = connection.build_client(
            url, socket_timeout=30.0, connect_timeout=5.0, max_connections=4
        )
        try:
            keys = Keys(settings.key_prefix, bot.name, args.shards or DEFAULT_SHARDS)
            meta: dict[str, str] = await client.hgetall(keys.meta)  # type: ignore[assignment]
            if meta and int(meta.get("layout", 0)) == LAYOUT:
                if args.shards and int(meta["shards"]) != args.shards:
                    raise StorageError(
                        f"the store already has layout {LAYOUT} with {meta['shards']} shards"
                    )
                keys = Keys(settings.key_prefix, bot.name, int(meta["shards"]))
                if not await legacy_data(client, keys):
                    return f"nothing to migrate under {keys.base!r}: already layout {LAYOUT}"
            moved = await migrate(
                client,
                keys,
                conversation_ttl_ms=int(
                    max(settings.conversation_ttl_days * 86_400, settings.session_window) * 1000
                ),
                sent_ttl_ms=int(settings.sent_ttl_days * 86_400_000),
                sent_per_user=settings.sent_per_user,
            )
            return f"moved {moved} under {keys.base!r} to layout {LAYOUT} ({keys.shards} shards)"
        finally:
            await client.aclose()

    try:
        print(f"botkit store migrate: {asyncio.run(run())}")
    except (StorageError, OSError, ValueError) as exc:
        return _fail("store migrate", str(exc))
    except Exception as exc:  # redis-py's errors: say what failed, masked
        return _fail(
            "store migrate",
            f"Redis at {connection.mask(url)} failed: {type(exc).__name__}: {exc}",
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

    store = sub.add_parser("store", help="maintain a bot's Redis store")
    store_sub = store.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    migrate = store_sub.add_parser(
        "migrate",
        help="move the bot's Redis data to the current layout (stop every worker first)",
    )
    migrate.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is (ATTR: bot)")
    migrate.add_argument(
        "--shards", type=_workers, default=None, help="outbox shards of the new layout (256)"
    )
    migrate.set_defaults(handler=_store_migrate)

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
