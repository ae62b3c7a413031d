"""botkit installed the normal way (a wheel, not editable) in a project with its own ``bots/``.

The wheel must not ship a top-level ``bots`` package (it would hide or be
hidden by the user's own), and the opt-out plugin, found through its entry
point, must load from inside botkit whatever the user's folders are called.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SHOP_BOT = """
from botkit import Bot, Context

bot = Bot("shop", plugins=["optout"])


@bot.text()
async def echo(ctx: Context) -> None:
    await ctx.reply(f"shop: {ctx.text}")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """botkit built as a wheel, as ``pip install .`` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("botkit-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (not editable).

    Its dependencies come from this environment's site-packages through a
    ``.pth`` line (installing them again would only cost time); that
    directory's own ``.pth`` files, among them this checkout's editable
    install, are not processed, so ``botkit`` here is the wheel's.
    """
    env = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "botkit-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return env


def test_the_wheel_ships_botkit_only(wheel: Path) -> None:
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"botkit"}
    entry_points = next(
        zipfile.Path(wheel, name).read_text()
        for name in zipfile.ZipFile(wheel).namelist()
        if name.endswith(".dist-info/entry_points.txt")
    )
    assert "optout = botkit.plugins.optout:plugin" in entry_points


def test_a_project_with_its_own_bots_folder_runs_with_the_optout_plugin(
    venv: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "bots").mkdir(parents=True)
    (project / "bots" / "__init__.py").write_text("")
    (project / "bots" / "shop.py").write_text(SHOP_BOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTKIT_", "PYTHON"))}
    chat = subprocess.run(
        [str(venv / "bin" / "botkit"), "chat", "bots.shop", "--as", "79031234567"],
        input="hello\nSTOP\nhello again\nSTART\n/quit\n",
        cwd=project,
        env={**env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chat.returncode == 0, chat.stderr
    replies = [line for line in chat.stdout.splitlines() if line.startswith("bot:")]
    assert replies == [
        "bot: shop: hello",
        "bot: You have unsubscribed and will get no more messages from us. "
        "Send START to come back.",
        "bot: Welcome back! You will get our messages again. Send STOP to unsubscribe.",
    ]
