"""The store fixtures: every contract test runs against each backend.

``store_factory(config)`` builds an opened store of the parametrised backend;
the factory closes (and for Redis, cleans up) what it built. The Redis
backend skips when no Redis answers locally and fails in CI (see
``tests/conftest.py``).
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
# replies the store's own reply parser must read as well as RESP2's.
BACKENDS = ["memory", "redis", "redis-resp3"]


@pytest.fixture(params=BACKENDS)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    built: list[ConversationStore] = []
    redis = request.param.startswith("redis")
    url = require_redis() if redis else ""
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"

    async def make(config: StoreConfig | None = None) -> ConversationStore:
        config = config or StoreConfig(lock_ttl=5.0, acquire_timeout=5.0)
        if request.param == "memory":
            store: ConversationStore = MemoryStore(config)
        elif redis:
            # A prefix of its own per test: no test sees another's keys.
            resp3 = ("&" if "?" in url else "?") + "protocol=3"
            store = RedisStore(
                url + (resp3 if request.param == "redis-resp3" else ""),
                bot="contract",
                prefix=prefix,
                config=config,
            )
        else:  # pragma: no cover
            raise AssertionError(request.param)
        await store.open()
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()
    if redis:
        delete_prefix(url, prefix)


@pytest.fixture
async def store(store_factory: StoreFactory) -> ConversationStore:
    return await store_factory()
