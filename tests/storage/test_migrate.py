"""The upgrade from the store's first layout (one outbox, a key per message) to the sharded one.

Data is written as the first layout's scripts wrote it; the new store refuses
to open on it and names the command, ``botkit run`` exits with that command,
and ``botkit store migrate`` moves conversations, send orders, queued and
delayed messages and sent records so that the new store carries on.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from botkit import OutboundMessage, SendMode
from botkit.storage import SentRecord
from botkit.storage.redis import RedisStore, StoreLayoutError
from botkit.storage.redis.keys import Keys
from tests.service._harness import API_KEY, WEBHOOK_TOKEN, clean_env, run_cli

pytestmark = pytest.mark.redis

ANNA, BORIS = "79031234567", "491791112233"


def message(user: str, body: str, **kw: object) -> OutboundMessage:
    return OutboundMessage(user=user, mode=SendMode.TEXT, text=body, **kw)  # type: ignore[arg-type]


def write_first_layout(check: redis.Redis, base: str) -> None:
    """What a bot on the first layout leaves: Anna mid-flow with a reply in flight."""
    check.hset(
        f"{base}:{{{ANNA}}}:conv",
        mapping={"state": "order:size", "data": '{"n":2}', "version": "2", "opted_out": "0"},
    )
    check.pexpire(f"{base}:{{{ANNA}}}:conv", 3_600_000)
    check.hset(f"{base}:{{{ANNA}}}:order", mapping={"next": "3", "done": "1"})
    check.set(f"{base}:{{{ANNA}}}:seen:m:1", "done", px=3_600_000)
    check.hset(f"{base}:{{{BORIS}}}:conv", mapping={"data": '{"n":1}', "version": "1"})
    outbox = f"{base}:outbox"
    check.xgroup_create(outbox, "senders", id="0", mkstream=True)
    check.xadd(outbox, {"m": message(ANNA, "second").to_json(), "s": "2"})
    check.xreadgroup("senders", "old-worker", {outbox: ">"}, count=1)  # read, never acked
    check.xadd(outbox, {"m": message(ANNA, "third").to_json(), "s": "3"})
    later = message(BORIS, "tomorrow", not_before=time.time() + 86_400)
    check.zadd(f"{base}:outbox:delayed", {later.to_json(): later.not_before})
    first = SentRecord(message_id="111", message=message(ANNA, "first"), sent_at=1.0)
    check.set(f"{base}:sent:111", first.to_json(), px=3_600_000)


async def test_an_old_layout_is_refused_then_migrated_and_the_store_carries_on(
    redis_url: str, redis_prefix: str
) -> None:
    check = redis.Redis.from_url(redis_url, decode_responses=True)
    base = f"{redis_prefix}:echo"
    write_first_layout(check, base)

    store = RedisStore(redis_url, bot="echo", prefix=redis_prefix)
    with pytest.raises(StoreLayoutError, match="botkit store migrate"):
        await store.open()
    await store.close()

    env = clean_env(
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
    )
    refused = run_cli(["run", "bots.echo:bot", "--port", "0"], env)
    assert refused.returncode == 2
    # The command to run, complete: copied from the message, it works.
    assert "run `botkit store migrate bots.echo:bot`" in refused.stderr

    migrated = run_cli(["store", "migrate", "bots.echo:bot"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert "2 conversations, 2 queued messages, 1 delayed messages, 1 sent" in migrated.stdout
    again = run_cli(["store", "migrate", "bots.echo:bot"], env)
    assert (again.returncode, "nothing to migrate" in again.stdout) == (0, True)

    store = RedisStore(redis_url, bot="echo", prefix=redis_prefix)
    await store.open()
    anna = await store.load(ANNA)
    assert (anna.state, anna.data, anna.version) == ("order:size", {"n": 2}, 2)
    assert 0 < check.pttl(Keys(redis_prefix, "echo").conv(ANNA)) <= 3_600_000
    assert (await store.load(BORIS)).data == {"n": 1}
    # Both queued replies, the one read before the upgrade too, in order with their numbers.
    items = await store.outbox_read("new-worker", 10, 0)
    assert [(i.message.text, i.seq) for i in items] == [("second", 2), ("third", 3)]
    assert await store.outbox_ready(items) == [True, True]  # "first" (1) was answered
    assert await store.outbox_release_due(time.time() + 2 * 86_400) == 1
    [later] = await store.outbox_read("new-worker", 10, 0)
    assert later.message.text == "tomorrow"
    record = await store.get_sent("111", user=ANNA)
    assert record is not None and record.message.text == "first"
    # A new turn numbers Anna's next reply after the moved ones.
    lease = await store.begin_turn(ANNA, "m:2")
    await store.commit_turn(lease, None, [message(ANNA, "fourth")])
    [fourth] = await store.outbox_read("new-worker", 10, 0)
    assert fourth.seq == 4
    assert check.keys(f"{base}:{{{ANNA}}}*") == [] and not check.exists(f"{base}:outbox")
    await store.close()
    check.close()


def write_second_layout(check: Any, base: str, shards: int) -> Keys:
    """What a bot on layout 2 leaves: Anna's send order in a hash of its own, a
    reply read and not acknowledged, and a receipt for it in a key of its own."""
    keys = Keys(base.rsplit(":", 1)[0], base.rsplit(":", 1)[1], shards)
    check.hset(keys.meta, mapping={"layout": "2", "shards": str(shards)})
    check.hset(keys.conv(ANNA), mapping={"data": '{"n":2}', "version": "2"})
    check.pexpire(keys.conv(ANNA), 3_600_000)
    check.hset(f"{keys.user(ANNA)}:order", mapping={"next": "3", "done": "1"})
    check.pexpire(f"{keys.user(ANNA)}:order", 7_200_000)
    # Boris has no conversation: only messages sent to him from outside a turn.
    check.hset(f"{keys.user(BORIS)}:order", mapping={"next": "1"})
    check.pexpire(f"{keys.user(BORIS)}:order", 3_600_000)
    outbox = keys.outbox(keys.shard(ANNA))
    check.xgroup_create(outbox, "senders", id="0", mkstream=True)
    second = message(ANNA, "second")
    check.xadd(outbox, {"m": second.to_json(), "s": "2"})
    check.xadd(outbox, {"m": message(ANNA, "third").to_json(), "s": "3"})
    receipt = f"{keys.user(ANNA)}:receipt:{second.ref}"
    check.hset(receipt, mapping={"id": "222", "s:DELIVERED": "1", "s:READ": "1"})
    check.pexpire(receipt, 3_600_000)
    return keys


@pytest.mark.parametrize("where", ["standalone", "cluster"])
async def test_layout_2_is_refused_then_folded_into_the_users_keys(
    where: str, redis_prefix: str, request: pytest.FixtureRequest
) -> None:
    check: Any
    if where == "cluster":  # layout 2 ran on Redis Cluster too
        redis_url = request.getfixturevalue("redis_cluster").url
        host, _, port = redis_url.removeprefix("redis+cluster://").split(",")[0].partition(":")
        check = RedisCluster(host=host, port=int(port), decode_responses=True)
    else:
        redis_url = request.getfixturevalue("redis_url")
        check = redis.Redis.from_url(redis_url, decode_responses=True)
    base = f"{redis_prefix}:echo"
    keys = write_second_layout(check, base, shards=16)

    store = RedisStore(redis_url, bot="echo", prefix=redis_prefix)
    with pytest.raises(StoreLayoutError, match=r"has layout 2, .*botkit store migrate"):
        await store.open()
    await store.close()

    env = clean_env(
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
    )
    migrated = run_cli(["store", "migrate", "bots.echo:bot"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert "2 send orders, 1 receipts" in migrated.stdout
    again = run_cli(["store", "migrate", "bots.echo:bot"], env)
    assert (again.returncode, "nothing to migrate" in again.stdout) == (0, True)
    assert not [*check.scan_iter(match=f"{base}:*:order")]
    assert not [*check.scan_iter(match=f"{base}:*:receipt:*")]

    store = RedisStore(redis_url, bot="echo", prefix=redis_prefix)
    await store.open()
    assert (await store.load(ANNA)).data == {"n": 2}
    # The conversation lives as long as the send order would have.
    assert 3_600_000 < check.pttl(keys.conv(ANNA)) <= 7_200_000
    second, third = await store.outbox_read("new-worker", 10, 0)
    # Anna's order moved ("first", 1, was answered): "third" (3) alone waits for
    # "second" (2); read together they go in one batch, in order.
    assert await store.outbox_ready([third]) == [False]
    assert await store.outbox_ready([second, third]) == [True, True]
    # The receipt moved: the provider took "second" already, with both statuses.
    [receipt] = await store.receipts([second])
    assert receipt is not None
    assert (receipt.message_id, receipt.statuses) == ("222", frozenset({"DELIVERED", "READ"}))
    assert await store.receipts([third]) == [None]
    # Boris's next message outside a turn is numbered after the moved ones.
    await store.enqueue([message(BORIS, "hello")])
    [hello] = await store.outbox_read("new-worker", 10, 0)
    assert hello.seq == 2
    await store.close()
    check.close()
