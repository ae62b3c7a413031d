"""botkit's pytest plugin, as a bot author meets it: pytest run in a fresh project folder.

Each test writes a small project (a bot module, a test file, sometimes a
configuration) into a temporary folder and runs pytest on it in a
subprocess with the installed botkit: no conftest, no configuration of
botkit's own suite applies there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ECHO_BOT = """\
from botkit import Bot, Context

bot = Bot("tiny")

@bot.text()
async def echo(ctx: Context) -> None:
    await ctx.reply(f"echo: {ctx.text}")
"""


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``folder``, as a user runs it (no settings of ours leak in)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "BOTKIT_")) and k != "PYTHONPATH"
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def project(folder: Path, **files: str) -> Path:
    """Write ``name=text`` files (``test_x_py`` becomes ``test_x.py``)."""
    for name, text in files.items():
        (folder / name.replace("_py", ".py").replace("_toml", ".toml")).write_text(text)
    return folder


def test_async_tests_and_the_chat_fixture_work_without_any_configuration(tmp_path: Path) -> None:
    project(
        tmp_path,
        tinybot_py=ECHO_BOT,
        test_tiny_py="""\
import asyncio
from tinybot import bot

async def test_chat_talks_to_the_modules_bot(chat):
    assert (await chat.send_text("hi")).texts == ["echo: hi"]
    chat.advance(hours=25)
    assert await chat.state() is None

async def test_a_plain_async_test_runs():
    await asyncio.sleep(0)
    assert False, "this async test really ran"
""",
    )
    done = run_pytest(tmp_path, "-rA")
    # One passes and the other really ran (and failed): neither was skipped or left unawaited.
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "this async test really ran" in done.stdout


def test_the_bot_can_be_named_in_the_configuration_or_by_a_fixture(tmp_path: Path) -> None:
    project(
        tmp_path,
        tinybot_py=ECHO_BOT,
        pyproject_toml='[tool.pytest.ini_options]\nbotkit_bot = "tinybot:bot"\n',
        test_configured_py="""\
async def test_configured(chat):
    assert (await chat.send_text("a")).texts == ["echo: a"]
""",
    )
    (tmp_path / "sub").mkdir()
    project(
        tmp_path / "sub",
        conftest_py="""\
import pytest
from botkit import Bot, Context

@pytest.fixture
def bot():
    other = Bot("other")

    @other.text()
    async def shout(ctx: Context) -> None:
        await ctx.reply(ctx.text.upper())

    return other
""",
        test_fixture_py="""\
async def test_own_fixture(chat):
    assert (await chat.send_text("a")).texts == ["A"]
""",
    )
    done = run_pytest(tmp_path)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr


def test_a_test_without_a_bot_is_told_how_to_give_one(tmp_path: Path) -> None:
    project(tmp_path, test_nobot_py="async def test_x(chat):\n    pass\n")
    done = run_pytest(tmp_path)
    assert done.returncode == 1
    assert "botkit's fixtures need your bot: import it in the test module as `bot`" in done.stdout


def test_without_pytest_asyncio_async_tests_fail_with_what_to_install(tmp_path: Path) -> None:
    project(tmp_path, test_plain_py="async def test_x():\n    pass\n")
    done = run_pytest(tmp_path, "-p", "no:asyncio")
    assert done.returncode == 1
    assert "need pytest-asyncio: pip install 'botkit[test]'" in done.stdout


def test_without_pytest_asyncio_tests_another_async_plugin_runs_are_left_alone(
    tmp_path: Path,
) -> None:
    project(
        tmp_path,
        test_anyio_py="""\
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_run_by_anyio():
    pass
""",
    )
    done = run_pytest(tmp_path, "-p", "no:asyncio")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
