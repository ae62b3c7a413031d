"""The ``botkit`` command: run, dev, emulator, --help, and the start-up refusals."""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import botkit
from botkit.cli import main
from tests.service._harness import (
    API_KEY,
    CALLBACK_SECRET,
    REDIS_PASSWORD,
    ROOT,
    SECRETS,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    run_cli,
    wait_for,
)

READY = {
    "BOTKIT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "BOTKIT_CALLBACK_SECRET": CALLBACK_SECRET,
    "BOTKIT_DEVINO_API_KEY": API_KEY,
    "BOTKIT_SENDER": "EchoCo",
}


@pytest.fixture
def bots_dir(tmp_path: Path) -> Path:
    """A directory with bot modules of a user's own, the way they lay them out."""
    (tmp_path / "mybot.py").write_text(
        textwrap.dedent(
            """
            from botkit import Bot, Context

            bot = Bot("mine")
            other = Bot("other")
            not_a_bot = "just a string"


            @bot.text()
            async def shout(ctx: Context) -> None:
                await ctx.reply(ctx.text.upper())
            """
        )
    )
    (tmp_path / "broken.py").write_text("import botkit\nraise RuntimeError('the bot is broken')\n")
    (tmp_path / "typo.py").write_text("def oops(:\n")
    return tmp_path


@pytest.fixture
def in_process(bots_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the ``botkit`` command in this process from ``bots_dir``, leaving no trace behind."""
    monkeypatch.chdir(bots_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in list(os.environ):
        if name.startswith("BOTKIT_"):
            monkeypatch.delenv(name)
    for name, value in READY.items():
        monkeypatch.setenv(name, value)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["dev", "--help"],
        ["emulator", "--help"],
        ["chat", "--help"],
        ["graph", "--help"],
        ["store", "--help"],
        ["store", "migrate", "--help"],
    ],
    ids=lambda args: " ".join(args[:-1]) or "botkit",
)
def test_help_everywhere(
    in_process: None, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["usage: botkit", *args[:-1]]))
    if args[0] in ("run", "dev"):
        assert "--host" in out and "--port" in out
        assert "MODULE[:ATTR]" in out
    if args[0] == "run":
        assert "--workers" in out


@pytest.mark.parametrize("args", [["autoreply", "--help"], ["autoreply", "check", "--help"]])
def test_the_autoreply_tools_have_help_in_a_checkout(args: list[str]) -> None:
    done = run_cli(args, clean_env())  # from the checkout, where bots/autoreply is
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(" ".join(["usage: botkit", *args[:-1]]))


def test_the_command_exits_with_the_code_main_returns(bots_dir: Path) -> None:
    done = run_cli(["run", "nosuchmodule"], clean_env(**READY), cwd=bots_dir)
    assert done.returncode == 2
    assert done.stderr == (
        "botkit run: cannot import 'nosuchmodule': ModuleNotFoundError: "
        "No module named 'nosuchmodule'\n"
    )
    assert run_cli(["--help"], clean_env()).returncode == 0


@pytest.mark.parametrize("command", ["run", "dev"])
@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("nosuchmodule", "cannot import 'nosuchmodule': ModuleNotFoundError"),
        ("broken", "cannot import 'broken': RuntimeError: the bot is broken"),
        ("typo", "cannot import 'typo': SyntaxError"),
        ("mybot:nothing", "module 'mybot' has no attribute 'nothing'"),
        ("mybot:not_a_bot", "mybot:not_a_bot is a str, not a botkit.Bot"),
        (":bot", "':bot' is not MODULE[:ATTR]"),
    ],
)
def test_a_target_that_is_not_a_bot_is_one_clear_line_and_exit_2(
    in_process: None, capsys: pytest.CaptureFixture[str], command: str, target: str, says: str
) -> None:
    assert main([command, target]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"botkit {command}: ")
    assert says in line


def test_run_refuses_without_a_webhook_token(
    in_process: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOTKIT_WEBHOOK_TOKEN")
    assert main(["run", "mybot"]) == 2
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith("botkit run: BOTKIT_WEBHOOK_TOKEN: required")
    assert API_KEY not in err


def test_run_refuses_several_workers_without_redis(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "mybot", "--workers", "2"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--workers 2 needs BOTKIT_REDIS_URL" in line
    assert "one worker" in line


def test_run_lists_every_problem_and_prints_no_secret(bots_dir: Path) -> None:
    env = clean_env(
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_REDIS_URL=f"http://:{REDIS_PASSWORD}@redis:6379",
        BOTKIT_SESSION_WINDOW="forever",
    )
    done = run_cli(["run", "mybot"], env, cwd=bots_dir)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("botkit run: BOTKIT_REDIS_URL: must be a redis://")
    assert lines[1].startswith("botkit run: BOTKIT_SESSION_WINDOW: ")
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout

    env = clean_env(BOTKIT_DEVINO_API_KEY=API_KEY)
    done = run_cli(["run", "mybot", "--workers", "3"], env, cwd=bots_dir)
    assert done.returncode == 2
    assert [line.split(":")[1].strip() for line in done.stderr.splitlines()] == [
        "BOTKIT_WEBHOOK_TOKEN",
        "BOTKIT_CALLBACK_SECRET",
        "BOTKIT_SENDER",
        "--workers 3 needs BOTKIT_REDIS_URL",
    ]


GENERATE = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def test_run_refuses_the_placeholders_of_the_example_env_file(bots_dir: Path) -> None:
    example = (ROOT / "deploy" / "botkit.env.example").read_text()
    values = dict(line.split("=", 1) for line in example.splitlines() if line.startswith("BOTKIT_"))
    values.pop("BOTKIT_AUTOREPLY_RULES", None)
    done = run_cli(["run", "mybot"], clean_env(**values), cwd=bots_dir)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "BOTKIT_DEVINO_API_KEY",
        "BOTKIT_WEBHOOK_TOKEN",
        "BOTKIT_API_TOKEN",
    ], done.stderr
    for line in lines:
        assert "is a placeholder from an example" in line
    for line in lines[1:]:
        assert line.endswith(GENERATE)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOTKIT_WEBHOOK_TOKEN", "change-me-to-a-long-random-string"),
        ("BOTKIT_WEBHOOK_TOKEN", "short-token-123"),
        ("BOTKIT_WEBHOOK_TOKEN", "a" * 40),
        ("BOTKIT_API_TOKEN", "change-me-too"),
        ("BOTKIT_API_TOKEN", "Bearer-dev"),
        ("BOTKIT_CALLBACK_SECRET", "your-callback-secret-goes-here-0123456789"),
        ("BOTKIT_CALLBACK_SECRET", "31-bytes-is-one-short-0123456789"[:31]),
    ],
)
def test_run_refuses_a_placeholder_or_short_secret_with_one_line_saying_how_to_make_one(
    bots_dir: Path, name: str, value: str
) -> None:
    env = clean_env(**{**READY, name: value})
    done = run_cli(["run", "mybot"], env, cwd=bots_dir)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"botkit run: {name}: ")
    assert line.endswith(GENERATE)
    assert value not in done.stderr + done.stdout


def test_run_reports_every_weak_secret_in_one_pass(bots_dir: Path) -> None:
    weak = {
        "BOTKIT_WEBHOOK_TOKEN": "short-token-123",
        "BOTKIT_API_TOKEN": "change-me-too",
        "BOTKIT_CALLBACK_SECRET": "short-pw",
    }
    done = run_cli(["run", "mybot"], clean_env(**{**READY, **weak}), cwd=bots_dir)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "BOTKIT_WEBHOOK_TOKEN",
        "BOTKIT_API_TOKEN",
        "BOTKIT_CALLBACK_SECRET",
    ], done.stderr
    for line in lines:
        assert line.endswith(GENERATE)
    for value in weak.values():
        assert value not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "args",
    [["--workers", "0"], ["--workers", "two"], ["--port", "70000"], ["--port", "http"]],
)
def test_run_refuses_bad_arguments(
    in_process: None, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main(["run", "mybot", *args]) == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_a_run_worker_builds_the_bots_app_and_tunes_the_collector_for_serving(
    in_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botkit.cli import TARGET_ENV, service_app
    from botkit.service import SERVER_GC_YOUNG

    monkeypatch.setenv(TARGET_ENV, "mybot")
    threshold = gc.get_threshold()
    try:
        app = service_app()
        assert app.state.service.bot.name == "mine"  # type: ignore[attr-defined]
        assert gc.get_threshold() == (SERVER_GC_YOUNG, *threshold[1:])
        assert gc.get_freeze_count() > 0  # start-up objects are out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_no_command_prints_the_help_and_exits_2(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "run" in out and "dev" in out and "emulator" in out


async def test_dev_serves_the_bot_with_its_emulator_and_prints_the_urls(
    bots_dir: Path, processes: list[BotProcess]
) -> None:
    # The module is found in the current directory; ATTR defaults to "bot".
    dev = BotProcess(
        ["dev", "mybot", "--port", "0"], clean_env(), bots_dir / "dev.log", cwd=bots_dir
    )
    processes.append(dev)
    dev.start()
    await dev.wait_for_log("Ctrl-C stops")
    banner = dev.log()
    assert "bot 'mine' on http://127.0.0.1:" in banner
    base = banner.split(" on ", 1)[1].split()[0]
    webhook = next(
        line for line in banner.splitlines() if "webhook:" in line and "status" not in line
    )
    assert webhook.split()[-1].startswith(f"{base}/whatsapp/incoming/")
    assert f"{base}/_provider/_emulator/messages" in banner

    async with httpx.AsyncClient(base_url=base) as http:
        injected = await http.post(
            "/_provider/_emulator/incoming", json={"from": "79031234567", "text": "hi there"}
        )
        assert injected.status_code == 200
        assert injected.json()["webhookStatus"] == 200

        async def replied() -> bool:
            messages = (await http.get("/_provider/_emulator/messages")).json()
            return [m["message"].get("text") for m in messages] == ["HI THERE"]

        await wait_for(replied, what="the bot's reply at the embedded emulator")

        # The send API is on, with the token the banner shows.
        assert f"send API:       POST {base}/api/send with Authorization: Bearer dev" in banner
        sent = await http.post(
            "/api/send",
            json={"to": "79031234567", "text": "from elsewhere"},
            headers={"Authorization": "Bearer dev"},
        )
        assert sent.status_code == 202, sent.text
        refused = await http.post(
            "/api/send",
            json={"to": "79031234567", "text": "x"},
            headers={"Authorization": "Bearer x"},
        )
        assert refused.status_code == 401
        # The agent inbox too, with the token the banner shows.
        assert f"agent inbox:    {base}/agent (token: dev)" in banner
        listed = await http.get("/api/handoffs", headers={"Authorization": "Bearer dev"})
        assert listed.status_code == 200 and listed.json()["total"] == 0

    dev.signal(signal.SIGINT)
    assert await dev.wait_exit() == 0


async def test_emulator_command_serves_the_provider(
    processes: list[BotProcess], tmp_path: Path
) -> None:
    emulator = BotProcess(
        ["emulator", "--port", "0", "--api-key", API_KEY], clean_env(), tmp_path / "emulator.log"
    )
    processes.append(emulator)
    emulator.start()
    await emulator.wait_for_log("listening on")
    base = emulator.log().split(" listening on ", 1)[1].split()[0]
    async with httpx.AsyncClient(base_url=base) as http:
        body = {"messages": [{"from": "EchoCo", "to": "79031234567", "text": "hi"}]}
        refused = await http.post("/whatsapp/messages", json=body)
        assert refused.status_code == 401
        sent = await http.post(
            "/whatsapp/messages", json=body, headers={"Authorization": f"Key {API_KEY}"}
        )
        assert sent.json()["result"][0]["code"] == "OK"
    emulator.signal(signal.SIGINT)
    assert await emulator.wait_exit() == 0


# -- errors a user can cause: one line, a documented exit code ------------------


def test_version_names_the_installed_botkit() -> None:
    done = run_cli(["--version"], clean_env())
    assert done.returncode == 0
    assert done.stdout == f"botkit {botkit.__version__}\n"


@pytest.mark.parametrize(
    ("args", "defaults"),
    [
        (
            ["run"],
            ["--host ADDRESS", "(default: 0.0.0.0)", "$BOTKIT_PORT, else 8000", "(default: 1)"],
        ),
        (["dev"], ["(default: 127.0.0.1)", "(default: 8000)", "Bearer dev"]),
        (["emulator"], ["(default: 127.0.0.1)", "(default: 9000)", "(default: 86400.0)"]),
        (["chat"], ["(default: 79031234567)"]),
        (["graph"], ["(default: mermaid)"]),
    ],
)
def test_every_command_says_what_it_does_and_shows_its_defaults(
    args: list[str], defaults: list[str]
) -> None:
    done = run_cli([*args, "--help"], clean_env(BOTKIT_DEVINO_API_KEY="key-from-the-env"))
    assert done.returncode == 0, done.stderr
    usage, description, *_ = done.stdout.split("\n\n")
    assert usage.startswith(f"usage: botkit {args[0]}")
    assert len(description.split()) >= 8, "a description, not just the usage line"
    text = " ".join(done.stdout.split())
    for default in defaults:
        assert " ".join(default.split()) in text
    # Every option has a help text: what follows its name, on its line or the next.
    options = done.stdout.split("options:", 1)[1]
    for entry in re.split(r"\n(?=  -)", options.strip("\n")):
        name, _, help_text = entry.strip().partition("  ")
        assert help_text.strip(), f"{name} has no help text"
    assert "key-from-the-env" not in done.stdout  # a default from the environment is not shown


def test_the_top_level_help_lists_the_commands_and_the_exit_codes() -> None:
    done = run_cli(["--help"], clean_env())
    assert done.returncode == 0
    for command in ("run", "dev", "emulator", "chat", "graph", "--version"):
        assert command in done.stdout
    text = " ".join(done.stdout.split())
    assert "2 could not start" in text and "3 could not serve" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "mybot", "--port", "99999"], "botkit run: argument --port: must be between"),
        (["dev", "mybot", "--port", "eighty"], "botkit dev: argument --port: 'eighty' is not a"),
        (["emulator", "--port", "99999"], "botkit emulator: argument --port: must be between"),
        (["run", "mybot", "--workers", "0"], "botkit run: argument --workers: must be at least 1"),
        (["serve", "mybot"], "botkit: argument COMMAND: invalid choice: 'serve'"),
        (["graph", "mybot", "-f", "gif"], "botkit graph: argument --format/-f: invalid choice"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(bots_dir: Path, args: list[str], says: str) -> None:
    done = run_cli(args, clean_env(**READY), cwd=bots_dir)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(says)
    assert line.endswith("--help)")  # and where to read more


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [["run", "mybot", "--host", "127.0.0.1"], ["dev", "mybot"], ["emulator"]],
    ids=["run", "dev", "emulator"],
)
def test_a_port_in_use_is_one_line_and_exit_3(
    bots_dir: Path, taken_port: int, args: list[str]
) -> None:
    done = run_cli([*args, "--port", str(taken_port)], clean_env(**READY), cwd=bots_dir)
    assert done.returncode == 3
    assert done.stderr == (
        f"botkit {args[0]}: cannot listen on 127.0.0.1:{taken_port}: the port is already "
        "in use (another server? choose one with --port)\n"
    )
    assert "Traceback" not in done.stdout


@pytest.mark.parametrize(
    ("host", "says"),
    [("192.0.2.1", "this machine has no such address (--host)"), ("nosuch.invalid", "unknown")],
)
def test_an_address_this_machine_cannot_listen_on_is_one_line_and_exit_3(
    bots_dir: Path, host: str, says: str
) -> None:
    done = run_cli(["run", "mybot", "--host", host], clean_env(**READY), cwd=bots_dir)
    assert done.returncode == 3
    [line] = done.stderr.splitlines()
    assert line.startswith(f"botkit run: cannot listen on {host}:8000: {says}")


def test_run_takes_the_bot_and_the_port_from_the_environment(
    bots_dir: Path, taken_port: int
) -> None:
    # What a container image sets: the target and the port its health check probes.
    env = clean_env(**READY, BOTKIT_TARGET="mybot", BOTKIT_PORT=str(taken_port))
    done = run_cli(["run", "--host", "127.0.0.1"], env, cwd=bots_dir)
    assert done.returncode == 3
    assert f"cannot listen on 127.0.0.1:{taken_port}: the port is already in use" in done.stderr

    env["BOTKIT_TARGET"] = "mybot:not_a_bot"
    done = run_cli(["run"], env, cwd=bots_dir)
    assert (done.returncode, done.stderr) == (
        2,
        "botkit run: mybot:not_a_bot is a str, not a botkit.Bot\n",
    )

    done = run_cli(["run"], clean_env(**READY), cwd=bots_dir)
    assert done.returncode == 2
    assert done.stderr == (
        "botkit run: give the bot as MODULE[:ATTR] (e.g. mybot:bot) or set BOTKIT_TARGET\n"
    )

    done = run_cli(["run", "mybot"], clean_env(**READY, BOTKIT_PORT="http"), cwd=bots_dir)
    assert (done.returncode, done.stderr) == (
        2,
        "botkit run: BOTKIT_PORT: 'http' is not a port number\n",
    )
