"""The store fixtures: every contract test runs against each backend.

``store_factory(config)`` builds an opened store of the parametrised backend;
the factory closes (and for Redis, cleans up) what it built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from botkit.storage.base import ConversationStore, StoreConfig
from botkit.storage.memory import MemoryStore

StoreFactory = Callable[..., Awaitable[ConversationStore]]

BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    built: list[ConversationStore] = []

    async def make(config: StoreConfig | None = None) -> ConversationStore:
        config = config or StoreConfig(lock_ttl=5.0, acquire_timeout=5.0)
        if request.param == "memory":
            store: ConversationStore = MemoryStore(config)
        else:  # pragma: no cover - other backends register themselves below
            raise AssertionError(request.param)
        await store.open()
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> ConversationStore:
    return await store_factory()
