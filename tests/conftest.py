"""Fixtures shared by the whole test suite.

Redis: tests that need a real Redis call :func:`require_redis` (or take the
``redis_url`` fixture). Without a Redis they skip locally, but fail when
``CI=true``: CI always has one, so a skip there would hide a broken setup.
``BOTKIT_TEST_REDIS_URL`` points the tests at another server.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.storage._redis_topologies import RedisClusterNodes, SentinelGroup

REDIS_URL = os.environ.get("BOTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def require_redis(url: str = REDIS_URL) -> str:
    """Return ``url`` when a Redis answers there; else skip (or fail when ``CI=true``)."""
    if _redis_answers(url):
        return url
    message = f"no Redis answers at {url}: start one (redis-server) or set BOTKIT_TEST_REDIS_URL"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true, where Redis is required)", pytrace=False)
    pytest.skip(message)


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN + DEL); return how many."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    """The URL of the test Redis (see :func:`require_redis`)."""
    return require_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One primary, one replica and three sentinels on free ports, for the whole session."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    try:
        group.start()
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A 6-node Redis Cluster (3 primaries, 3 replicas) on free ports, for the whole session."""
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
