"""The store's key layout: every key name the Redis store uses, built in one place.

Users are spread over ``N`` outbox shards (``shard = crc32(user) % N``, N
fixed when the store is first created, 256 by default, kept in the meta
key). Every key of a user and every key of a shard carries the shard's hash
tag, so one script only ever touches one cluster slot; the tags are chosen
so the shards spread evenly over the 16,384 slots (:func:`shard_tags`).
``P`` = ``<prefix>:<bot>``, ``T`` = the shard's tag::

    P:meta                        hash: layout (3), shards (N)
    P:senders                     zset: live senders (member: consumer name, score: the
                                  heartbeat's expiry); a key of its own slot
    P:secret:<name>               a secret every process shares (no expiry)
    P:notices                     stream: the last agent notices (handoffs, messages of handed-off
                                  users), for every worker's /agent page and, through the
                                  consumer group "webhook", the agent webhook (un-posted ones
                                  kept up to a hard cap); a key of its own slot
    P:{T}:<user>:conv             hash: the conversation (see fields.py) and the user's
                                  send order (next_seq, done_seq); sliding TTL
    P:{T}:<user>:lock             the turn lock: "<token> <dedupe key>", PX lock_ttl
    P:{T}:<user>:waiting          set while a turn waits: the commit publishes a wake-up
    P:{T}:<user>:seen             list: the user's last K handled dedupe keys (TTL done_ttl)
    P:{T}:<user>:refs             list: messageId, sent-message record, ...: the user's
                                  last K, newest first (TTL sent_ttl); a reply a status
                                  callback named before it was acknowledged (a receipt)
                                  is among them as "r:<ref>", [messageId, [status...]]
    P:{T}:<user>:transcript       stream: the user's transcript (field "e": an entry's JSON),
                                  capped at transcript_length, TTL transcript_ttl
    P:{T}:handoffs                the shard's zset of handed-off users, scored by since when
    P:{T}:outbox                  the shard's stream of messages to send (group "senders")
    P:{T}:delayed                 the shard's zset of messages waiting for ``not_before``
    P:{T}:timers                  the shard's zset of users with a pending timer, scored by
                                  the earliest one's due time (or by the end of a claim);
                                  the timers themselves are in the user's conversation
    P:{T}:unlock                  the shard's wake-up channel (SPUBLISH, sharded pub/sub):
                                  "<store instance> <user>" when a user's lock is let go
    <prefix>:campaigns            hash: campaign name -> the bot it belongs to (names are
                                  unique under a prefix, so a command finds the bot)
    P:campaigns                   hash: the bot's campaigns, name -> id
    P:{cI}:meta                   hash: campaign I's definition, state and token bucket
    P:{cI}:audience               stream: its recipients not yet settled (group "senders")
    P:{cI}:r:<k>                  hash: results bucket k, phone -> "<kind>|<messageId>|
                                  <status>|<code>" (k = crc32(phone) % buckets)
    P:{cI}:totals                 hash: its counters (audience, done, sent, delivered...)
    P:{cI}:invalid                list: the audience's numbers that are not phone numbers

A message being handled is "in progress" while its turn holds the lock (the
lock names the dedupe key); once committed its key joins ``seen``.
"""

from __future__ import annotations

import functools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

LAYOUT = 3
"""The layout version written in the meta key (1: the layout before shards; 2: the send
order in a hash of its own and a key per receipt)."""

DEFAULT_SHARDS = 256


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """A hash tag per shard whose cluster slots spread evenly: shard i's tag hashes
    into the i-th of ``shards`` equal slot ranges (so up to 16,384 shards).

    Deterministic: every process computes the same tags.
    """
    if not 1 <= shards <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"the shard count must be 1 to {REDIS_CLUSTER_HASH_SLOTS}, not {shards}")
    tags: list[str | None] = [None] * shards
    missing = shards
    candidate = 0
    while missing:
        tag = format(candidate, "x")
        candidate += 1
        shard = key_slot(tag.encode()) * shards // REDIS_CLUSTER_HASH_SLOTS
        if tags[shard] is None:
            tags[shard] = tag
            missing -= 1
    return tuple(t for t in tags if t is not None)


def shard_of(user: str, shards: int) -> int:
    """The user's shard: ``crc32(user) % shards``."""
    return zlib.crc32(user.encode()) % shards


class Keys:
    """Key names of one bot under one prefix, over ``shards`` shards."""

    __slots__ = ("base", "meta", "notices", "prefix", "senders", "shards", "tags")

    def __init__(self, prefix: str, bot: str, shards: int = DEFAULT_SHARDS) -> None:
        for name, value in (("prefix", prefix), ("bot", bot)):
            if not value or any(c in value for c in "{} \t\r\n"):
                raise ValueError(
                    f"RedisStore {name} {value!r} must be non-empty, without braces or spaces "
                    "(braces would break the shards' hash tags)"
                )
        self.prefix = prefix
        self.base = f"{prefix}:{bot}"
        self.meta = f"{self.base}:meta"
        self.senders = f"{self.base}:senders"
        self.notices = f"{self.base}:notices"
        self.shards = shards
        self.tags = shard_tags(shards)

    def shard(self, user: str) -> int:
        """The user's shard."""
        return zlib.crc32(user.encode()) % self.shards

    def user(self, user: str) -> str:
        """The common start of the user's keys (carries the shard's tag)."""
        return f"{self.base}:{{{self.tags[self.shard(user)]}}}:{user}"

    def conv(self, user: str) -> str:
        """The user's conversation hash."""
        return f"{self.user(user)}:conv"

    def turn(self, user: str) -> list[str]:
        """conv, lock, waiting, seen: the per-user keys of a turn."""
        base = self.user(user)
        return [f"{base}:conv", f"{base}:lock", f"{base}:waiting", f"{base}:seen"]

    def transcript(self, user: str) -> str:
        """The user's transcript stream."""
        return f"{self.user(user)}:transcript"

    def handoffs(self, shard: int) -> str:
        """The shard's handed-off users, by when they were handed off."""
        return f"{self.base}:{{{self.tags[shard]}}}:handoffs"

    def secret(self, name: str) -> str:
        """A secret every process on this Redis shares (no expiry)."""
        return f"{self.base}:secret:{name}"

    def refs(self, user: str) -> str:
        """The user's last sent-message records, by messageId."""
        return f"{self.user(user)}:refs"

    def outbox(self, shard: int) -> str:
        """The shard's outbox stream."""
        return f"{self.base}:{{{self.tags[shard]}}}:outbox"

    def attempts(self, shard: int) -> str:
        """The shard's outbox entries a sender started to send: entry id -> that sender."""
        return f"{self.base}:{{{self.tags[shard]}}}:attempts"

    def unlock(self, shard: int) -> str:
        """The shard's wake-up channel (a shard channel: SPUBLISH / SSUBSCRIBE)."""
        return f"{self.base}:{{{self.tags[shard]}}}:unlock"

    def user_unlock(self, user: str) -> str:
        """The wake-up channel of the user's shard."""
        return self.unlock(self.shard(user))

    def delayed(self, shard: int) -> str:
        """The shard's delayed messages."""
        return f"{self.base}:{{{self.tags[shard]}}}:delayed"

    def timers(self, shard: int) -> str:
        """The shard's users with a pending timer, by when the earliest is due."""
        return f"{self.base}:{{{self.tags[shard]}}}:timers"

    # Campaigns: each campaign's keys share a tag of their own (one slot).

    @property
    def campaigns(self) -> str:
        """The bot's campaigns: name -> id."""
        return f"{self.base}:campaigns"

    @property
    def campaign_bots(self) -> str:
        """Every bot's campaigns under the prefix: name -> bot."""
        return f"{self.prefix}:campaigns"

    def campaign(self, campaign_id: str, part: str) -> str:
        """A key of campaign ``campaign_id``: meta, audience, totals, invalid, r:<bucket>."""
        return f"{self.base}:{{c{campaign_id}}}:{part}"

    # Layout 2's keys that layout 3 folded into others, for migration.

    def layout2_order_pattern(self) -> str:
        """A SCAN pattern for layout 2's send-order hashes (``P:{T}:<user>:order``)."""
        return f"{self.base}:{{*}}:*:order"

    def layout2_receipt_pattern(self) -> str:
        """A SCAN pattern for layout 2's receipts (``P:{T}:<user>:receipt:<ref>``)."""
        return f"{self.base}:{{*}}:*:receipt:*"

    # The layout before shards (version 1), for detection and migration.

    def legacy_outbox(self) -> str:
        """The one outbox stream of layout 1."""
        return f"{self.base}:outbox"

    def legacy_delayed(self) -> str:
        """The one delayed zset of layout 1."""
        return f"{self.base}:outbox:delayed"

    def legacy_conv_pattern(self) -> str:
        """A SCAN pattern for layout 1's conversations (``P:{<user>}:conv``)."""
        return f"{self.base}:{{*}}:conv"
