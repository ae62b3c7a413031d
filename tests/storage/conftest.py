"""The store fixtures: every contract test runs against each backend.

``store_factory(config)`` builds an opened store of the parametrised backend;
the factory closes (and for Redis, cleans up) what it built. The Redis
backends skip when no Redis answers (or no ``redis-server`` binary is there
to start a Sentinel group) locally, and fail in CI (see ``tests/conftest.py``).

``redis_sentinel`` and ``redis_cluster`` (in ``tests/conftest.py``) are
session-scoped: one Sentinel group and one 6-node cluster serve every test
that asks for them, and are stopped when the session ends. A test that kills
a node heals the topology before it returns (``heal()``), so the next test
finds it whole.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from botkit.storage.base import ConversationStore, StoreConfig
from botkit.storage.memory import MemoryStore
from botkit.storage.redis import RedisStore
from tests.conftest import delete_prefix, require_redis

StoreFactory = Callable[..., Awaitable[ConversationStore]]

# "redis-resp3": the same server spoken to in RESP3 (``?protocol=3``), whose
# replies the store must read as well as RESP2's (through redis-py's parser).
# "redis-sentinel": a primary, a replica and three sentinels of the test's own;
# "redis-cluster": a local 6-node Redis Cluster (3 primaries, 3 replicas).
BACKENDS = ["memory", "redis", "redis-resp3", "redis-sentinel", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    built: list[ConversationStore] = []
    backend = request.param
    redis = backend.startswith("redis")
    # The topologies are the session's own: their keys go with them at the end.
    url = ""
    if backend == "redis-sentinel":
        url = request.getfixturevalue("redis_sentinel").url
    elif backend == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
    elif redis:
        url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"

    async def make(config: StoreConfig | None = None) -> ConversationStore:
        config = config or StoreConfig(lock_ttl=5.0, acquire_timeout=5.0)
        if backend == "memory":
            store: ConversationStore = MemoryStore(config)
        elif redis:
            # A prefix of its own per test: no test sees another's keys.
            resp3 = ("&" if "?" in url else "?") + "protocol=3"
            store = RedisStore(
                url + (resp3 if backend == "redis-resp3" else ""),
                bot="contract",
                prefix=prefix,
                config=config,
            )
        else:  # pragma: no cover
            raise AssertionError(backend)
        await store.open()
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()
    if backend in ("redis", "redis-resp3"):
        delete_prefix(url, prefix)


@pytest.fixture
async def store(store_factory: StoreFactory) -> ConversationStore:
    return await store_factory()
