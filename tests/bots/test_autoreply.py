"""The auto-reply service: its rules file, matching, business hours, cooldown, bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from botkit import ManualClock
from botkit.testing import BotTester, LiveBot
from bots.autoreply import (
    EXAMPLE_RULES,
    RULES_ENV,
    RulesError,
    build_bot,
    load_rules,
    parse_rules,
    rules_path,
)

ROOT = Path(__file__).resolve().parents[2]

RULES = """
[service]
timezone = "Europe/Moscow"
cooldown_hours = 4
default_reply = "Thanks! We will get back to you."

[hours]
mon-fri = "09:00-18:00"
sat = "10:00-14:00"
out_of_hours_reply = "We are closed now; we open at 9:00."

[[rules]]
keywords = ["price", "how much"]
reply = "Our prices: see the list."

[[rules]]
regex = 'order\\s*#?(?P<id>\\d+)'
reply = "Order {id}: we are checking it."

[[rules]]
keywords = ["order"]
reply = "Which order? Send its number."

[[rules]]
keywords = ["address"]
reply = "We are at 1 Main St {{ground floor}}."
cooldown_hours = 0
"""

DEFAULT = "Thanks! We will get back to you."
CLOSED = "We are closed now; we open at 9:00."


def utc(text: str) -> float:
    """Unix time of a UTC wall-clock time, ``"2025-03-03 07:00"`` (a Monday)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def service_at(rules: str = RULES, at: str = "2025-03-03 07:00") -> BotTester:
    """The service with ``rules``, its clock frozen at ``at`` (UTC; 10:00 in Moscow)."""
    return BotTester(build_bot(parse_rules(rules)), clock=ManualClock(utc(at), frozen=True))


@pytest.fixture(autouse=True)
def _no_extra_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BOTKIT_PLUGINS", raising=False)
    yield


# -- matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("What's the PRICE?", "Our prices: see the list."),
        ("how   much is it", "Our prices: see the list."),
        ("priceless!", DEFAULT),  # a keyword matches whole words only
        ("where is order #123?", "Order 123: we are checking it."),
        ("ORDER 77", "Order 77: we are checking it."),
        ("my order is late", "Which order? Send its number."),  # the first match wins
        ("what is your address", "We are at 1 Main St {ground floor}."),
        ("hello", DEFAULT),
    ],
)
async def test_the_first_matching_rule_answers_else_the_default(text: str, reply: str) -> None:
    async with service_at() as chat:
        assert (await chat.send_text(text)).texts == [reply]


async def test_a_media_caption_is_matched_and_other_messages_get_the_default() -> None:
    async with service_at() as chat:
        replies = await chat.send_media("https://example.com/a.jpg", "image/jpeg", caption="price?")
        assert replies.texts == ["Our prices: see the list."]
        assert (await chat.send_location(55.7, 37.6)).texts == [DEFAULT]


async def test_without_a_default_reply_unmatched_messages_get_nothing() -> None:
    rules = '[[rules]]\nkeywords = ["price"]\nreply = "Prices."\n'
    async with service_at(rules) as chat:
        assert (await chat.send_text("hello")).texts == []
        assert (await chat.send_text("price")).texts == ["Prices."]


# -- business hours ------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "reply"),
    [
        ("2025-03-03 06:00", DEFAULT),  # Mon 09:00 in Moscow: opening time
        ("2025-03-03 05:59", CLOSED),  # Mon 08:59 in Moscow, though 05:59 UTC
        ("2025-03-03 14:59", DEFAULT),  # Mon 17:59
        ("2025-03-03 15:00", CLOSED),  # Mon 18:00 in Moscow, only 15:00 in UTC
        ("2025-03-07 22:30", CLOSED),  # Sat 01:30 in Moscow, still Friday in UTC
        ("2025-03-08 07:00", DEFAULT),  # Sat 10:00
        ("2025-03-08 11:00", CLOSED),  # Sat 14:00
        ("2025-03-09 08:00", CLOSED),  # Sunday: not listed, closed
        ("2025-03-09 21:30", CLOSED),  # Mon 00:30 in Moscow
    ],
)
async def test_business_hours_are_in_the_rules_time_zone(at: str, reply: str) -> None:
    async with service_at(at=at) as chat:
        assert (await chat.send_text("hello")).texts == [reply]


async def test_rules_answer_out_of_hours_too() -> None:
    async with service_at(at="2025-03-09 08:00") as chat:
        assert (await chat.send_text("price")).texts == ["Our prices: see the list."]


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        ("2025-01-13 14:00", True),  # 09:00 EST (UTC-5)
        ("2025-01-13 13:30", False),  # 08:30 EST
        ("2025-07-14 13:00", True),  # 09:00 EDT (UTC-4): daylight saving time
        ("2025-07-14 21:00", False),  # 17:00 EDT
    ],
)
async def test_hours_follow_daylight_saving_time(at: str, is_open: bool) -> None:
    rules = """
[service]
timezone = "America/New_York"
default_reply = "open"
[hours]
mon-fri = "09:00-17:00"
out_of_hours_reply = "closed"
"""
    async with service_at(rules, at=at) as chat:
        assert (await chat.send_text("hi")).texts == ["open" if is_open else "closed"]


async def test_hours_past_midnight_and_with_a_break() -> None:
    rules = """
[service]
timezone = "Asia/Tokyo"
default_reply = "open"
[hours]
fri = "20:00-02:00"
mon = ["09:00-12:00", "13:00-17:00"]
out_of_hours_reply = "closed"
"""
    cases = {
        "2025-03-07 10:59": "closed",  # Fri 19:59 in Tokyo
        "2025-03-07 11:00": "open",  # Fri 20:00
        "2025-03-07 16:59": "open",  # Sat 01:59, still Friday's evening
        "2025-03-07 17:00": "closed",  # Sat 02:00
        "2025-03-03 03:30": "closed",  # Mon 12:30, the break
        "2025-03-03 04:00": "open",  # Mon 13:00
    }
    for n, (at, expected) in enumerate(cases.items()):
        async with service_at(rules, at=at) as chat:
            assert (await chat.send_text("hi", user=f"7903000000{n}")).texts == [expected], at


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-12-24 10:00", "closed"),  # Thu 11:00 in Berlin, a closed date
        ("2026-12-23 10:00", "open"),  # the day before
        ("2026-12-31 10:00", "closed"),  # 12-31: closed every year
        ("2027-12-31 10:00", "closed"),
        ("2026-12-30 22:30", "open"),  # Wed 23:30: the late shift, not a closed date
        ("2026-12-31 00:30", "open"),  # Thu 01:30: the night before is not closed
        ("2027-01-01 00:30", "closed"),  # Fri 01:30: last night (12-31) was closed
    ],
)
async def test_closed_dates_close_the_whole_day(at: str, expected: str) -> None:
    rules = """
[service]
timezone = "UTC"
default_reply = "open"
[hours]
timezone = "Europe/Berlin"
mon-tue = "09:00-18:00"
wed-thu = ["09:00-18:00", "22:00-02:00"]
fri = "09:00-18:00"
closed_dates = ["2026-12-24", "12-31", 2027-06-01]
out_of_hours_reply = "closed"
"""
    parsed = parse_rules(rules)
    assert parsed.hours is not None and parsed.hours.zone.key == "Europe/Berlin"
    async with service_at(rules, at=at) as chat:
        assert (await chat.send_text("hi")).texts == [expected], at


# -- cooldown --------------------------------------------------------------------


async def test_the_same_auto_reply_is_not_repeated_within_the_cooldown() -> None:
    async with service_at() as chat:
        assert (await chat.send_text("price")).texts == ["Our prices: see the list."]
        chat.advance(hours=3, minutes=59)
        assert (await chat.send_text("how much?")).texts == []
        assert (await chat.send_text("price", user="79035550000")).texts != [], "per user"
        chat.advance(minutes=1)
        assert (await chat.send_text("price")).texts == ["Our prices: see the list."]


async def test_different_replies_have_their_own_cooldown() -> None:
    async with service_at() as chat:
        assert (await chat.send_text("hello")).texts == [DEFAULT]
        assert (await chat.send_text("hello again")).texts == []
        assert (await chat.send_text("order 1")).texts == ["Order 1: we are checking it."]
        assert (await chat.send_text("order 2")).texts == ["Order 2: we are checking it."]
        assert (await chat.send_text("order #1")).texts == []
        # A rule with cooldown_hours = 0 answers every time.
        assert len((await chat.send_text("address")).texts) == 1
        assert len((await chat.send_text("address")).texts) == 1


async def test_cooldown_records_are_forgotten_once_expired() -> None:
    async with service_at() as chat:
        await chat.send_text("hello")
        await chat.send_text("price")
        assert len((await chat.data())["autoreply_sent"]) == 2
        chat.advance(hours=5)
        await chat.send_text("order 9")
        assert len((await chat.data())["autoreply_sent"]) == 1


# -- the rules file ----------------------------------------------------------------


def test_the_example_file_is_valid_and_used_when_the_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RULES_ENV, raising=False)
    assert rules_path() == EXAMPLE_RULES
    rules = load_rules(EXAMPLE_RULES)
    assert rules.rules and rules.hours is not None and rules.out_of_hours_reply
    monkeypatch.setenv(RULES_ENV, "/etc/botkit/autoreply.toml")
    assert rules_path() == Path("/etc/botkit/autoreply.toml")


BAD_FILES = [
    # (the file, the line of the problem, a fragment of the message)
    ('[service]\ntimezone = "Europe/Moskow"\n', 2, "unknown time zone 'Europe/Moskow'"),
    ('[service]\ndefault_reply = "x"\ncolour = "red"\n', 3, "colour: unknown key"),
    ('[service]\ndefault_reply = "x"\ncooldown_hours = -2\n', 3, "cooldown_hours: must be"),
    ('[[rules]]\nkeywords = ["a"]\n\n[[rules]]\nregex = "(x"\nreply = "y"\n', 5, "#2: regex"),
    ('[[rules]]\nregex = "(?P<n>x)"\nreply = "got {m}"\n', 3, "{m} is not something"),
    ('[[rules]]\nkeywords = ["a"]\nreply = "got {m}"\n', 3, "{m} is not something"),
    ('[[rules]]\nkeywords = []\nreply = "y"\n', 2, "keywords: must be a list"),
    ('[[rules]]\nkeywords = ["a"]\n', 1, "reply: missing"),
    ('\n[[rules]]\nkeywords = ["a"]\nregex = "a"\nreply = "y"\n', 2, "exactly one"),
    ('[[rules]]\nkeywords = ["a"]\nreply = "y"\nwhen = "now"\n', 4, "when: unknown key"),
    ('[hours]\nmon-fri = "9-18"\nout_of_hours_reply = "x"\n', 2, "'9-18' is not a time"),
    ('[hours]\nmon = "09:00-25:00"\nout_of_hours_reply = "x"\n', 2, "does not exist"),
    ('[hours]\nmon = "09:00-09:00"\nout_of_hours_reply = "x"\n', 2, "same time"),
    ('[hours]\nmon-fri = "09:00-18:00"\nfri = "closed"\nout_of_hours_reply = "x"\n', 3, "fri"),
    ('[hours]\nweekdays = "09:00-18:00"\nout_of_hours_reply = "x"\n', 2, "not a day"),
    ('[hours]\nmon = "09:00-18:00"\n', 1, "out_of_hours_reply is missing"),
    ('[hours]\nout_of_hours_reply = "x"\n', 1, "lists no days"),
    ('[service]\ntimezone = "UTC"\n', 0, "nothing to answer"),
    (
        '[hours]\nmon = "09:00-18:00"\nclosed_dates = ["12-32"]\nout_of_hours_reply = "x"\n',
        3,
        "closed_dates: '12-32' is not a date",
    ),
    (
        '[hours]\nmon = "09:00-18:00"\nclosed_dates = "2026-01-01"\nout_of_hours_reply = "x"\n',
        3,
        "closed_dates: must be a list",
    ),
    (
        '[hours]\ntimezone = "Moon/Base"\nmon = "09:00-18:00"\nout_of_hours_reply = "x"\n',
        2,
        "[hours] timezone: unknown time zone",
    ),
    ('rules = "all"\n', 1, "must be [[rules]] tables"),
    ('[service]\nnote = """\ncolour = 1\n"""\ndefault_reply = "x"\n', 2, "note: unknown"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD_FILES)
def test_a_bad_rules_file_names_the_line_and_the_problem(
    text: str, line: int, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as failed:
        load_rules(path)
    where = f"{path}, line {line}: " if line else f"{path}: "
    lines = str(failed.value).splitlines()
    assert any(ln.startswith(where) and fragment in ln for ln in lines), lines


def test_every_problem_is_reported_at_once() -> None:
    text = (
        '[service]\ntimezone = "Mars/Olympus"\ncooldown_hours = "x"\n'
        '[[rules]]\nregex = "("\nreply = "y"\n'
    )
    with pytest.raises(RulesError) as failed:
        parse_rules(text, "r.toml")
    lines = str(failed.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "r.toml, line 2",
        "r.toml, line 3",
        "r.toml, line 5",
    ]


def test_a_toml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(RulesError) as failed:
        parse_rules('[service]\ndefault_reply = "x"\ntimezone = Europe/Moscow\n', "r.toml")
    assert str(failed.value).startswith("r.toml, line 3, column 12: not valid TOML")


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="no such rules file"):
        load_rules(tmp_path / "nope.toml")


def test_botkit_run_fails_before_serving_when_the_rules_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[service]\ndefault_reply = "x"\n\n[[rules]]\nregex = "order (\\\\d+"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    env |= {RULES_ENV: str(path), "BOTKIT_WEBHOOK_TOKEN": "t" * 24, "BOTKIT_SENDER": "x"}
    done = subprocess.run(
        [sys.executable, "-m", "botkit", "run", "bots.autoreply:bot", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert f"{path}, line 5: [[rules]] #1: regex: bad regular expression" in done.stderr


# -- end to end ------------------------------------------------------------------


async def test_e2e_rules_cooldown_and_hours_through_the_webhook() -> None:
    clock = ManualClock(utc("2025-03-03 07:00"))  # Mon 10:00 in Moscow, running
    async with LiveBot(build_bot(parse_rules(RULES)), clock=clock) as live:
        user = "79031234567"
        await live.say(user, "price?")
        await live.say(user, "price?")  # within the cooldown: no answer
        await live.say(user, "order #5")
        texts = [m.received["text"] for m in await live.replies(2)]
        assert texts == ["Our prices: see the list.", "Order 5: we are checking it."]

        clock.advance(hours=9)  # 19:00 in Moscow
        await live.say(user, "hello")
        messages = await live.replies(3)
        assert messages[2].received["text"] == CLOSED
