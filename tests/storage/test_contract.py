"""The conversation store contract, run unchanged against every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest

from botkit import OutboundMessage, SendMode, Timer
from botkit.storage import SentRecord
from botkit.storage.base import (
    ConversationStore,
    DuplicateMessage,
    LockLost,
    Receipt,
    StoreConfig,
    UserBusy,
)
from botkit.storage.memory import MemoryStore
from tests.helpers import wait_for

from .conftest import StoreFactory


def new_user() -> str:
    return "7" + str(uuid.uuid4().int)[:10]


def text(user: str, body: str, **kw: object) -> OutboundMessage:
    return OutboundMessage(user=user, mode=SendMode.TEXT, text=body, **kw)  # type: ignore[arg-type]


async def drain(store: ConversationStore, consumer: str = "c1") -> list[OutboundMessage]:
    items = await store.outbox_read(consumer, 1000, 0.05)
    await store.outbox_ack([i.id for i in items])
    return [i.message for i in items]


async def test_unknown_user_loads_empty(store: ConversationStore) -> None:
    user = new_user()
    conv = await store.load(user)
    assert (conv.user, conv.state, conv.data, conv.version) == (user, None, {}, 0)
    assert conv.last_inbound is None and not conv.opted_out


async def test_commit_saves_state_data_and_bumps_version(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1", inbound_at=1000.0)
    conv = lease.conversation.copy()
    conv.state = "order:size"
    conv.data["pizza"] = {"name": "Margherita", "extras": [1, 2]}
    conv.last_active = 1000.0
    conv.opted_out = True
    await store.commit_turn(lease, conv)

    loaded = await store.load(user)
    assert loaded.state == "order:size"
    assert loaded.data == {"pizza": {"name": "Margherita", "extras": [1, 2]}}
    assert loaded.version == 1
    assert loaded.last_inbound == 1000.0
    assert loaded.last_active == 1000.0
    assert loaded.opted_out is True

    lease = await store.begin_turn(user, "m:2")
    assert lease.conversation.version == 1
    await store.commit_turn(lease, lease.conversation.copy())
    assert (await store.load(user)).version == 2


async def test_commit_clears_what_the_turn_cleared(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1", inbound_at=1000.0)
    conv = lease.conversation.copy()
    conv.state, conv.data, conv.last_active = "order:size", {"a": 1, "b": 2}, 1000.0
    conv.opted_out = conv.not_on_whatsapp = True
    await store.commit_turn(lease, conv)

    lease = await store.begin_turn(user, "m:2", inbound_at=1001.0)
    conv = lease.conversation.copy()
    conv.state, conv.data, conv.last_active = None, {"b": 3}, None
    conv.opted_out = conv.not_on_whatsapp = False
    await store.commit_turn(lease, conv)

    loaded = await store.load(user)
    assert (loaded.state, loaded.data, loaded.last_active) == (None, {"b": 3}, None)
    assert (loaded.opted_out, loaded.not_on_whatsapp) == (False, False)
    assert (loaded.version, loaded.last_inbound) == (2, 1001.0)


async def test_commit_saves_the_conversation_given_even_the_leases_own(
    store: ConversationStore,
) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    lease.conversation.state = "quiz:q1"  # changed in place, not on a copy
    lease.conversation.data["score"] = 1
    lease.conversation.opted_out = True
    await store.commit_turn(lease, lease.conversation)
    loaded = await store.load(user)
    assert (loaded.state, loaded.data, loaded.opted_out) == ("quiz:q1", {"score": 1}, True)


async def test_inbound_time_only_moves_forward(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1", inbound_at=2000.0)
    await store.commit_turn(lease, None)
    lease = await store.begin_turn(user, "m:2", inbound_at=1500.0)  # a late, older message
    assert lease.conversation.last_inbound == 2000.0
    await store.commit_turn(lease, lease.conversation.copy())
    assert (await store.load(user)).last_inbound == 2000.0


async def test_window_opens_at_begin_even_if_the_turn_is_dropped(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1", inbound_at=3000.0)
    await store.commit_turn(lease, None)
    assert (await store.load(user)).last_inbound == 3000.0


async def test_done_message_is_a_duplicate(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:42")
    await store.commit_turn(lease, None)
    with pytest.raises(DuplicateMessage) as caught:
        await store.begin_turn(user, "m:42")
    assert caught.value.state == "done"


async def test_message_in_progress_is_a_duplicate(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:7")
    with pytest.raises(DuplicateMessage) as caught:
        await store.begin_turn(user, "m:7")
    assert caught.value.state == "in_progress"
    await store.commit_turn(lease, None)


async def test_aborted_message_runs_again(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:9")
    await store.abort_turn(lease)
    again = await store.begin_turn(user, "m:9")
    await store.commit_turn(again, None)


async def test_turns_without_key_are_not_deduplicated(store: ConversationStore) -> None:
    user = new_user()
    for _ in range(2):
        lease = await store.begin_turn(user, None)
        await store.commit_turn(lease, None)


async def test_second_turn_waits_for_the_first(store: ConversationStore) -> None:
    user = new_user()
    first = await store.begin_turn(user, "m:1")
    second_task = asyncio.create_task(store.begin_turn(user, "m:2"))
    await wait_for(lambda: store.waiting_turns(user) == 1, what="the second turn queued")
    assert not second_task.done(), "the second turn must wait for the user's lock"
    conv = first.conversation.copy()
    conv.data["seen"] = ["m:1"]
    await store.commit_turn(first, conv)
    second = await asyncio.wait_for(second_task, 5)
    assert second.conversation.data == {"seen": ["m:1"]}, "the second turn sees the first's commit"
    await store.commit_turn(second, None)


async def test_busy_user_is_refused_after_the_acquire_timeout(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(lock_ttl=10.0, acquire_timeout=0.2))
    user = new_user()
    first = await store.begin_turn(user, "m:1")
    second = asyncio.create_task(store.begin_turn(user, "m:2"))
    await store_factory.pass_time(0.3)
    with pytest.raises(UserBusy):
        await asyncio.wait_for(second, 10)
    await store.commit_turn(first, None)
    # Refused as busy, the message was not marked: the provider's retry runs it.
    lease = await store.begin_turn(user, "m:2")
    await store.commit_turn(lease, None)


async def test_expired_holder_cannot_commit_over_a_newer_turn(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(lock_ttl=0.3, acquire_timeout=5.0))
    user = new_user()
    stale = await store.begin_turn(user, "m:1")
    waiting = asyncio.create_task(store.begin_turn(user, "m:2"))
    await store_factory.pass_time(0.4)  # the stale turn's lock expires: the newer one takes it
    newer = await asyncio.wait_for(waiting, 10)
    conv = newer.conversation.copy()
    conv.data["owner"] = "newer"
    await store.commit_turn(newer, conv)

    old = stale.conversation.copy()
    old.data["owner"] = "stale"
    with pytest.raises(LockLost):
        await store.commit_turn(stale, old, [text(user, "from the stale turn")])
    loaded = await store.load(user)
    assert loaded.data == {"owner": "newer"}
    assert await drain(store) == []


async def test_expired_lock_with_no_successor_still_refuses_commit(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory(StoreConfig(lock_ttl=0.2, acquire_timeout=5.0))
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    await store_factory.pass_time(0.4)
    await store_factory.until_lock_ttl(user, at_most=0)  # Redis: until it expired by itself
    with pytest.raises(LockLost):
        await store.commit_turn(lease, lease.conversation.copy())


async def test_renew_keeps_a_long_turn_alive(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(lock_ttl=0.6, acquire_timeout=0.1))
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    for _ in range(4):  # twice the lock's time in all, half of it at a time
        await store_factory.pass_time(0.3)
        await store_factory.until_lock_ttl(user, at_most=0.3)  # Redis: half of it gone
        assert await store.renew(lease)
    second = asyncio.create_task(store.begin_turn(user, "m:2"))
    await store_factory.pass_time(0.15)  # past the acquire timeout, within the renewed lock
    with pytest.raises(UserBusy):
        await asyncio.wait_for(second, 10)
    await store.commit_turn(lease, None)


async def test_renew_fails_once_the_lock_is_gone(store_factory: StoreFactory) -> None:
    store = await store_factory(StoreConfig(lock_ttl=0.2, acquire_timeout=5.0))
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    await store_factory.pass_time(0.35)
    other = await store.begin_turn(user, "m:2")
    assert not await store.renew(lease)
    await store.commit_turn(other, None)


async def test_fifty_concurrent_turns_of_one_user_lose_nothing(
    store_factory: StoreFactory,
) -> None:
    # The 50th turn waits for 49 others: give it time on a loaded machine.
    store = await store_factory(StoreConfig(lock_ttl=30.0, acquire_timeout=120.0))
    user = new_user()
    running = 0
    overlapped = False

    async def turn(i: int) -> None:
        nonlocal running, overlapped
        lease = await store.begin_turn(user, f"m:{i}")
        running += 1
        overlapped = overlapped or running > 1
        conv = lease.conversation.copy()
        await asyncio.sleep(0)
        conv.data["count"] = conv.data.get("count", 0) + 1
        running -= 1
        await store.commit_turn(lease, conv)

    await asyncio.gather(*(turn(i) for i in range(50)))
    assert not overlapped
    assert (await store.load(user)).data["count"] == 50


async def test_commit_appends_replies_to_the_outbox_in_order(store: ConversationStore) -> None:
    user = new_user()
    lease = await store.begin_turn(user, "m:1")
    replies = [text(user, f"part {i}") for i in range(3)]
    await store.commit_turn(lease, None, replies)
    assert [m.text for m in await drain(store)] == ["part 0", "part 1", "part 2"]
    assert await store.outbox_size() == 0


async def test_unacknowledged_entries_are_claimed_by_another_consumer(
    store: ConversationStore,
) -> None:
    user = new_user()
    await store.enqueue([text(user, "a"), text(user, "b")])
    first = await store.outbox_read("dead-instance", 10, 0.05)
    assert [i.message.text for i in first] == ["a", "b"]
    assert await store.outbox_claim("live-instance", 10.0, 10) == [], "not idle long enough"
    await asyncio.sleep(0.15)
    claimed = await store.outbox_claim("live-instance", 0.1, 10)
    assert [i.message.text for i in claimed] == ["a", "b"]
    assert all(i.deliveries >= 2 for i in claimed)
    await store.outbox_ack([i.id for i in claimed])
    assert await store.outbox_claim("third", 0.0, 10) == []


async def test_a_live_consumer_that_attempts_its_entries_is_not_overtaken(
    store: ConversationStore,
) -> None:
    user = new_user()
    await store.enqueue([text(user, "a"), text(user, "b")])
    held = await store.outbox_read("slow-but-alive", 10, 0.05)
    await asyncio.sleep(0.4)  # idle for 0.4 s: claimable with min_idle 0.3, unless attempted
    ids = [i.id for i in held]
    assert await store.outbox_attempt("slow-but-alive", ids) == ids
    assert await store.outbox_claim("other", 0.3, 10) == [], "attempted: idle again from now"
    await asyncio.sleep(0.4)
    claimed = await store.outbox_claim("other", 0.3, 10)
    assert [i.message.text for i in claimed] == ["a", "b"]
    # Claimed meanwhile: the attempt leaves them to their new holder, who must not send them.
    assert await store.outbox_attempt("slow-but-alive", ids) == []
    assert await store.outbox_claim("third", 0.3, 10) == []


async def test_an_attempt_over_many_users_keeps_only_the_entries_still_held(
    store: ConversationStore,
) -> None:
    # Users over many shards, one batch: the ones another consumer claimed meanwhile are
    # left to it, the others are kept (in the order asked) and marked as attempted.
    first = [new_user() for _ in range(8)]
    await store.enqueue([text(user, f"early {n}") for n, user in enumerate(first)])
    early = await store.outbox_read("slow", 100, 0.05)
    await asyncio.sleep(0.4)
    taken = await store.outbox_claim("other", 0.3, 100)
    assert sorted(i.id for i in taken) == sorted(i.id for i in early)
    second = [new_user() for _ in range(8)]
    await store.enqueue([text(user, f"late {n}") for n, user in enumerate(second)])
    late = await store.outbox_read("slow", 100, 0.05)
    assert len(late) == 8
    asked = [item.id for pair in zip(early, late, strict=True) for item in pair]
    assert await store.outbox_attempt("slow", asked) == [i.id for i in late]
    await asyncio.sleep(0.4)
    claimed = await store.outbox_claim("third", 0.3, 100)
    marked = {i.message.text: i.attempted for i in claimed}
    assert marked == {f"late {n}": True for n in range(8)} | {f"early {n}": False for n in range(8)}


async def test_a_claimed_entry_says_whether_a_send_of_it_was_attempted(
    store: ConversationStore,
) -> None:
    user = new_user()
    await store.enqueue([text(user, "posted"), text(user, "only read")])
    posted, only_read = await store.outbox_read("dead", 10, 0.05)
    assert not posted.attempted and not only_read.attempted  # a fresh read never is
    assert await store.outbox_attempt("dead", [posted.id]) == [posted.id]
    await asyncio.sleep(0.3)
    assert await store.outbox_claim("dead", 0.1, 10) == [], "a consumer never claims its own"
    claimed = await store.outbox_claim("live", 0.1, 10)
    assert [(i.message.text, i.attempted) for i in claimed] == [
        ("posted", True),
        ("only read", False),
    ]
    attempted_ago = claimed[0].attempted_ago
    assert attempted_ago is not None and 0.25 <= attempted_ago < 5
    # Taken back by the one that holds them now (after a failed step), still marked.
    again = await store.outbox_unacked("live", 10)
    assert [(i.message.text, i.attempted) for i in again] == [
        ("posted", True),
        ("only read", False),
    ]
    # Acknowledged: the mark goes with the entry.
    await store.outbox_ack([i.id for i in claimed])
    assert await store.outbox_unacked("live", 10) == []


async def test_receipts_name_the_provider_id_and_the_statuses_seen(
    store: ConversationStore,
) -> None:
    user = new_user()
    await store.enqueue([text(user, "a"), text(user, "b")])
    items = await store.outbox_read("c1", 10, 0.05)
    assert await store.receipts(items) == [None, None]
    ref = items[1].message.ref
    await store.record_receipt(user, ref, "3482512350952730368", "read")
    await store.record_receipt(user, ref, "a-later-callback-keeps-the-first", "sent")
    assert await store.receipts(items) == [
        None,
        Receipt("3482512350952730368", frozenset({"read", "sent"})),
    ]
    assert await store.receipts([]) == []


async def test_a_consumer_gets_back_what_it_read_and_did_not_acknowledge(
    store: ConversationStore,
) -> None:
    user = new_user()
    await store.enqueue([text(user, "a"), text(user, "b"), text(user, "c")])
    read = await store.outbox_read("reader", 2, 0.05)  # as if this answer were lost
    assert [i.message.text for i in read] == ["a", "b"]
    assert await store.outbox_unacked("someone-else", 10) == []
    again = await store.outbox_unacked("reader", 10)
    assert [(i.id, i.message.text) for i in again] == [(i.id, i.message.text) for i in read]
    assert [i.message.text for i in await store.outbox_unacked("reader", 1)] == ["a"]
    await store.outbox_ack([read[0].id])
    assert [i.message.text for i in await store.outbox_unacked("reader", 10)] == ["b"]
    assert [i.message.text for i in await store.outbox_read("reader", 10, 0.05)] == ["c"]


async def test_delayed_messages_wait_for_their_time(store: ConversationStore) -> None:
    user = new_user()
    at = time.time() + 3600
    await store.enqueue([text(user, "later", not_before=at), text(user, "now")])
    assert [m.text for m in await drain(store)] == ["now"]
    assert await store.outbox_release_due(at - 1) == 0
    assert await store.outbox_size() == 1
    assert await store.outbox_release_due(at) == 1
    assert [m.text for m in await drain(store)] == ["later"]


async def test_outbox_round_trips_every_field(store: ConversationStore) -> None:
    from botkit import Media, Template
    from botkit.storage import Origin

    user = new_user()
    message = OutboundMessage(
        user=user,
        mode=SendMode.MEDIA,
        text="caption ✓",
        media=Media("https://example.com/a.png", "image/png", "a.png"),
        fallback=Template("hello", ["Ann"], language="en", validity=1),
        origin=Origin.SEND,
        attempt=2,
        created_at=123.5,
    )
    await store.enqueue([message])
    assert await drain(store) == [message]


async def test_sent_records_are_kept_by_message_id(store: ConversationStore) -> None:
    user = new_user()
    await store.enqueue([text(user, "hello")])
    [item] = await store.outbox_read("c1", 10, 0.05)
    record = SentRecord(message_id="3482512350952730368", message=item.message, sent_at=1.0)
    await store.outbox_ack([item.id], [record])
    assert await store.get_sent("3482512350952730368", user=user) == record
    assert await store.get_sent("unknown", user=user) is None
    assert await store.get_sent("3482512350952730368", user=new_user()) is None
    moved = SentRecord(
        message_id=record.message_id, message=record.message, sent_at=1.0, status="delivered"
    )
    await store.update_sent(moved)
    found = await store.get_sent(record.message_id, user=user)
    assert found is not None and found.status == "delivered"
    assert not found.resent
    await store.update_sent(dataclasses.replace(found, status="failed", resent=True))
    found = await store.get_sent(record.message_id, user=user)
    assert found is not None and (found.status, found.resent) == ("failed", True)


async def test_a_shared_secret_is_the_first_candidate_for_every_caller(
    store_factory: StoreFactory,
) -> None:
    stores = [await store_factory() for _ in range(4)]
    # Several processes at once (here: stores on one backend) each offer their own.
    given = await asyncio.gather(
        *(store.shared_secret("callback", f"candidate-{i}") for i, store in enumerate(stores))
    )
    first = given[0]
    assert first.startswith("candidate-")
    if isinstance(stores[0], MemoryStore):  # private to its process: each keeps its own
        assert given == [f"candidate-{i}" for i in range(4)]
    else:
        assert given == [first] * 4
    assert await stores[0].shared_secret("callback", "another") == first
    assert await stores[0].shared_secret("other", "another") == "another"


async def test_ping(store: ConversationStore) -> None:
    assert await store.ping() is True


# -- timers ------------------------------------------------------------------


async def schedule(store: ConversationStore, user: str, *timers: Timer) -> None:
    lease = await store.begin_turn(user, None)
    conv = lease.conversation.copy()
    conv.timers = {t.name: t for t in timers}
    await store.commit_turn(lease, conv)


async def test_timers_are_saved_with_the_conversation(store: ConversationStore) -> None:
    user = new_user()
    nudge = Timer("nudge", 1000.5, {"step": [1, 2]}, cancel_on_message=True)
    plain = Timer("plain", 2000.0)
    await schedule(store, user, nudge, plain)
    assert (await store.load(user)).timers == {"nudge": nudge, "plain": plain}


async def test_a_due_timer_is_claimed_once_until_its_lease_ends(store: ConversationStore) -> None:
    user = new_user()
    await schedule(store, user, Timer("a", 1000.0), Timer("b", 3000.0))
    assert [c.user for c in await store.timers_claim(999.0, 60, 100)] == []
    [claim] = [c for c in await store.timers_claim(1000.0, 60, 100) if c.user == user]
    assert claim.until == 1060.0
    assert user not in [c.user for c in await store.timers_claim(1059.0, 60, 100)]
    again = [c for c in await store.timers_claim(1060.0, 60, 100) if c.user == user]
    assert again, "a claim whose worker died comes back after the lease"


async def test_the_commit_moves_the_user_to_their_next_timer(store: ConversationStore) -> None:
    user = new_user()
    await schedule(store, user, Timer("a", 1000.0), Timer("b", 3000.0))
    assert user in [c.user for c in await store.timers_claim(1000.0, 60, 100)]
    await schedule(store, user, Timer("b", 3000.0))  # "a" fired
    assert user not in [c.user for c in await store.timers_claim(2999.0, 60, 100)]
    assert user in [c.user for c in await store.timers_claim(3000.0, 60, 100)]
    await schedule(store, user)  # none left
    assert user not in [c.user for c in await store.timers_claim(10_000.0, 60, 100)]


async def test_reschedule_after_a_claim_unless_a_commit_moved_the_user(
    store: ConversationStore,
) -> None:
    user = new_user()
    await schedule(store, user, Timer("a", 1000.0))
    [claim] = [c for c in await store.timers_claim(1000.0, 60, 100) if c.user == user]
    await store.timers_reschedule(claim, 5000.0)
    assert user not in [c.user for c in await store.timers_claim(4999.0, 60, 100)]
    [claim] = [c for c in await store.timers_claim(5000.0, 60, 100) if c.user == user]
    await schedule(store, user, Timer("z", 7000.0))  # a commit moved them
    await store.timers_reschedule(claim, None)
    assert user in [c.user for c in await store.timers_claim(7000.0, 60, 100)]
    [claim] = [c for c in await store.timers_claim(8000.0, 60, 100) if c.user == user]
    await store.timers_reschedule(claim, None)
    assert user not in [c.user for c in await store.timers_claim(10**9, 60, 100)]
