"""``botkit chat``: a conversation in a real pseudo-terminal, as a developer types it."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x01\x02\r]")


class Terminal:
    """A process on the slave side of a pty; :meth:`expect` reads until text shows up."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
        env.pop("NO_COLOR", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "botkit", *args],
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.raw = ""  # everything read so far
        # Where the next expect() starts looking, in self.raw: an index into the
        # text without colours would move when a marker split across two reads
        # is completed (and removed), and the next expect would miss a letter.
        self.unread = 0

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def _read(self, until: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.raw += chunk.decode(errors="replace")
        return bool(chunk)

    def expect(self, *texts: str, within: float = 10.0) -> str:
        """Wait until every one of ``texts`` appeared since the last expect; return that
        output, without colours and readline's markers."""
        deadline = time.monotonic() + within
        while True:
            fresh = ANSI.sub("", self.raw[self.unread :])
            if all(text in fresh for text in texts):
                self.unread = len(self.raw)
                return fresh
            if time.monotonic() > deadline or not self._read(deadline):
                missing = [t for t in texts if t not in fresh]
                raise AssertionError(f"never saw {missing!r}; the terminal showed:\n{fresh}")

    def exit_code(self, within: float = 10.0) -> int:
        deadline = time.monotonic() + within
        while self._read(deadline):  # drain, so the child never blocks on a full terminal
            pass
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal("chat", "tests.devtools.shop_bot", "--as", "+7 903 123-45-67")
    yield term
    term.close()


def test_a_conversation_in_the_terminal(terminal: Terminal) -> None:
    terminal.expect("bot 'shop', you are +79031234567", "/help lists the commands")

    terminal.type("hi")
    terminal.expect("bot: Menu: 1) Margherita 2) Pepperoni", "· entered flow order at menu")

    terminal.type("1")
    terminal.expect("bot: Which size: S, M or L?", "· flow order: menu → size")

    terminal.type("/state")
    terminal.expect(
        "flow    order, state size  (triggers: sized, upsized, cancel)",
        'data    {"pizza": "Margherita"}',
        "window  open, closes ",
    )

    # 25 hours of silence: the order's 30-minute timeout fires on the way.
    terminal.type("/wait 25")
    terminal.expect("· the clock moved 25 h forward", "· left flow order (was at size)")
    terminal.type("/state")
    terminal.expect(
        "window  closed since ", "replies go as template come_back", "ahead of real time"
    )

    # The bot writing first, outside the window: its default template goes instead.
    terminal.type("/send Your pizza is ready")
    terminal.expect("bot: [template come_back friend]")

    terminal.type("/location 55.75 37.62")
    terminal.expect("bot: You are at 55.75, 37.62.")

    terminal.type("/media https://example.com/a.jpg image/jpeg")
    terminal.expect("bot: Nice image!")

    terminal.type("/contact Ann 79035551234")
    terminal.expect("bot: Thanks for the card of Ann.")

    terminal.type("/quit")
    assert terminal.exit_code() == 0


def test_mistyped_commands_show_their_usage_and_the_chat_goes_on(terminal: Terminal) -> None:
    terminal.expect("/help lists the commands")

    terminal.type("/location north")
    terminal.expect("! usage: /location LAT LON [NAME]   e.g. /location 55.75 37.62")
    terminal.type("/wait soon")
    terminal.expect("! usage: /wait HOURS")
    terminal.type("/help")
    terminal.expect("/media URL TYPE [CAPTION]", "/quit")

    # A /word the chat does not know is the bot's business: it goes as text.
    terminal.type("/start")
    terminal.expect("bot: Menu: 1) Margherita", "at menu\nyou: ")

    os.write(terminal.master, b"\x04")  # Ctrl-D at the prompt leaves too
    assert terminal.exit_code() == 0


def test_a_bad_number_is_one_line_and_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "botkit", "chat", "bots.echo", "--as", "12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("botkit chat: --as 12: ")


def test_help_lists_the_commands() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "botkit", "chat", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert run.returncode == 0
    for word in ("--as NUMBER", "/media", "/location", "/contact", "/state", "/wait"):
        assert word in run.stdout


def test_piped_input_gives_a_readable_transcript() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "botkit", "chat", "tests.devtools.shop_bot"],
        cwd=ROOT,
        input="hi\n2\n",
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout  # not a terminal: no colours
    assert run.stdout.splitlines()[2:] == [
        "you: hi",
        "bot: Menu: 1) Margherita 2) Pepperoni",
        "  · entered flow order at menu",
        "you: 2",
        "bot: Which size: S, M or L?",
        "  · flow order: menu → size",
        "you: ",
    ]


FAILING_BOT = """
from botkit import Bot, Context

bot = Bot("fails")


def quantity(text: str) -> int:
    return int(text)


@bot.text()
async def order(ctx: Context) -> None:
    await ctx.reply(f"{quantity(ctx.text)} pizzas")
"""


@pytest.mark.parametrize("flag", [[], ["--traceback"]], ids=["one-line", "traceback"])
def test_a_failing_handler_is_one_line_unless_the_traceback_is_asked_for(
    tmp_path: Path, flag: list[str]
) -> None:
    (tmp_path / "failing.py").write_text(FAILING_BOT)
    run = subprocess.run(
        [sys.executable, "-m", "botkit", "chat", "failing", "--no-color", *flag],
        cwd=tmp_path,
        input="two\n",
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # the chat says it; the log does not repeat it
    said = run.stdout.splitlines()[2:]
    assert said[:2] == [
        "you: two",
        "! handler order raised ValueError: invalid literal for int() with base 10: 'two' "
        "at failing.py:8 in quantity (nothing was saved)",
    ]
    if flag:
        trace = "\n".join(said[2:])
        assert trace.startswith("Traceback (most recent call last):")
        assert 'failing.py", line 8, in quantity' in trace
    else:
        assert said[2:] == ["you: "]


def test_state_shows_pending_timers_and_wait_fires_them() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "botkit", "chat", "bots.reminder"],
        cwd=ROOT,
        input="remind me in 2 minutes tea\n/state\n/wait 0.05\n/state\n",
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "bot: ok, I will remind you in 2 minutes" in out
    first_state, _, after_wait = out.partition("/wait")
    assert re.search(r"timer   reminder-1 at .* \(in 1m", first_state), first_state
    assert "  · timers fired:\nbot: reminder: tea" in after_wait
    assert "timer   reminder-1" not in after_wait, "fired: no longer pending"
