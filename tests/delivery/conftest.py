"""Delivery tests run on both stores: memory, and a real Redis (skipped locally without one)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from botkit import ManualClock
from botkit.storage import ConversationStore, MemoryStore, RedisStore, StoreConfig
from tests.conftest import delete_prefix, require_redis

StoreMaker = Callable[[ManualClock], ConversationStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreMaker]:
    """Builds the store a LiveBot runs on, sharing the test's clock."""
    config = StoreConfig(lock_ttl=10.0, acquire_timeout=10.0)
    if request.param == "memory":
        yield lambda clock: MemoryStore(config, clock=clock)
        return
    url = require_redis()
    prefix = f"botkit-test-{uuid.uuid4().hex[:12]}"
    yield lambda clock: RedisStore(url, bot="delivery", prefix=prefix, config=config, clock=clock)
    delete_prefix(url, prefix)
