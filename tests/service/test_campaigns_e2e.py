"""Campaigns end to end: ``botkit run --workers 2`` on Redis, the emulator over HTTP,
the campaign started, followed and reported with the ``botkit campaign`` command.

The issue's scenarios: a 5,000-row audience with 50 opted out, 20 invalid
numbers, 30 duplicates and 10 numbers the emulator treats as not on
WhatsApp; and a worker killed with SIGKILL mid-campaign.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from botkit.storage.campaigns import CampaignState, CampaignTotals
from botkit.storage.redis import RedisStore
from tests.service._harness import (
    API_KEY,
    API_TOKEN,
    ROOT,
    WEBHOOK_TOKEN,
    BotProcess,
    clean_env,
    free_port,
    run_env,
    wait_for,
)
from tests.service.test_crash_duplicates import workers_of

TARGET = "tests.service.campaignbot:bot"


class Provider:
    """The emulator in a process of its own (``botkit emulator``), driven over HTTP.

    Not in the test's event loop: thousands of status callbacks would starve
    this process's loop on a loaded machine and make the provider look hung.
    """

    def __init__(self, url: str, process: BotProcess) -> None:
        self.url = url
        self.process = process
        self.http = httpx.AsyncClient(base_url=url, timeout=60)

    async def configure(self, **fields: object) -> None:
        answer = await self.http.post("/_emulator/config", json=fields)
        assert answer.status_code == 200, answer.text

    async def inject(self, sender: str, text: str) -> int:
        answer = await self.http.post("/_emulator/incoming", json={"from": sender, "text": text})
        assert answer.status_code == 200, answer.text
        status: int = answer.json()["webhookStatus"]
        return status

    async def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.http.get("/_emulator/messages")).json()
        return found

    async def stats(self) -> dict[str, int]:
        found: dict[str, int] = (await self.http.get("/_emulator/stats")).json()
        return found


@dataclass
class Service:
    """``botkit run`` serving the campaign bot, and what the command line needs."""

    process: BotProcess
    url: str
    env: dict[str, str]
    store: RedisStore

    async def totals(self, name: str) -> CampaignTotals:
        campaigns = self.store.campaigns()
        campaign = await campaigns.get(name)
        assert campaign is not None
        return await campaigns.totals(campaign)

    async def wait(self, name: str, what: str, check: object, within: float = 180) -> None:
        async def holds() -> bool:
            return bool(check(await self.totals(name)))  # type: ignore[operator]

        await wait_for(holds, within=within, what=what, every=0.2)


@pytest.fixture
async def provider(processes: list[BotProcess], tmp_path: Path) -> AsyncIterator[Provider]:
    port = free_port()
    args = ["emulator", "--port", str(port), "--api-key", API_KEY, "--log-level", "warning"]
    process = BotProcess(args, clean_env(), tmp_path / "emulator.log")
    processes.append(process)
    process.start()
    remote = Provider(f"http://127.0.0.1:{port}", process)

    async def answers() -> bool:
        try:
            return (await remote.http.get("/_emulator/stats")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(answers, within=30, what="the emulator to answer")
    try:
        yield remote
    finally:
        await remote.http.aclose()


@pytest.fixture
async def service(
    provider: Provider,
    processes: list[BotProcess],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Service]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = run_env(
        provider.url,
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_PUBLIC_URL=url,
        BOTKIT_API_TOKEN=API_TOKEN,
        BOTKIT_REDIS_SHARDS="32",
        # A provider slowed by a loaded machine is waited for, not resent to.
        BOTKIT_DEVINO_TIMEOUT="30",
        BOTKIT_DEVINO_ATTEMPTS="1",
        BOTKIT_RECEIPT_GRACE="3",
    )
    args = ["run", TARGET, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    process = BotProcess(args, env, tmp_path / "botkit.log")
    processes.append(process)
    process.start()
    await process.wait_healthy(url, workers=2, within=60)
    await provider.configure(webhookUrl=f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}")
    store = RedisStore(redis_url, bot="campaignbot", prefix=redis_prefix)
    try:
        yield Service(process, url, env, store)
    finally:
        process.stop()  # before the test's keys are deleted
        await store.close()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(args: list[str], env: dict[str, str], *, timeout: float = 60) -> Ran:
    """``botkit ARGS`` in a subprocess, awaited: the emulator shares this event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "botkit",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def phone(n: int) -> str:
    return f"7905{n:07d}"


def write_audience(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "code"])
        writer.writerows(rows)


def campaign_sends(messages: list[dict[str, Any]], template: str) -> list[str]:
    return [m["message"]["to"] for m in messages if m["message"].get("templateId") == template]


async def test_five_thousand_recipients_each_valid_one_once_totals_and_report_match(
    provider: Provider, service: Service, tmp_path: Path
) -> None:
    valid = [phone(n) for n in range(4950)]
    opted_out, not_on_whatsapp = valid[100:150], valid[200:210]
    await provider.configure(notOnWhatsApp=not_on_whatsapp)
    # 50 users unsubscribed (the opt-out plugin) ...
    for start in range(0, 50, 25):
        answers = await asyncio.gather(
            *(provider.inject(user, "STOP") for user in opted_out[start : start + 25])
        )
        assert set(answers) == {200}
    # ... and 10 numbers got a 2305 earlier (a message through the send API).
    async with httpx.AsyncClient(
        base_url=service.url, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as http:
        for user in not_on_whatsapp:
            body = {"to": user, "template": {"id": "hello"}}
            assert (await http.post("/api/send", json=body)).status_code == 202

    async def marked() -> bool:
        failed = [
            m
            for m in await provider.messages()
            if m["message"]["to"] in not_on_whatsapp and m["callbacks"]
        ]
        return len(failed) == 10 and all(m["callbacks"][-1]["httpStatus"] == 200 for m in failed)

    await wait_for(marked, within=60, what="the 2305s reported to the bot")
    before = len(await provider.messages())

    rows = [[user, f"name{n}", f"C{n}"] for n, user in enumerate(valid)]
    rows += [[valid[n * 7], "again", "dup"] for n in range(30)]  # 30 duplicates
    rows += [[f"12{n}", "bad", "x"] for n in range(10)]  # too short
    rows += [[f"+0 903 {n:03d}", "bad", "x"] for n in range(5)]  # leading zero
    rows += [[f"call me {n}", "bad", "x"] for n in range(5)]  # not a number
    assert len(rows) == 5000
    audience = tmp_path / "audience.csv"
    write_audience(audience, rows)
    started = await run_cli(
        [
            "campaign", "start", TARGET, "--name", "big", "--template", "promo",
            "--language", "en", "--audience", str(audience), "--param-columns", "name,code",
            "--rate", "0",
        ],
        service.env,
        timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "campaign big started" in started.stdout
    try:
        watched = await run_cli(
            ["campaign", "status", "big", "--watch", "--every", "0.5"], service.env, timeout=240
        )
    except TimeoutError:
        raise AssertionError(f"not done after 240 s: {await service.totals('big')}") from None
    assert watched.returncode == 0, watched.stderr
    assert "campaign big: done" in watched.stdout
    assert "100%  4,950 of 4,950" in watched.stdout

    expected = set(valid) - set(opted_out) - set(not_on_whatsapp)
    messages = await provider.messages()
    sent = campaign_sends(messages, "promo")
    assert len(sent) == len(set(sent)) == 4890, Counter(sent).most_common(3)
    assert set(sent) == expected
    assert len(messages) - before == 4890  # nothing else went to anyone
    totals = await service.totals("big")
    assert (totals.audience, totals.queued, totals.sent) == (4950, 0, 4890)
    assert totals.skipped == {
        "duplicate": 30,
        "invalid": 20,
        "not_on_whatsapp": 10,
        "opted_out": 50,
    }

    # Statuses keep coming (three callbacks a message): each is one the provider gave.
    now = await service.totals("big")
    assert now.read <= now.delivered <= 4890
    assert now.failed == {}
    status = await run_cli(["campaign", "status", "big"], service.env)
    assert "skipped by reason: duplicate 30, invalid 20, not_on_whatsapp 10, opted_out 50" in (
        status.stdout
    )
    [first] = [m["message"] for m in messages if m["message"]["to"] == valid[0]]
    assert first["templateParams"] == {"1": "name0", "2": "C0"}

    report = tmp_path / "report.csv"
    written = await run_cli(["campaign", "report", "big", "--csv", str(report)], service.env)
    assert written.returncode == 0, written.stderr
    with report.open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 4950 + 20
    by_phone = {line["phone"]: line for line in lines}
    provider_record = {
        m["message"]["to"]: m
        for m in await provider.messages()
        if m["message"].get("templateId") == "promo"
    }
    for user in expected:
        line, message = by_phone[user], provider_record[user]
        assert (line["result"], line["message_id"]) == ("sent", message["messageId"])
        given = {"accepted"} | {c["status"].lower() for c in message["callbacks"]}
        assert line["status"] in given, (user, line, given)
        assert line["error_code"] == ""
    assert {by_phone[u]["result"] for u in opted_out} == {"skipped:opted_out"}
    assert {by_phone[u]["result"] for u in not_on_whatsapp} == {"skipped:not_on_whatsapp"}
    invalid = [line for line in lines if line["result"] == "skipped:invalid"]
    assert sorted(line["phone"] for line in invalid) == sorted(row[0] for row in rows[-20:])


async def test_a_worker_killed_mid_campaign_leaves_no_recipient_twice_and_none_missed(
    provider: Provider, service: Service, tmp_path: Path
) -> None:
    await provider.configure(responseDelay=1.0)  # each batch spends a second at the provider
    users = [phone(n) for n in range(2000)]
    audience = tmp_path / "audience.csv"
    write_audience(audience, [[u, "n", "c"] for u in users])
    started = await run_cli(
        [
            "campaign", "start", TARGET, "--name", "crash", "--template", "promo",
            "--audience", str(audience), "--rate", "0",
        ],
        service.env,
        timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    workers = workers_of(service.process)
    assert len(workers) == 2

    async def under_way() -> bool:
        stats = await provider.stats()
        # Each worker has a batch at the provider most of the time (a second each).
        return stats["messages"] >= 300 and stats["inFlight"] >= 1

    await wait_for(under_way, within=120, what="the campaign under way")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)

    await service.wait(
        "crash", "the campaign to finish", lambda t: t.state is CampaignState.DONE, within=240
    )

    async def idle() -> bool:
        return (await provider.stats())["inFlight"] == 0

    await wait_for(idle, within=60, what="the last batch answered")
    sent = campaign_sends(await provider.messages(), "promo")
    twice = [user for user, n in Counter(sent).items() if n > 1]
    assert twice == [], f"{len(twice)} recipients got the campaign twice"
    assert set(sent) == set(users)
    totals = await service.totals("crash")
    assert (totals.sent, totals.queued) == (2000, 0)
    assert victim not in workers_of(service.process)
