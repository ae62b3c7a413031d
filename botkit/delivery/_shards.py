"""Which outbox shards a sender reads: rendezvous hashing over the live senders.

The Redis store splits the outbox into shards. Every sender announces itself
(a heartbeat into a shared set, :meth:`ShardedOutbox.senders_heartbeat`) and
reads the shards it owns: shard ``s`` belongs to the live sender with the
highest ``hash(sender, s)``. Every sender computes the same answer from the
same live set, and when a sender joins or leaves only the shards it gains or
loses change hands. The entries a departed sender had read and not
acknowledged are taken over by their shard's new owner at once
(:meth:`ShardedOutbox.outbox_take_over`), not after ``claim_idle``.

Owning is an efficiency, never a correctness requirement: the consumer group
gives each entry to one reader, claims still catch what nobody took, and each
user's replies keep their order through the send-order check, whoever sends.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable

from botkit.storage.base import OutboxItem, ShardedOutbox

log = logging.getLogger("botkit.sender")


def _weight(sender: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{sender}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(shard: int, senders: Iterable[str]) -> str:
    """The sender that owns ``shard`` among ``senders`` (highest rendezvous weight)."""
    return max(senders, key=lambda sender: (_weight(sender, shard), sender))


def owned_shards(sender: str, senders: Iterable[str], shards: Iterable[int]) -> list[int]:
    """The shards ``sender`` owns when ``senders`` (it included) are live."""
    live = sorted({*senders, sender})
    return [shard for shard in shards if owner(shard, live) == sender]


class ShardOwnership:
    """One sender's heartbeat and the shards it owns, refreshed every ``ttl / 3`` s.

    ``shards`` is None until the first heartbeat answered: read every shard
    meanwhile (and whenever the heartbeat fails, so nothing goes unread).
    """

    def __init__(self, outbox: ShardedOutbox, consumer: str, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("the sender heartbeat TTL must be positive")
        self.outbox = outbox
        self.consumer = consumer
        self.ttl = ttl
        self.shards: list[int] | None = None
        self.live: frozenset[str] = frozenset()
        self._beat_at = -float("inf")

    async def refresh(self, count: int) -> list[OutboxItem]:
        """Heartbeat when due; on a change, take over up to ``count`` orphaned entries.

        Returns the entries taken over (read by senders no longer live, in the
        shards this sender owns now), for the caller to send.
        """
        now = time.monotonic()
        if now - self._beat_at < self.ttl / 3:
            return []
        self._beat_at = now
        try:
            live = frozenset(await self.outbox.senders_heartbeat(self.consumer, self.ttl))
        except Exception:
            self.shards = None  # read everything until the heartbeat answers again
            raise
        live |= {self.consumer}
        shards = owned_shards(self.consumer, live, self.outbox.outbox_shards())
        changed = live != self.live or shards != self.shards
        if changed and self.shards is not None:
            log.info(
                "senders now %d: this one reads %d of %d outbox shards",
                len(live),
                len(shards),
                len(self.outbox.outbox_shards()),
            )
        self.live, self.shards = live, shards
        if not changed or not shards:
            return []
        # Entries idle for half the TTL at least: a sender that left has not
        # touched its own for that long, and a second taker finds them fresh.
        return await self.outbox.outbox_take_over(
            self.consumer, live, count, shards=shards, min_idle=self.ttl / 2
        )

    async def leave(self) -> None:
        """Say this sender is gone (its shards move at once); best effort."""
        try:
            await self.outbox.senders_leave(self.consumer)
        except Exception:
            log.debug("could not leave the senders' set; the heartbeat expires", exc_info=True)
