"""Shard ownership: rendezvous hashing over the live senders."""

from __future__ import annotations

from botkit.delivery import owned_shards, owner

SHARDS = range(256)


def assignment(senders: list[str]) -> dict[int, str]:
    return {shard: owner(shard, senders) for shard in SHARDS}


def test_every_shard_has_exactly_one_owner_and_all_agree() -> None:
    senders = ["host-a-1", "host-b-7", "host-c-3"]
    owned = {sender: owned_shards(sender, senders, SHARDS) for sender in senders}
    assert sorted(s for shards in owned.values() for s in shards) == list(SHARDS)
    # The order a sender lists the others in does not matter.
    assert owned["host-a-1"] == owned_shards("host-a-1", list(reversed(senders)), SHARDS)
    # Spread: each owns roughly a third.
    assert all(256 / 3 * 0.6 < len(shards) < 256 / 3 * 1.4 for shards in owned.values())


def test_a_sender_that_joins_takes_only_its_share() -> None:
    before = assignment(["a", "b", "c"])
    after = assignment(["a", "b", "c", "d"])
    moved = {shard for shard in SHARDS if before[shard] != after[shard]}
    assert moved, "the new sender gets some shards"
    assert all(after[shard] == "d" for shard in moved), "nothing moves between the others"
    assert 256 / 4 * 0.6 < len(moved) < 256 / 4 * 1.4


def test_a_sender_that_leaves_gives_away_only_its_own() -> None:
    before = assignment(["a", "b", "c", "d"])
    after = assignment(["a", "b", "d"])
    moved = {shard for shard in SHARDS if before[shard] != after[shard]}
    assert moved == {shard for shard in SHARDS if before[shard] == "c"}
