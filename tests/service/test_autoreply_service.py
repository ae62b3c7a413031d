"""The auto-reply service as an operator runs it: ``botkit run bots.autoreply:bot``.

The rules file is re-read without a restart (on SIGHUP, and when the file
changes, in every worker); a bad file keeps the rules in force and logs one
line per problem; ``botkit autoreply check`` checks a file and shows answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from itertools import count
from pathlib import Path

import pytest

from tests.service._harness import (
    API_KEY,
    CALLBACK_SECRET,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    run_cli,
)
from tests.service.conftest import Provider

RULES = """
[service]
timezone = "UTC"
default_reply = "{default}"

[[rules]]
keywords = ["price"]
reply = "{price}"
"""
BAD = """
[service]
timezone = "Mars/Olympus"
default_reply = "x"

[[rules]]
regex = "order ("
reply = "y"
"""

_users = count(1)


def write_rules(path: Path, price: str, default: str = "Hello!") -> None:
    # Written to a new file and renamed over the old one, as editors and
    # Kubernetes' ConfigMap updates do: a reader never sees half a file.
    fresh = path.with_suffix(".new")
    fresh.write_text(RULES.format(price=price, default=default))
    fresh.replace(path)


async def start(
    processes: list[BotProcess],
    provider: Provider,
    rules: Path,
    tmp_path: Path,
    *,
    workers: int = 1,
    redis: tuple[str, str] | None = None,
    **settings: str,
) -> BotProcess:
    port = free_port()
    env = clean_env(
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_URL=provider.url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="Shop",
        BOTKIT_CALLBACK_SECRET=CALLBACK_SECRET,
        BOTKIT_AUTOREPLY_RULES=str(rules),
        **settings,
    )
    if redis is not None:
        env |= {"BOTKIT_REDIS_URL": redis[0], "BOTKIT_KEY_PREFIX": redis[1]}
    args = ["run", "bots.autoreply:bot", "--host", "127.0.0.1", "--port", str(port)]
    service = BotProcess([*args, "--workers", str(workers)], env, tmp_path / "service.log")
    processes.append(service)
    service.start()
    await service.wait_healthy(f"http://127.0.0.1:{port}", workers=workers)
    provider.emulator.webhook_url = f"http://127.0.0.1:{port}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    return service


async def answer_to(provider: Provider, text: str) -> str:
    """What a new user gets for ``text``."""
    user = f"7903{next(_users):07d}"
    before = len(provider.emulator.messages)
    await provider.emulator.inject(user, text)
    await provider.emulator.wait_for_messages(before + 1)
    [reply] = [m for m in provider.emulator.messages if m.message.to == user]
    return str(reply.received["text"])


async def test_sighup_reloads_the_rules_and_a_bad_file_keeps_them(
    provider: Provider, processes: list[BotProcess], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    write_rules(rules, "Prices: 100.")
    service = await start(processes, provider, rules, tmp_path)
    assert await answer_to(provider, "price?") == "Prices: 100."

    write_rules(rules, "Prices: 120.")
    service.signal(signal.SIGHUP)
    await service.wait_for_log("rules reloaded from")
    assert f"rules reloaded from {rules} (SIGHUP): 1 rule\n" in service.log()
    assert await answer_to(provider, "price?") == "Prices: 120."
    assert service.running, "SIGHUP reloads; it does not stop the service"

    bad = rules.with_suffix(".new")
    bad.write_text(BAD)
    bad.replace(rules)
    service.signal(signal.SIGHUP)
    await service.wait_for_log("rules not reloaded", count=2)
    # The rules in force stay, and each problem is one line naming the line.
    assert await answer_to(provider, "price?") == "Prices: 120."
    problems = [line for line in service.log().splitlines() if "rules not reloaded" in line]
    assert len(problems) == 2, service.log()
    assert f"{rules}, line 3: [service] timezone: unknown time zone" in problems[0]
    assert f"{rules}, line 7: [[rules]] #1: regex: bad regular expression" in problems[1]
    assert "Traceback" not in service.log()


async def test_every_worker_follows_a_changed_file(
    provider: Provider,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    processes: list[BotProcess],  # last: the service stops before its Redis keys go
) -> None:
    rules = tmp_path / "rules.toml"
    write_rules(rules, "Prices: 100.", default="Hi!")
    service = await start(
        processes,
        provider,
        rules,
        tmp_path,
        workers=2,
        redis=(redis_url, redis_prefix),
        BOTKIT_LOG_FORMAT="json",
    )
    write_rules(rules, "Prices: 150.", default="Hi again!")
    # Each worker sees the change on its own (no signal, no restart).
    await service.wait_for_log("rules reloaded from", count=2, within=30)
    assert "(the file changed)" in service.log()
    # Users answered by each of the two workers get the new rules.
    assert len(await workers_answering(provider, service, "price", "Prices: 150.", workers=2)) == 2
    assert len(await workers_answering(provider, service, "hello", "Hi again!", workers=2)) == 2


def test_check_shows_what_each_message_gets(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        """
[service]
timezone = "Europe/Berlin"
cooldown_hours = 4
default_reply = "Thanks!"

[hours]
mon-fri = "09:00-18:00"
closed_dates = ["2026-12-24", "12-31"]
out_of_hours_reply = "We are closed."

[[rules]]
keywords = ["price"]
reply = "Prices: see the list."

[[rules]]
regex = 'order\\s*#?(?P<id>\\d+)'
reply = "Order {id}: on its way."
"""
    )
    done = run_cli(
        [
            "autoreply",
            "check",
            str(rules),
            "How much? price!",
            "order #77",
            "hi",
            "--at",
            "2026-12-24 10:00",
        ],
        clean_env(),
    )
    assert done.returncode == 0, done.stderr
    summary, *answers = done.stdout.splitlines()
    assert summary == (
        f"{rules}: 2 rules; hours in Europe/Berlin, 2 closed dates; cooldown 4 h; "
        "at 2026-12-24 10:00 CET (closed)"
    )
    assert answers == [
        '  "How much? price!" ->  rule at line 12: Prices: see the list.',
        '  "order #77"        ->  rule at line 16: Order 77: on its way.',
        '  "hi"               ->  out_of_hours_reply: We are closed.',
    ]
    # The next day is an ordinary Friday: open.
    done = run_cli(
        ["autoreply", "check", str(rules), "hi", "--at", "2026-12-25 10:00"], clean_env()
    )
    assert done.stdout.splitlines()[1] == '  "hi" ->  default_reply: Thanks!'


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (BAD, ["line 3: [service] timezone: unknown time zone", "line 7: [[rules]] #1: regex"]),
        (
            '[hours]\nmon = "09:00-18:00"\nclosed_dates = ["2026-13-01"]\nout_of_hours_reply = "x"',
            ["line 3: [hours] closed_dates: '2026-13-01' is not a date"],
        ),
    ],
)
def test_check_lists_every_problem_of_a_bad_file(
    tmp_path: Path, content: str, says: list[str]
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(content)
    done = run_cli(["autoreply", "check", str(rules)], clean_env())
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == len(says)
    for line, fragment in zip(lines, says, strict=True):
        assert line.startswith(f"botkit autoreply: {rules}, ") and fragment in line


def rewrite_unseen(path: Path, old: str, new: str) -> None:
    """Change the file where it is, keeping its size, inode and modification time.

    The file watch (size, inode, mtime) cannot see such an edit: only a
    SIGHUP makes the service read it.
    """
    before = os.stat(path)
    text = path.read_text()
    assert len(old) == len(new) and old in text
    with path.open("r+") as file:
        file.write(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )


def records(service: BotProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]


async def workers_answering(
    provider: Provider, service: BotProcess, text: str, want: str, workers: int
) -> set[int]:
    """Send ``text`` from new users, a few at once, until ``workers`` processes answered.

    Every answer must be ``want``; returns the pids of the workers that answered.
    """
    answered: set[int] = set()
    deadline = time.monotonic() + 60
    while len(answered) < workers:
        assert time.monotonic() < deadline, f"only workers {answered} answered within 60 s"
        # New connections, several at once, which the workers share out (the
        # emulator's client would keep sending on connections one worker holds).
        await provider.emulator.aclose()
        users = [f"7904{next(_users):07d}" for _ in range(6)]
        before = len(provider.emulator.messages)
        await asyncio.gather(*(provider.emulator.inject(user, text) for user in users))
        await provider.emulator.wait_for_messages(before + len(users))
        replies = {m.message.to: m.received["text"] for m in provider.emulator.messages}
        assert [replies[user] for user in users] == [want] * len(users)
        masked = {f"...{user[-4:]}" for user in users}
        await service.wait_for_log(f"...{users[-1][-4:]}")  # the turn lines are written
        for record in records(service):
            if record.get("logger") == "botkit.turn" and record.get("user") in masked:
                answered.add(int(str(record["pid"])))
    return answered


async def test_sighup_to_botkit_run_reloads_the_rules_in_every_worker_without_a_restart(
    provider: Provider,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    processes: list[BotProcess],  # last: the service stops before its Redis keys go
) -> None:
    rules = tmp_path / "rules.toml"
    write_rules(rules, "Prices: 100.")
    service = await start(
        processes,
        provider,
        rules,
        tmp_path,
        workers=2,
        redis=(redis_url, redis_prefix),
        BOTKIT_LOG_FORMAT="json",
    )
    before = await workers_answering(provider, service, "price?", "Prices: 100.", workers=2)
    parent = service.process.pid if service.process else 0
    assert parent not in before

    rewrite_unseen(rules, "Prices: 100.", "Prices: 200.")
    service.signal(signal.SIGHUP)  # to the process the operator started, as systemctl reload does
    await service.wait_for_log("(SIGHUP): 1 rule", count=2)
    reloaded = {
        int(str(r["pid"])) for r in records(service) if "(SIGHUP): 1 rule" in str(r["message"])
    }
    assert reloaded == before  # each worker reloaded in place

    after = await workers_answering(provider, service, "price?", "Prices: 200.", workers=2)
    assert after == before, "the same workers answer: none was restarted"
    started = [
        r for r in records(service) if str(r["message"]).startswith("Started server process")
    ]
    assert len(started) == 2
    assert "(the file changed)" not in service.log()
    assert service.running
