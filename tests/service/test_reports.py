"""``botkit transcript USER`` and ``botkit funnel MODULE[:ATTR]``, run as commands against a
real Redis the pizza bot wrote to, and against a served bot's /metrics."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import AsyncIterator

import pytest

from botkit import ManualClock, Runtime, TextMessage
from botkit.storage.redis import RedisStore
from botkit.testing import LiveBot
from bots.pizza import bot
from tests.conftest import delete_prefix, require_redis
from tests.service._harness import clean_env, run_cli
from tests.service.test_app import FAST

ANNA, BORIS = "79031230001", "79031230002"
_ids = itertools.count(1)


@pytest.fixture
async def written() -> AsyncIterator[dict[str, str]]:
    """Two pizza conversations written to a Redis of the test's own prefix; the env to read it."""
    url = require_redis()
    prefix = f"botkit-test-reports-{uuid.uuid4().hex[:10]}"
    clock = ManualClock(frozen=True)
    runtime = Runtime(bot, RedisStore(url, bot="pizza", prefix=prefix, shards=8), clock=clock)
    await runtime.start()

    async def say(user: str, text: str) -> None:
        message = TextMessage(id=f"r{next(_ids)}", user=user, text=text, timestamp=clock.now())
        await runtime.handle_message(message)
        clock.advance(1)

    try:
        for text in ("hi", "1", "L", "12 Baker Street", "yes"):
            await say(ANNA, text)
        for text in ("hi", "2", "agent"):
            await say(BORIS, text)
    finally:
        await runtime.stop()
    yield clean_env(BOTKIT_REDIS_URL=url, BOTKIT_KEY_PREFIX=prefix)
    delete_prefix(url, prefix)


def test_botkit_transcript_prints_a_users_conversation(written: dict[str, str]) -> None:
    done = run_cli(["transcript", "+7 903 123-00-01", "--target", "bots.pizza:bot"], written)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"transcript of +{ANNA}")
    assert lines[1].endswith("<- hi")
    assert lines[2].endswith(".. flow order: entered at menu")
    assert re.search(r"-> What would you like\?.*", done.stdout)
    assert lines[-1].endswith(".. flow order: left from confirm (final)") or "Order #" in lines[-1]
    assert "flow order: confirm -> placed" in done.stdout


def test_botkit_transcript_needs_redis_and_a_bot() -> None:
    done = run_cli(["transcript", ANNA, "--target", "bots.pizza:bot"], clean_env())
    assert done.returncode == 2 and "BOTKIT_REDIS_URL" in done.stderr
    done = run_cli(["transcript", "not-a-number", "--target", "bots.pizza:bot"], clean_env())
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_botkit_funnel_counts_users_per_state_and_where_they_left(
    written: dict[str, str],
) -> None:
    done = run_cli(["funnel", "bots.pizza:bot", "--days", "30000"], written)
    assert done.returncode == 0, done.stderr
    rows = {
        line.split()[0]: line.split(None, 2)[1:]
        for line in done.stdout.splitlines()
        if line.startswith("  ") and not line.strip().startswith("state")
    }
    assert rows["menu"] == ["2", "-"]
    assert rows["size"] == ["2", "1 handoff"]  # Boris left to a person at the size step
    assert rows["confirm"] == ["1", "-"]
    assert rows["placed"] == ["1", "1 final"]
    assert rows["cancelled"] == ["0", "-"]


async def test_botkit_funnel_reads_a_services_metrics() -> None:
    async with LiveBot(bot, sender_config=FAST) as live:
        await live.say("79031239999", "hi")
        await live.say("79031239999", "cancel")
        await live.replies(2)
        args = ["funnel", "bots.pizza:bot", "--metrics", f"{live.url}/metrics"]
        done = await asyncio.to_thread(run_cli, args, clean_env())  # the loop serves /metrics
    assert done.returncode == 0, done.stderr
    assert "since the service started" in done.stdout
    rows = {
        line.split()[0]: line.split(None, 2)[1:]
        for line in done.stdout.splitlines()
        if line.startswith("  ") and not line.strip().startswith("state")
    }
    assert int(rows["menu"][0]) >= 1
    reached, left = rows["cancelled"]  # "cancel" moves the pizza flow to its final state
    assert int(reached) >= 1 and "final" in left
