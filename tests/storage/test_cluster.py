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
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError

from botkit.storage.redis.connection import (
    cluster_client,
    hosts,
    mask,
    node_client_factory,
)
from botkit.storage.redis.waiters import UnlockListener

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
