"""What an installed botkit gives a user's project."""

from __future__ import annotations

import re
import subprocess
import sys
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
