"""Transcripts and the handoff list, run unchanged against every backend."""

from __future__ import annotations

import pytest

from botkit import EntryKind, Handoff, OutboundMessage, SendMode, TranscriptEntry
from botkit.storage.base import ConversationStore, StoreConfig

from .conftest import StoreFactory
from .test_contract import drain, new_user


def entry(text: str, at: float = 1000.0) -> TranscriptEntry:
    return TranscriptEntry(EntryKind.IN, at, {"type": "text", "text": text})


async def commit(
    store: ConversationStore,
    user: str,
    *texts: str,
    handoff: Handoff | bool | None = False,
    replies: tuple[str, ...] = (),
) -> None:
    lease = await store.begin_turn(user, None)
    conversation = lease.conversation.copy()
    if handoff is not False:
        conversation.handoff = handoff  # type: ignore[assignment]
    outbox = [OutboundMessage(user=user, mode=SendMode.TEXT, text=r) for r in replies]
    await store.commit_turn(lease, conversation, outbox, [entry(t) for t in texts])


async def test_a_commit_appends_its_entries_in_order(store: ConversationStore) -> None:
    user = new_user()
    await commit(store, user, "one", "two")
    await commit(store, user, "three")
    page = await store.transcript(user)
    assert [e.data["text"] for e in page.entries] == ["one", "two", "three"]
    assert page.before is None
    ids = [e.id for e in page.entries]
    assert len(set(ids)) == 3 and all(ids)


async def test_pages_go_back_from_the_newest(store: ConversationStore) -> None:
    user = new_user()
    await commit(store, user, *[f"m{i}" for i in range(7)])
    newest = await store.transcript(user, limit=3)
    assert [e.data["text"] for e in newest.entries] == ["m4", "m5", "m6"]
    assert newest.before is not None
    middle = await store.transcript(user, before=newest.before, limit=3)
    assert [e.data["text"] for e in middle.entries] == ["m1", "m2", "m3"]
    first = await store.transcript(user, before=middle.before, limit=3)
    assert [e.data["text"] for e in first.entries] == ["m0"]
    assert first.before is None


async def test_a_bad_cursor_is_a_value_error(store: ConversationStore) -> None:
    with pytest.raises(ValueError, match="not an entry id"):
        await store.transcript(new_user(), before="nope")


async def test_the_transcript_is_capped_at_its_length(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(transcript_length=5))
    user = new_user()
    for i in range(4):
        await commit(store, user, f"a{i}", f"b{i}")
    page = await store.transcript(user, limit=100)
    assert [e.data["text"] for e in page.entries] == ["b1", "a2", "b2", "a3", "b3"]


async def test_length_zero_keeps_no_transcript(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(transcript_length=0))
    user = new_user()
    await commit(store, user, "one")
    await store.enqueue([OutboundMessage(user=user, mode=SendMode.TEXT, text="hi")])
    assert (await store.transcript(user)).entries == ()


async def test_an_enqueued_message_joins_the_transcript(store: ConversationStore) -> None:
    user = new_user()
    message = OutboundMessage(user=user, mode=SendMode.TEXT, text="from outside")
    await store.enqueue([message])
    [found] = (await store.transcript(user)).entries
    assert (found.kind, found.data["text"], found.data["ref"]) == (
        EntryKind.OUT,
        "from outside",
        message.ref,
    )
    assert [m.text for m in await drain(store)] == ["from outside"]


async def test_statuses_appended_outside_a_turn(store: ConversationStore) -> None:
    user = new_user()
    await commit(store, user, "in")
    await store.transcript_append(
        user, [TranscriptEntry(EntryKind.STATUS, 1001.0, {"ref": "r1", "status": "read"})]
    )
    page = await store.transcript(user)
    assert [e.kind for e in page.entries] == [EntryKind.IN, EntryKind.STATUS]


async def test_handed_off_conversations_are_listed_longest_waiting_first(
    store: ConversationStore,
) -> None:
    anna, boris, vera = new_user(), new_user(), new_user()
    await commit(store, boris, handoff=Handoff(since=2000.0, reason="late"))
    await commit(store, anna, handoff=Handoff(since=1000.0, reason="asked"))
    await commit(store, vera, handoff=Handoff(since=3000.0))
    listed, total = await store.handoffs()
    assert total == 3
    assert [user for user, _ in listed] == [anna, boris, vera]
    assert listed[0][1] == Handoff(since=1000.0, reason="asked")
    first, total = await store.handoffs(limit=1)
    assert ([user for user, _ in first], total) == ([anna], 3)

    await commit(store, anna, handoff=None)  # released
    listed, total = await store.handoffs()
    assert ([user for user, _ in listed], total) == ([boris, vera], 2)
    assert (await store.load(anna)).handoff is None


async def test_a_handoff_survives_in_the_conversation(store: ConversationStore) -> None:
    user = new_user()
    handoff = Handoff(since=5.0, reason="r", note="n", by="operator", agent="alice", claimed_at=6.0)
    await commit(store, user, handoff=handoff)
    assert (await store.load(user)).handoff == handoff
    await commit(store, user, "unrelated")  # a later turn keeps it
    assert (await store.load(user)).handoff == handoff


@pytest.mark.parametrize("limit", [1, 7, 30, 80])
async def test_the_redis_list_merges_the_shards_exactly(limit: int) -> None:
    """Many users over few shards: the two-step read gives exactly the oldest ``limit``."""
    import random
    import uuid as uuid_module

    from botkit.storage.redis import RedisStore
    from tests.conftest import delete_prefix, require_redis

    url = require_redis()
    prefix = f"botkit-test-{uuid_module.uuid4().hex[:12]}"
    store = RedisStore(url, bot="merge", prefix=prefix, shards=4)
    await store.open()
    try:
        users = [new_user() for _ in range(50)]
        since = {user: float(random.randrange(10_000)) for user in users}
        for user in users:
            await commit(store, user, handoff=Handoff(since=since[user]))
        listed, total = await store.handoffs(limit)
        expected = sorted(users, key=lambda u: (since[u], u))[:limit]
        assert total == 50
        assert [since[u] for u, _ in listed] == [since[u] for u in expected]
        assert {u for u, _ in listed} <= set(users) and len(listed) == min(limit, 50)
    finally:
        await store.close()
        delete_prefix(url, prefix)


async def test_every_transcript_since_a_time(store: ConversationStore) -> None:
    anna, boris = new_user(), new_user()
    lease = await store.begin_turn(anna, None)
    await store.commit_turn(lease, None, (), [entry("old", at=100.0)])
    await commit(store, anna, "a1")
    await commit(store, boris, "b1", "b2")
    found = [(user, e.data["text"]) async for user, e in store.transcripts_since(0.0)]
    assert sorted(found) == sorted([(anna, "old"), (anna, "a1"), (boris, "b1"), (boris, "b2")])
