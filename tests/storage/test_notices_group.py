"""The shared agent notices stream on a real Redis: the webhook's consumer group.

Un-posted notices survive the trimming up to the hard cap (and what the cap
drops is counted), and notices pending on a consumer that died are taken by
another once idle.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from botkit.storage.redis import RedisStore
from tests.conftest import delete_prefix, require_redis
from tests.helpers import wait_for

GROUP = "webhook"


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    url = require_redis()
    prefix = f"botkit-test-notices-{uuid.uuid4().hex[:10]}"
    opened = RedisStore(url, bot="b", prefix=prefix, shards=4)
    await opened.open()
    yield opened
    await opened.close()
    delete_prefix(url, prefix)


async def test_unposted_notices_outlive_the_soft_cap_and_the_hard_cap_counts_drops(
    store: RedisStore,
) -> None:
    store.notices_kept, store.notices_most = 5, 20
    await store.notices_group(GROUP)
    dropped = [await store.notices_append([f"n{i}"], group=GROUP) for i in range(30)]
    # Nothing was posted: the stream holds 20 (the hard cap), the 10 oldest went, counted.
    assert sum(dropped) == 10
    taken = await store.notices_take(GROUP, "a", idle=60, block=0.1, count=100)
    assert [p for _, p in taken] == [f"n{i}" for i in range(10, 30)]
    await store.notices_ack(GROUP, [entry for entry, _ in taken])
    # All posted: appending trims back towards the soft cap and drops nothing un-posted.
    assert await store.notices_append(["late"], group=GROUP) == 0
    later = await store.notices_take(GROUP, "a", idle=60, block=0.1)
    assert [p for _, p in later] == ["late"]


async def test_notices_pending_on_a_dead_consumer_are_taken_by_another(
    store: RedisStore,
) -> None:
    await store.notices_group(GROUP)
    await store.notices_append(["x", "y"], group=GROUP)
    held = await store.notices_take(GROUP, "dead", idle=0.3, block=0.1)
    assert [p for _, p in held] == ["x", "y"]
    await store.notices_ack(GROUP, [held[0][0]])  # "x" was posted, "y" was not

    found: list[tuple[str, str]] = []

    async def taken_over() -> bool:
        found.extend(await store.notices_take(GROUP, "alive", idle=0.3, block=0.05))
        return bool(found)

    await wait_for(taken_over, within=10, what="the idle notice taken over")
    assert found == [held[1]]  # the same entry id: the event id the helpdesk sees again


async def test_a_notice_a_live_worker_holds_is_not_taken_by_another(store: RedisStore) -> None:
    await store.notices_append(["z"], group=GROUP)  # the first append creates the group
    held = await store.notices_take(GROUP, "busy", idle=0.5, block=0.1)
    assert [p for _, p in held] == ["z"]
    deadline = asyncio.get_running_loop().time() + 1.5  # three times the idle time
    while asyncio.get_running_loop().time() < deadline:
        await store.notices_hold(GROUP, "busy", [held[0][0]])
        assert await store.notices_take(GROUP, "other", idle=0.5, block=0.05) == []
        await asyncio.sleep(0.1)
    # Once the holder stops (it died), the other takes it.
    found: list[tuple[str, str]] = []

    async def taken_over() -> bool:
        found.extend(await store.notices_take(GROUP, "other", idle=0.5, block=0.05))
        return bool(found)

    await wait_for(taken_over, within=10, what="the notice taken over")
    assert found == held


async def test_consumers_of_workers_gone_are_forgotten_unless_they_hold_notices(
    store: RedisStore,
) -> None:
    await store.notices_append(["a"], group=GROUP)
    await store.notices_take(GROUP, "holds", idle=60, block=0.1)  # holds "a"
    await store.notices_append(["b"], group=GROUP)
    posted = await store.notices_take(GROUP, "empty", idle=60, block=0.1)
    await store.notices_ack(GROUP, [entry for entry, _ in posted])  # holds nothing
    # Both idle; only the one holding nothing is forgotten, the other keeps "a".
    gone: list[int] = []

    async def pruned() -> bool:
        gone.append(await store.notices_prune(GROUP, 0.2))
        return gone[-1] > 0

    await wait_for(pruned, within=10, what="the idle consumer forgotten")
    assert gone[-1] == 1
    assert [p for _, p in await store.notices_take(GROUP, "next", idle=0, block=0.05)] == ["a"]
