"""The ``botkit`` command.

::

    botkit run MODULE[:ATTR]       the production service under uvicorn
    botkit dev MODULE[:ATTR]       local development: emulator, memory store, chat page
    botkit chat MODULE[:ATTR]      talk to a bot in the terminal
    botkit graph MODULE[:ATTR]     draw a bot's flows
    botkit emulator                a standalone Devino emulator
    botkit store migrate MODULE[:ATTR]   move a bot's Redis data to the current store layout
    botkit campaign start|status|pause|resume|cancel|report   campaigns (in Redis)

``ATTR`` defaults to ``bot``; the current directory is on the import path.
Every error a user can cause is one line on stderr per problem (no
traceback) and a documented exit code:

* 0: stopped cleanly (Ctrl-C, SIGTERM);
* 2: could not start: bad arguments, a target that is not a bot, a missing
  or invalid setting;
* 3: could not serve: the address is in use or cannot be listened on, or the
  app's start-up failed (its log says why).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import socket
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from typing import Any

from botkit._bot import Bot
from botkit._compat import SubParsers
from botkit._errors import BotkitError
from botkit.service._target import BotLoadError, load_bot

TARGET_ENV = "BOTKIT_TARGET"
"""``botkit run``'s target when the command line gives none (a container's image sets it)."""
PORT_ENV = "BOTKIT_PORT"
"""``botkit run``'s ``--port`` when the command line gives none; a container's health check
reads the same variable, so the two cannot disagree."""

SERVICE_APP = "botkit.cli:service_app"
"""The app factory each ``botkit run`` worker serves."""
GRACE_SECONDS = 15
"""How long a stopping worker lets requests and turns in flight finish."""

EXIT_OK = 0
EXIT_CANNOT_START = 2
"""Bad arguments, a target that is not a bot, a missing or invalid setting."""
EXIT_CANNOT_SERVE = 3
"""The address cannot be listened on, or the app's start-up failed (as uvicorn's own 3)."""


def _fail(command: str, message: str, code: int = EXIT_CANNOT_START) -> int:
    for line in message.splitlines():
        print(f"botkit {command}: {line}", file=sys.stderr)
    return code


class ListenError(BotkitError, OSError):
    """``host:port`` cannot be listened on; the message says why and what to do."""


def check_listen(host: str, port: int) -> None:
    """Raise :class:`ListenError` unless a server could listen on ``host:port`` now.

    Checked before the server starts, so a taken port is one clear line
    instead of uvicorn's log and a traceback. Port 0 (any free) always passes.
    """
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: unknown address ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port in TIME_WAIT after a restart is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "the port is already in use (another server? choose one with --port)"
            elif exc.errno == errno.EADDRNOTAVAIL:
                why = "this machine has no such address (--host)"
            elif exc.errno == errno.EACCES:
                why = "permission denied (ports below 1024 need privileges; use --port 8000)"
            else:
                why = exc.strerror or str(exc)
            raise ListenError(f"cannot listen on {where}: {why}") from None


# -- run ---------------------------------------------------------------------


def service_app() -> object:
    """The application factory uvicorn's workers call (``botkit run``)."""
    from botkit.service._app import create_app
    from botkit.service._logs import configure_logging
    from botkit.service._serving import tune_gc
    from botkit.service._settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(load_bot(os.environ[TARGET_ENV]), settings, watch_signals=True)
    tune_gc()
    return app


def _run(args: argparse.Namespace) -> int:
    from botkit.service._settings import GENERATE_SECRET, SettingsError, load_settings

    if not args.target:
        return _fail("run", f"give the bot as MODULE[:ATTR] (e.g. mybot:bot) or set {TARGET_ENV}")
    if args.port is None:  # not on the command line: BOTKIT_PORT, else 8000
        try:
            args.port = _port(os.environ.get(PORT_ENV) or "8000")
        except argparse.ArgumentTypeError as exc:
            return _fail("run", f"{PORT_ENV}: {exc}")
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
    if not settings.for_bot(bot).sender:
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
        # The store does not know the target; the command it names needs it.
        migrate = "`botkit store migrate`"
        return _fail("run", layout.replace(migrate, f"`botkit store migrate {args.target}`"))
    try:
        check_listen(args.host, args.port)
    except ListenError as exc:
        return _fail("run", str(exc), EXIT_CANNOT_SERVE)

    import uvicorn

    from botkit.service._logs import configure_logging

    # This process logs too: with --workers N it is the workers' supervisor (the
    # address it listens on, workers started, restarted or lost), and those
    # lines must be in the operator's format (JSON for a log collector).
    configure_logging(settings.log_format, settings.log_level)
    os.environ[TARGET_ENV] = args.target
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "factory": True,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": GRACE_SECONDS,
    }
    # SIGHUP asks a bot to re-read what it can (the auto-reply service's rules);
    # a bot that takes no SIGHUP ignores it rather than ending.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.workers == 1:
        uvicorn.run(SERVICE_APP, **options)
        return EXIT_OK
    from botkit.service._supervisor import Supervisor

    with contextlib.ExitStack() as cleanup:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # The workers' shared metrics files: ours, so removed when the command ends.
            folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="botkit-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        return Supervisor(SERVICE_APP, options, args.workers, grace=GRACE_SECONDS).run()


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

    from redis.asyncio.cluster import RedisCluster

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
            layout = int(meta.get("layout", 0)) if meta else None
            if meta:
                if args.shards and int(meta["shards"]) != args.shards:
                    raise StorageError(
                        f"the store already has layout {layout} with {meta['shards']} shards"
                    )
                keys = Keys(settings.key_prefix, bot.name, int(meta["shards"]))
            # The first layout (no meta key) never ran on Redis Cluster: its scripts crossed slots.
            if isinstance(client, RedisCluster):
                if layout is None:
                    return "nothing to migrate: botkit's first layout never ran on Redis Cluster"
                if layout == LAYOUT:
                    return f"nothing to migrate under {keys.base!r}: already layout {LAYOUT}"
            elif layout == LAYOUT and not await legacy_data(client, keys):
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
    from botkit.service._serving import ServingError, run_app
    from botkit.service._settings import SettingsError

    try:
        bot = load_bot(args.target)
    except BotLoadError as exc:
        return _fail("dev", str(exc))
    try:
        check_listen(args.host, args.port)
    except ListenError as exc:
        return _fail("dev", str(exc), EXIT_CANNOT_SERVE)
    try:
        server = create_dev_app(bot, host=args.host, port=args.port)
    except SettingsError as exc:
        return _fail("dev", str(exc))
    # The operator's log settings (BOTKIT_LOG_FORMAT, BOTKIT_LOG_LEVEL) hold in dev too.
    configure_logging(server.settings.log_format, server.settings.log_level)

    def started(_: str) -> None:
        print(server.banner(), flush=True)

    try:
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
    except ServingError as exc:
        return _fail("dev", str(exc), EXIT_CANNOT_SERVE)
    return EXIT_OK


def _emulator(args: argparse.Namespace) -> int:
    from botkit.devtools.emulator import serve_from_args

    try:
        check_listen(args.host, args.port)
    except ListenError as exc:
        return _fail("emulator", str(exc), EXIT_CANNOT_SERVE)
    return serve_from_args(args, lambda message, code: _fail("emulator", message, code))


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


class _HelpFormatter(argparse.HelpFormatter):
    """Descriptions keep their paragraphs; an option's help shows its default."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(part, width, initial_indent=indent, subsequent_indent=indent)
            for part in text.split("\n\n")
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS
        # A help text that explains its default itself (an environment variable's
        # value may be a secret) keeps it unsaid.
        if not hidden and default != [] and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: what is wrong and where to look."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse types it NoReturn
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_CANNOT_START)


TARGET_HELP = "where the Bot is: a module (file or package) and its attribute, bot if omitted"


def _parser() -> argparse.ArgumentParser:
    from botkit import __version__
    from botkit.devtools.emulator import add_arguments

    parser: argparse.ArgumentParser = _Parser(
        prog="botkit",
        description="WhatsApp chatbots on the Devino WhatsApp API.",
        epilog="Exit codes: 0 stopped cleanly; 2 could not start (bad arguments, target or "
        "settings); 3 could not serve (address in use, start-up failed). "
        "'botkit COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"botkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a bot as a production service under uvicorn",
        description="Serve a bot in production: the provider's webhooks, POST /api/send, "
        "/healthz, /readyz and /metrics, under uvicorn.\n\n"
        "Settings come from BOTKIT_* variables (and .env): BOTKIT_WEBHOOK_TOKEN, "
        "BOTKIT_DEVINO_API_KEY and BOTKIT_SENDER are required, BOTKIT_REDIS_URL as soon as "
        "there is more than one worker. A missing or invalid setting stops it before it "
        "serves, one line per problem.\n\n"
        "Signals: SIGHUP is passed on to every worker, which keeps running (a bot that "
        "re-reads something on SIGHUP does so in place); SIGTERM or Ctrl-C stops the workers "
        "gracefully; a worker that dies is replaced.\n\n"
        "example: botkit run mybot --port 8000 --workers 2",
    )
    run.add_argument(
        "target",
        metavar="MODULE[:ATTR]",
        nargs="?",
        default=os.environ.get(TARGET_ENV) or None,
        help=f"{TARGET_HELP} (default: ${TARGET_ENV})",
    )
    run.add_argument("--host", default="0.0.0.0", metavar="ADDRESS", help="address to listen on")
    run.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port to listen on (default: ${PORT_ENV}, else 8000)",
    )
    run.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes; more than 1 needs Redis",
    )
    run.set_defaults(handler=_run)

    dev = sub.add_parser(
        "dev",
        help="run a bot locally: provider emulator, memory store, chat page at /_dev",
        description="Run a bot on your machine with nothing else: the provider emulator in "
        "the same process, the memory store (nothing kept after exit), a generated webhook "
        "token and a chat page at /_dev where you talk to the bot as a user. It prints the "
        "URLs. POST /api/send takes 'Authorization: Bearer dev' (or BOTKIT_API_TOKEN). "
        "BOTKIT_LOG_LEVEL and BOTKIT_LOG_FORMAT apply.\n\n"
        "example: botkit dev mybot, then open http://127.0.0.1:8000/_dev",
    )
    dev.add_argument("target", metavar="MODULE[:ATTR]", help=TARGET_HELP)
    dev.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on")
    dev.add_argument("--port", type=_port, default=8000, help="port to listen on; 0 = any free")
    dev.set_defaults(handler=_dev)

    store = sub.add_parser(
        "store",
        help="maintain a bot's Redis store",
        description="Maintenance of a bot's Redis store (BOTKIT_REDIS_URL).",
    )
    store_sub = store.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    migrate = store_sub.add_parser(
        "migrate",
        help="move the bot's Redis data to the current layout (stop every worker first)",
        description="Move the bot's Redis data from an older store layout to the current "
        "one, in place. Stop every worker first; botkit run refuses an old layout and "
        "names this command.",
    )
    migrate.add_argument("target", metavar="MODULE[:ATTR]", help=TARGET_HELP)
    migrate.add_argument(
        "--shards", type=_workers, default=None, help="outbox shards of the new layout (256)"
    )
    migrate.set_defaults(handler=_store_migrate)

    emulator = sub.add_parser(
        "emulator",
        help="run a standalone Devino emulator",
        description="A local stand-in for the Devino WhatsApp API: POST /whatsapp/messages "
        "as the provider answers it, status callbacks, and /_emulator/... to inject user "
        "messages, read what was sent and inject faults. Point a bot at it with "
        "BOTKIT_DEVINO_URL=http://HOST:PORT.",
    )
    add_arguments(emulator, port_type=_port)
    emulator.set_defaults(handler=_emulator)

    # Listed here for the top-level help; main() hands everything after the
    # word "autoreply" to _autoreply, whose parser comes with bots/autoreply
    # (argparse's REMAINDER would refuse a leading --help).
    sub.add_parser(
        "autoreply",
        help="the auto-reply service's tools: check a rules file (botkit autoreply check FILE)",
        add_help=False,
    )

    from botkit.service import _campaign_cli, _reports

    _reports.register(sub, load_bot, _fail)
    _campaign_cli.register(sub, _fail, _HelpFormatter)
    _add_devtools(sub)
    return parser


def _autoreply(argv: list[str]) -> int:
    # The auto-reply service lives in bots/ (a checkout, the image), not in the
    # installed package: found from the working directory, as a bot's target is.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        check = importlib.import_module("bots.autoreply.check")
    except ImportError:
        return _fail(
            "autoreply",
            "the auto-reply service (bots/autoreply) is not here: run this in a botkit "
            "checkout or in the botkit image",
        )
    parser = _Parser(
        prog="botkit autoreply",
        description="Tools for the auto-reply service (bots/autoreply), in a botkit "
        "checkout or the botkit image. 'botkit autoreply check FILE' checks a rules file.",
    )
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    check.add_arguments(
        tools.add_parser(
            "check",
            help="check a rules file and show what sample messages would get",
            description="Check a rules file as the service does (every problem on its own "
            "line, exit code 2), then show what each sample message would get as a user's "
            "first message: the rule (by line), the out-of-hours reply or the default reply.",
        )
    )
    try:
        tool_args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_CANNOT_START
    code: int = check.run(tool_args)
    return code


def _add_devtools(sub: SubParsers[argparse.ArgumentParser]) -> None:
    try:
        from botkit.devtools import _commands as commands
    except ImportError:
        return
    commands.register(sub, load_bot, _fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``botkit`` command; return its exit code."""
    parser = _parser()
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["autoreply"]:
        return _autoreply(words[1:])
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help, --version, or a usage error (one line printed)
        return exc.code if isinstance(exc.code, int) else EXIT_CANNOT_START
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_CANNOT_START
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
