"""The store fixtures: every contract test runs against each backend.

``store_factory(config)`` builds an opened store of the parametrised backend;
the factory closes (and for Redis, cleans up) what it built.
``store_factory.pass_time(seconds)`` lets lock time pass: the memory store
runs on a frozen :class:`~botkit.ManualClock`, advanced at once; Redis keeps
its locks' expiry itself, so there it waits that long. The Redis
backends skip when no Redis answers (or no ``redis-server`` binary is there
to start a Sentinel group) locally, and fail in CI (see ``tests/conftest.py``).

``redis_sentinel`` and ``redis_cluster`` (in ``tests/conftest.py``) are
session-scoped: one Sentinel group and one 6-node cluster serve every test
that asks for them, and are stopped when the session ends. A test that kills
a node heals the topology before it returns (``heal()``), so the next test
finds it whole.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from botkit import ManualClock
from botkit.storage.base import ConversationStore, StoreConfig
from botkit.storage.memory import MemoryStore
from botkit.storage.redis import RedisStore
from tests.conftest import delete_prefix, require_redis

# "redis-resp3": the same server spoken to in RESP3 (``?protocol=3``), whose
# replies the store must read as well as RESP2's (through redis-py's parser).
# "redis-sentinel": a primary, a replica and three sentinels of the test's own;
# "redis-cluster": a local 6-node Redis Cluster (3 primaries, 3 replicas).
BACKENDS = ["memory", "redis", "redis-resp3", "redis-sentinel", "redis-cluster"]


class StoreFactory:
    """Builds opened stores of one backend; see the module docstring."""

    def __init__(self, backend: str, url: str, prefix: str) -> None:
        self.backend = backend
        self.url = url
        self.prefix = prefix
        self.clock = ManualClock(frozen=True) if backend == "memory" else None
        self.built: list[ConversationStore] = []

    async def __call__(self, config: StoreConfig | None = None) -> ConversationStore:
        config = config or StoreConfig(lock_ttl=5.0, acquire_timeout=5.0)
        if self.clock is not None:
            store: ConversationStore = MemoryStore(config, clock=self.clock)
        else:
            # A prefix of its own per test: no test sees another's keys.
            resp3 = ("&" if "?" in self.url else "?") + "protocol=3"
            store = RedisStore(
                self.url + (resp3 if self.backend == "redis-resp3" else ""),
                bot="contract",
                prefix=self.prefix,
                config=config,
            )
        await store.open()
        self.built.append(store)
        return store

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` of lock time pass (at once on the memory store's clock)."""
        await asyncio.sleep(0)  # a turn just started runs up to its wait first
        if self.clock is not None:
            self.clock.advance(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)


@pytest.fixture(params=BACKENDS)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
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
    factory = StoreFactory(backend, url, f"botkit-test-{uuid.uuid4().hex[:12]}")
    yield factory
    for store in factory.built:
        await store.close()
    if backend in ("redis", "redis-resp3"):
        delete_prefix(url, factory.prefix)


@pytest.fixture
async def store(store_factory: StoreFactory) -> ConversationStore:
    return await store_factory()
