"""The README's examples, executed: every Python block runs and does what the text says.

Each Python block of README.md is matched to a runner below by a line it
contains; a block no runner knows fails the test, so a new example cannot be
added without being run. Excerpts of ``bots/pizza`` must be the bot's real
code (compared as syntax trees, comments and docstrings aside). The
``botkit`` commands of the shell blocks are checked against the CLI's own
help, and the Mermaid diagram against ``botkit graph``.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from botkit import Bot
from botkit.service import serve_app
from botkit.testing import BotTester
from tests.helpers import free_port, poll

from .test_pytest_plugin import run_pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PIZZA_SOURCE = ROOT / "bots" / "pizza" / "__init__.py"


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    code: str
    line: int  # of the opening fence

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    blocks: list[Block] = []
    lang: str | None = None
    start, lines = 0, list[str]()
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if lang is None and fence:
            lang, start, lines = fence.group(1), number, []
        elif lang is not None and line.rstrip() == "```":
            blocks.append(Block(lang, "\n".join(lines) + "\n", start))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"README.md:{start}: a code block is never closed"
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("sh", "bash", "shell")]


# -- running blocks ----------------------------------------------------------------


def run_module(block: Block, name: str, folder: Path) -> types.ModuleType:
    """Write the block as ``folder/name.py`` and import it (a fresh module each time)."""
    path = folder / f"{name}.py"
    path.write_text(block.code)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(compile(block.code, str(path), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _statements(source: str) -> list[str]:
    tree = _strip_docstrings(ast.parse(source))
    assert isinstance(tree, ast.Module)
    return [
        ast.dump(node)
        for node in tree.body
        if not isinstance(node, ast.Import | ast.ImportFrom | ast.Pass)
    ]


def assert_excerpt_of_pizza(block: Block) -> None:
    """Each statement of the block is, word for word, one of ``bots/pizza``'s."""
    source = _statements(PIZZA_SOURCE.read_text())
    for statement in _statements(block.code):
        assert statement in source, (
            f"{block}: this excerpt no longer matches bots/pizza/__init__.py "
            f"(a statement differs):\n{block.code}"
        )


# -- the runners, one per example ------------------------------------------------------


async def hello_bot(block: Block, folder: Path) -> None:
    bot = run_module(block, "hello", folder).bot
    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi")).texts == ["Hello, there!"]
        assert (await chat.send_text("Hello")).texts == ["Hello, there!"]
        assert (await chat.send_text("hi, how are you?")).texts == ["You said: hi, how are you?"]


async def tutorial_bot(block: Block, folder: Path) -> None:
    bot = run_module(block, "mybot", folder).bot
    photo = bytes(range(256)) * 4
    media = Starlette(routes=[Route("/p.jpg", lambda _: Response(photo, media_type="image/jpeg"))])
    port = free_port()
    async with serve_app(media, port=port), BotTester(bot) as chat:
        assert (await chat.send_text("what is the price?")).texts == ["A pizza is 10 EUR."]
        assert (await chat.send_text("Where is my Order #42?")).texts == [
            "Order 42 is in the oven."
        ]
        sent = await chat.send_media(f"http://127.0.0.1:{port}/p.jpg", "image/jpeg")
        assert sent.texts == [f"Nice picture ({len(photo)} bytes)."]
        assert (await chat.send_text("hello")).texts == [
            "Sorry, I did not get that. Ask about prices or an order."
        ]


async def pizza_excerpt(block: Block, folder: Path) -> None:
    assert_excerpt_of_pizza(block)
    import bots.pizza

    # It runs, too: in the bot module's namespace (its helpers are not shown), after the
    # README's own Flow, so the real bot's flow is left alone.
    [flow] = [b for b in PYTHON if "order = Flow(" in b.code]
    namespace = dict(vars(bots.pizza))
    exec(compile(flow.code, str(flow), "exec"), namespace)
    assert namespace["order"] is not bots.pizza.order
    if block is not flow:
        exec(compile(block.code, str(block), "exec"), namespace)


async def send_later(block: Block, folder: Path) -> None:
    import bots.pizza

    code = compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with BotTester(bots.pizza.bot) as chat:
        await chat.send_text("hi")
        # As in the pizza bot, where the example comes from.
        namespace = {**vars(bots.pizza), "user": chat.user, "order_id": "4242"}
        result = eval(code, namespace)
        if result is not None:
            await result
        [inside] = await chat.sent()
        assert inside.text == "Your order #4242 is ready!"
        chat.advance(hours=25)  # the window closed: the template goes
        result = eval(code, namespace)
        if result is not None:
            await result
        [outside] = await chat.sent()
        assert outside.template is not None and outside.template.id == "order_ready"


async def fresh_project_from_the_testing_section(block: Block, folder: Path) -> None:
    # Verbatim in a fresh folder: the page's first example as hello.py, this as the test file.
    [hello] = [b for b in PYTHON if 'bot = Bot("hello"' in b.code]
    (folder / "hello.py").write_text(hello.code)
    (folder / "test_hello.py").write_text(block.code)
    done = await asyncio.to_thread(run_pytest, folder)
    assert done.returncode == 0, f"{block}:\n{done.stdout}{done.stderr}"
    assert "2 passed" in done.stdout, done.stdout


async def nudge_bot(block: Block, folder: Path) -> None:
    bot = run_module(block, "nudge", folder).bot
    async with BotTester(bot) as chat:
        assert (await chat.send_text("remind me")).texts == [
            "I will nudge you in 10 minutes, unless you write first."
        ]
        assert (await chat.advance(minutes=9)) == []
        assert (await chat.advance(minutes=1)).texts == ["Still thinking about your order?"]
        await chat.send_text("remind me")
        await chat.send_text("something else")  # the user wrote first
        assert (await chat.advance(minutes=10)) == []


async def support_bot(block: Block, folder: Path) -> None:
    bot = run_module(block, "support", folder).bot
    async with BotTester(bot) as chat:
        assert (await chat.send_text("hi")).texts == ["The bot heard: hi (handed off: False)"]
        assert (await chat.send_text("agent")).texts == [
            "Connecting you to a person. They will answer here."
        ]
        assert (await chat.send_text("hello?")).texts == []  # a person answers now
        [(user, handoff)], _ = await chat.store.handoffs()
        assert (user, handoff.reason, handoff.note) == (
            chat.user,
            "asked for a person",
            "VIP customer",
        )
        released = await chat.runtime.release(chat.user, "alice")
        assert [m.text for m in released.replies] == ["You are back with the bot. How can I help?"]
        await chat.send_text("human")
        assert (await chat.advance(minutes=30)).texts == [
            "You are back with the bot. How can I help?"
        ]


RUNNERS: dict[str, Callable[[Block, Path], Awaitable[None]]] = {
    'bot = Bot("hello"': hello_bot,
    "# mybot.py": tutorial_bot,
    "order = Flow(": pizza_excerpt,
    '@order.text(state="size")': pizza_excerpt,
    "@order.text(PIZZAS": pizza_excerpt,
    "await bot.send(user": send_later,
    "# test_hello.py": fresh_project_from_the_testing_section,
    "# nudge.py": nudge_bot,
    "# support.py": support_bot,
}


def runner_for(block: Block) -> Callable[[Block, Path], Awaitable[None]]:
    found = [run for key, run in RUNNERS.items() if key in block.code]
    assert len(found) == 1, (
        f"{block}: {'no' if not found else 'more than one'} runner in tests/test_readme.py "
        "knows this example; every Python example of the README must be executed by a test"
    )
    return found[0]


@pytest.fixture
def module_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on the import path for the README's files; their modules are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


def test_the_readme_has_python_examples_and_each_has_a_runner() -> None:
    assert len(PYTHON) >= 5
    for block in PYTHON:
        runner_for(block)


@pytest.mark.parametrize("block", PYTHON, ids=str)
async def test_python_example_runs_as_documented(block: Block, module_folder: Path) -> None:
    await runner_for(block)(block, module_folder)


def test_the_toml_examples_parse() -> None:
    import tomllib

    blocks = [b for b in BLOCKS if b.lang == "toml"]
    assert blocks
    for block in blocks:
        tomllib.loads(block.code)


# -- shell blocks ---------------------------------------------------------------------


def botkit_commands() -> list[tuple[Block, list[str]]]:
    """Every ``botkit ...`` command line of the shell blocks, as argument lists."""
    found = []
    for block in SHELL:
        for line in block.code.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.commenters = "#"
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token and set(token) <= set("&|;<>()"):
                    if words and (words[0] == "botkit" or words[0].endswith("/botkit")):
                        found.append((block, words[1:]))
                    # after a redirection comes its file, not a command
                    words = ["<file>"] if token.startswith(">") else []
                else:
                    words.append(token)
    return found


COMMANDS = botkit_commands()


def _help(subcommand: str) -> str:
    # "campaign start" is a command of a command: its own --help lists its options.
    done = subprocess.run(
        [sys.executable, "-m", "botkit", *subcommand.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"botkit {subcommand} --help failed: {done.stderr}"
    return done.stdout


def test_every_botkit_command_of_the_readme_exists_with_the_options_it_names() -> None:
    assert COMMANDS, "the README shows no botkit command"
    helps: dict[str, str] = {}
    for block, args in COMMANDS:
        subcommand = args[0]
        if subcommand == "campaign" and len(args) > 1:
            subcommand = f"campaign {args[1]}"
        if subcommand not in helps:
            helps[subcommand] = _help(subcommand)
        for option in (a.split("=", 1)[0] for a in args[1:] if a.startswith("--")):
            assert option in helps[subcommand], (
                f"{block}: `botkit {subcommand}` has no option {option}"
            )


def test_the_bots_the_readme_runs_exist() -> None:
    import importlib

    targets = {
        a.split(":", 1)[0]
        for _, args in COMMANDS
        if args[0] in ("run", "dev", "chat", "graph")
        for a in args[1:2]
        if a.startswith("bots.")
    }
    assert targets
    for target in sorted(targets):
        assert isinstance(importlib.import_module(target).bot, Bot)


def test_the_flow_diagram_is_what_botkit_graph_draws() -> None:
    [diagram] = [b for b in BLOCKS if b.lang == "mermaid"]
    done = subprocess.run(
        [sys.executable, "-m", "botkit", "graph", "bots.pizza"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr

    def edges(text: str) -> set[str]:
        return {" ".join(line.split()) for line in text.splitlines() if "-->" in line}

    assert edges(diagram.code) == edges(done.stdout)


# -- "Run it like production on your laptop", every command for real ------------------------

LAPTOP = "## Run it like production on your laptop"

# What each command of the last block must print, and whether to re-run it until it
# does (a reply leaves the outbox a moment after the webhook answered).
LAPTOP_EXPECTS = {
    "/_emulator/incoming": ('"webhookStatus":200', False),
    "/_emulator/messages": ("echo #1: hi", True),
    "/metrics": ('botkit_turns_total{kind="text",outcome="handled"} 1.0', True),
    "/api/send": ('"status":"queued"', False),
}


def laptop_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    start = lines.index(LAPTOP) + 1
    end = next(n for n in range(start, len(lines)) if lines[n].startswith("## ")) + 1
    return [b for b in SHELL if start < b.line < end]


def test_run_it_like_production_on_your_laptop_as_written(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    if shutil.which("curl") is None:
        message = "curl is not installed: the README's commands use it (apt-get install curl)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true, where it is required)", pytrace=False)
        pytest.skip(message)
    env_block, redis_block, emulator_block, run_block, talk_block = laptop_blocks()
    assert "redis-server" in redis_block.code  # the test's own Redis stands in for it
    bot_port, emulator_port = free_port(), free_port()

    def local(code: str) -> str:
        code = re.sub(r"\b8000\b", str(bot_port), code)
        return re.sub(r"\b9000\b", str(emulator_port), code)

    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),  # the README runs in the repository's folder: bots.echo
        PYTHONUNBUFFERED="1",
    )

    def bash(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    # The .env file, on the test's Redis under the test's key prefix.
    settings = local(env_block.code).replace("redis://127.0.0.1:6379/0", redis_url)
    settings = settings.replace("\nEOF\n", f"\nBOTKIT_KEY_PREFIX={redis_prefix}\nEOF\n")
    made = bash(settings)
    assert made.returncode == 0, made.stderr
    values = dict(
        line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines() if line
    )
    assert len(values["BOTKIT_WEBHOOK_TOKEN"]) >= 32 and len(values["BOTKIT_API_TOKEN"]) >= 32

    servers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for name, block in (("emulator", emulator_block), ("run", run_block)):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    ["bash", "-c", local(block.code)],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
            servers.append((process, log))

        def answers(url: str) -> bool:
            for process, log in servers:
                assert process.poll() is None, f"a command exited early:\n{log.read_text()}"
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll(lambda: answers(f"http://127.0.0.1:{emulator_port}/_emulator/messages"), "emulator")
        poll(lambda: answers(f"http://127.0.0.1:{bot_port}/readyz"), "botkit run ready")

        prelude, *commands = [
            line for line in local(talk_block.code).splitlines() if line and line[0] != "#"
        ]
        assert prelude == "set -a; . ./.env; set +a"
        assert len(commands) == len(LAPTOP_EXPECTS)
        for command in commands:
            [(expected, again)] = [v for k, v in LAPTOP_EXPECTS.items() if k in command]
            deadline = time.monotonic() + (20 if again else 0)
            while expected not in (printed := bash(f"{prelude}\n{command}").stdout):
                assert again and time.monotonic() < deadline, (
                    f"`{command}` printed {printed!r}, not {expected!r}"
                )
                time.sleep(0.1)
    finally:
        for process, _ in servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process, _ in servers:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
