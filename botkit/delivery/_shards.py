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

import asyncio
import contextlib
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
    """One sender's heartbeat (a task of its own, every ``ttl / 3`` s) and the shards it owns.

    The heartbeat runs beside the send loop, so a sender busy retrying the
    provider still counts as live. ``shards`` is None until a heartbeat
    answered, and again after one failed: read every shard meanwhile, so
    nothing goes unread.

    Taking over a departed sender's entries waits until this sender's own
    heartbeats have succeeded for a whole ``ttl``: after an outage every
    sender's heartbeat has lapsed, and the others, alive, beat again within
    that time; only a sender that really left stays absent.
    """

    def __init__(self, outbox: ShardedOutbox, consumer: str, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("the sender heartbeat TTL must be positive")
        self.outbox = outbox
        self.consumer = consumer
        self.ttl = ttl
        self.shards: list[int] | None = None
        self.live: frozenset[str] = frozenset()
        self._healthy_since: float | None = None
        self._take_over = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start heartbeating."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._beat(), name="botkit-sender-heartbeat")

    async def stop(self) -> None:
        """Stop heartbeating and leave the live senders (its shards move at once)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        try:
            await self.outbox.senders_leave(self.consumer)
        except Exception:
            log.debug("could not leave the senders' set; the heartbeat expires", exc_info=True)

    async def _beat(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("sender heartbeat failed", exc_info=True)
            await asyncio.sleep(self.ttl / 3)

    async def refresh(self) -> None:
        """One heartbeat: the live senders, and the shards this sender owns among them."""
        try:
            live = frozenset(await self.outbox.senders_heartbeat(self.consumer, self.ttl))
        except Exception:
            self.shards, self._healthy_since = None, None
            raise
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
        live |= {self.consumer}
        shards = owned_shards(self.consumer, live, self.outbox.outbox_shards())
        if live != self.live or shards != self.shards:
            if self.shards is not None:
                log.info(
                    "senders now %d: this one reads %d of %d outbox shards",
                    len(live),
                    len(shards),
                    len(self.outbox.outbox_shards()),
                )
            self._take_over = True
        self.live, self.shards = live, shards

    @property
    def steady_live(self) -> frozenset[str] | None:
        """The live senders, once this sender's heartbeats have held for ``ttl`` (else None).

        Before that, a sender missing from the set may only have missed a
        beat in an outage: nothing of theirs is taken over yet.
        """
        healthy = self._healthy_since
        if self.shards is None or healthy is None or time.monotonic() - healthy < self.ttl:
            return None
        return self.live

    async def take_over(self, count: int) -> list[OutboxItem]:
        """After a change of the live senders: up to ``count`` entries of departed senders.

        Only once this sender's heartbeats have held for ``ttl`` (see the class).
        """
        shards, healthy = self.shards, self._healthy_since
        if not self._take_over or not shards or healthy is None:
            return []
        if time.monotonic() - healthy < self.ttl:
            return []
        self._take_over = False
        try:
            # Entries idle for half the TTL at least: a sender that left has not
            # touched its own for that long, and a second taker finds them fresh.
            return await self.outbox.outbox_take_over(
                self.consumer, self.live, count, shards=shards, min_idle=self.ttl / 2
            )
        except BaseException:
            # Try again next time (what a lost answer took is the sender's to take back).
            self._take_over = True
            raise
