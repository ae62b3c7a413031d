"""The store fixtures: every contract test runs against each backend.

``store_factory(config)`` builds an opened store of the parametrised backend;
the factory closes (and for Redis, cleans up) what it built.
``store_factory.pass_time(seconds)`` lets lock time pass on the memory
store's frozen :class:`~botkit.ManualClock`, at once. Redis keeps its locks'
expiry itself, so there nothing sleeps: the test waits, with a deadline, for
what the expiry causes (a waiting turn that gets the lock, a refusal), or
polls the lock itself (``store_factory.until_lock_ttl(user, at_most)``). The Redis
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
from botkit.storage.redis.connection import build_client
from botkit.storage.redis.keys import Keys
from tests.conftest import delete_prefix, require_redis
from tests.helpers import wait_for

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
        """Let ``seconds`` of lock time pass on the memory store's clock (Redis: see below)."""
        await asyncio.sleep(0)  # a turn just started runs up to its wait first
        if self.clock is not None:
            self.clock.advance(seconds)
            await asyncio.sleep(0)

    async def until_lock_ttl(self, user: str, at_most: float, within: float = 10.0) -> None:
        """On Redis, until ``user``'s lock has at most ``at_most`` seconds left (0: it is gone).

        Polled with a deadline; the memory store needs no wait (its clock
        moved with :meth:`pass_time`).
        """
        if self.clock is not None:
            return
        client = build_client(self.url, socket_timeout=5.0, connect_timeout=5.0, max_connections=2)
        lock = Keys(self.prefix, "contract").turn(user)[1]

        async def low_enough() -> bool:
            left = int(await client.pttl(lock))  # -2: no such key
            return left == -2 if at_most <= 0 else left <= at_most * 1000

        try:
            await wait_for(
                low_enough, within=within, what=f"the lock down to {at_most}s", every=0.01
            )
        finally:
            await client.aclose()


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
