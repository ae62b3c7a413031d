"""What an installed botkit gives a user's project."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path


def test_mypy_sees_botkit_from_a_users_project(tmp_path: Path) -> None:
    # Run from a folder outside the checkout, as a user's project is: mypy must
    # find botkit through the installation (an editable install is a plain
    # .pth entry, not an import hook mypy cannot follow) and its py.typed.
    (tmp_path / "userbot.py").write_text(
        textwrap.dedent(
            """
            from botkit import Bot, Context

            bot = Bot("mine")


            @bot.text()
            async def shout(ctx: Context) -> None:
                await ctx.reply(ctx.text.upper())


            reveal_type(bot)
            count: int = bot  # a type error mypy must report
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "userbot.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert re.search(r'Revealed type is "botkit\.[\w.]*Bot"', done.stdout), done.stdout
    assert "import-not-found" not in done.stdout and "missing library stubs" not in done.stdout
    assert 'Incompatible types in assignment (expression has type "Bot"' in done.stdout


ROOT = Path(__file__).resolve().parents[1]


def machine_paths(root: Path) -> list[Path]:
    """Absolute folders that exist only on the development machine.

    The checkout itself and the shared notes beside it (``../shared``); the
    folder holding them too, unless it is a common one (``/``, ``/tmp``, the
    home folder, a top-level folder such as ``/work``) that legitimate paths
    also start with (``.ci/run``'s ``/tmp/botkit-ci-redis``).
    """
    parent = root.parent
    common = {
        Path("/"),
        Path("/tmp"),
        Path(tempfile.gettempdir()),
        Path.home(),
        *Path.home().parents,
    }
    paths = [root, parent / "shared"]
    if parent not in common and parent.parent != Path("/"):
        paths.append(parent)
    return paths


def test_the_machine_paths_leave_out_common_folders() -> None:
    assert machine_paths(Path("/tmp/ci1")) == [Path("/tmp/ci1"), Path("/tmp/shared")]
    assert machine_paths(Path("/proj/app")) == [Path("/proj/app"), Path("/proj/shared")]
    assert machine_paths(Path("/srv/dev/wt/arch")) == [
        Path("/srv/dev/wt/arch"),
        Path("/srv/dev/wt/shared"),
        Path("/srv/dev/wt"),
    ]


def test_no_file_names_a_path_of_the_development_machine() -> None:
    # The shared notes beside the checkout are ../shared/...: an absolute path
    # to them (or to the checkout) means nothing on a user's machine.
    mine = "|".join(re.escape(f"{path}/") for path in machine_paths(ROOT))
    absolute = re.compile(r"(?<![\w.~-])/[\w.-]+(?:/[\w.-]+)*/shared/|" + mine)
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for number, line in enumerate(text.splitlines(), 1):
            if absolute.search(line):
                found.append(f"{name.decode()}:{number}: {line.strip()}")
    assert found == []
