"""Redis Cluster: the URL forms, the client, and unlock wake-ups over sharded pub/sub.

These run against the session's local 6-node cluster (3 primaries with a
replica each, see ``tests/storage/conftest.py``). A test that kills a
primary heals the cluster before it returns.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError

from botkit import OutboundMessage, SendMode
from botkit.storage import RedisStore, StoreConfig
from botkit.storage.redis.connection import (
    cluster_client,
    hosts,
    mask,
    node_client_factory,
)
from botkit.storage.redis.waiters import UnlockListener
from tests.helpers import wait_for

from ._redis_topologies import RedisClusterNodes

pytestmark = pytest.mark.redis

OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "retry": Retry(NoBackoff(), 0),
    "max_connections": 20,
}


def test_cluster_urls_name_every_seed_node_and_keep_passwords_out_of_messages() -> None:
    url = "redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002"
    assert hosts(url, default_port=6379) == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 6379),
        ("::1", 7002),
    ]
    assert "s3cret" not in mask(url)
    assert "s3cret" not in mask("rediss+cluster://10.0.0.1:7000?password=s3cret&username=app")
    with pytest.raises(ValueError, match="only database 0"):
        cluster_client("redis+cluster://10.0.0.1:7000/3", OPTIONS)
    with pytest.raises(ValueError, match=r"unknown .* parameter.*sentinel_password"):
        cluster_client("redis+cluster://10.0.0.1:7000?sentinel_password=x", OPTIONS)


async def test_one_seed_node_reaches_keys_in_every_slot_range(
    redis_cluster: RedisClusterNodes,
) -> None:
    client = cluster_client(f"redis+cluster://127.0.0.1:{redis_cluster.ports[-1]}", OPTIONS)
    try:
        prefix = uuid.uuid4().hex[:8]
        keys = [f"{prefix}:{{{n}}}" for n in range(60)]
        for key in keys:
            await client.set(key, key, ex=60)  # MOVED answers followed by redis-py
        assert [await client.get(key) for key in keys] == keys
        assert len({key_slot(k.encode()) * 3 // 16384 for k in keys}) == 3, "all 3 primaries"
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


async def test_wakeups_reach_every_primary_and_resume_after_a_failover(
    redis_cluster: RedisClusterNodes,
) -> None:
    url = redis_cluster.url
    publisher = cluster_client(url, OPTIONS)
    prefix = uuid.uuid4().hex[:8]
    channels = [f"{prefix}:{{{n}}}:unlock" for n in range(24)]
    heard: list[str] = []
    subscribed: list[int] = []
    listener = UnlockListener(
        None,
        channels,
        heard.append,
        lambda: subscribed.append(1),
        seeds=hosts(url, default_port=6379)[:1],  # one seed finds the rest
        node_client=node_client_factory(url, OPTIONS),
    )

    async def publish_all(tag: str) -> None:
        for channel in channels:
            for attempt in range(50):  # the publisher finds the new primary by failing once
                try:
                    await publisher.spublish(channel, f"{tag} {channel}")
                    break
                except (ConnectionError, RedisError):
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)

    async def until(condition: Callable[[], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 (callbacks, not an event)
                await asyncio.sleep(0.01)

    listener.start()
    try:
        await until(listener.subscribed.is_set)
        assert subscribed == [1], "on_subscribe runs once every channel is followed"
        await publish_all("before")
        await until(lambda: len(heard) == len(channels))
        assert sorted(heard) == sorted(f"before {c}" for c in channels)

        killed = redis_cluster.kill_primary()
        await asyncio.to_thread(redis_cluster.wait_promoted, killed)
        # The listener notices (a connection lost), reads the slots afresh and
        # subscribes again on the promoted replica; then every first waiter is woken.
        await until(lambda: len(subscribed) >= 2 and listener.subscribed.is_set(), within=30)
        heard.clear()
        await publish_all("after")
        await until(lambda: len(heard) == len(channels))
        assert sorted(heard) == sorted(f"after {c}" for c in channels)
    finally:
        await listener.stop()
        await publisher.aclose()
        await asyncio.to_thread(redis_cluster.heal)


async def test_a_store_runs_on_a_cluster_client_given_to_it(
    redis_cluster: RedisClusterNodes,
) -> None:
    """``RedisStore(client=RedisCluster(...))``: turns, wake-ups across processes, the outbox."""
    host, port = hosts(redis_cluster.url, default_port=6379)[0]
    given = RedisCluster(host=host, port=port, decode_responses=True)
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    config = StoreConfig(lock_ttl=30.0, acquire_timeout=10.0)
    mine = RedisStore(client=given, bot="given", prefix=prefix, config=config)
    other = RedisStore(redis_cluster.url, bot="given", prefix=prefix, config=config)
    user = "79050000001"
    try:
        await mine.open()
        await other.open()
        held = await other.begin_turn(user, "m:1")
        # Waits for the other store's commit: only its wake-up (sharded pub/sub,
        # followed on the given client's nodes) ends the wait before lock_ttl.
        waiting = asyncio.create_task(mine.begin_turn(user, "m:2"))
        await wait_for(
            lambda: mine.waiting_turns(user) == 1, what="the turn queued behind the lock"
        )
        assert not waiting.done()
        reply = OutboundMessage(user=user, mode=SendMode.TEXT, text="first")
        await other.commit_turn(held, None, [reply])
        lease = await asyncio.wait_for(waiting, 5)
        await mine.commit_turn(lease, None)
        [item] = await mine.outbox_read("c", 10, 1.0)
        assert item.message.text == "first"
        await mine.outbox_ack([item.id])
    finally:
        await mine.close()
        await other.close()
    assert await given.ping(), "the store leaves a given client open"
    await given.aclose()
    with pytest.raises(ValueError, match="decode_responses=True"):
        RedisStore(client=RedisCluster(host=host, port=port))
    waiting = RedisStore(redis_cluster.url, prefix=prefix, wait_replicas=1)
    with pytest.raises(ValueError, match="wait_replicas is for standalone Redis and Sentinel"):
        await waiting.open()
    await waiting.close()
