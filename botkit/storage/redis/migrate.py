"""From the store's earlier layouts to the current one (3).

Layout 1 kept every user's keys under the user's own hash tag
(``P:{<user>}:conv``), one outbox stream (``P:outbox``) with its delayed set
(``P:outbox:delayed``), a dedupe key per incoming message and a sent record per
outgoing one (``P:sent:<messageId>``). Layout 2 is the sharded layout with
each user's send order in a hash of its own (``P:{T}:<user>:order``) and a key
per receipt (``P:{T}:<user>:receipt:<ref>``); layout 3 keeps the send order
in the conversation hash and the receipts among the user's sent records. A
store that finds an earlier layout refuses to open (:class:`StoreLayoutError`)
and names the command that moves it: ``botkit store migrate`` (:func:`migrate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from botkit._outbound import SentRecord
from botkit.storage.base import StorageError
from botkit.storage.redis.connection import Client
from botkit.storage.redis.fields import kept_record
from botkit.storage.redis.keys import LAYOUT, Keys
from botkit.storage.redis.scripts import RECEIPT, UPDATE_SENT


class StoreLayoutError(StorageError):
    """Redis holds the store in a layout this botkit does not run (or with another shard count).

    The message says what to do: usually stop the workers and run
    ``botkit store migrate``.
    """


async def legacy_data(client: aioredis.Redis, keys: Keys) -> bool:
    """True when Redis holds layout-1 data of this bot (its outbox or a conversation)."""
    if await client.exists(keys.legacy_outbox(), keys.legacy_delayed()):
        return True
    async for key in client.scan_iter(match=keys.legacy_conv_pattern(), count=1000):
        if _legacy_key(key, keys.base) is not None:
            return True
    return False


@dataclass(slots=True)
class Migrated:
    """What :func:`migrate` moved."""

    conversations: int = 0
    messages: int = 0
    delayed: int = 0
    sent_records: int = 0
    send_orders: int = 0
    receipts: int = 0

    def __str__(self) -> str:
        return (
            f"{self.conversations} conversations, {self.messages} queued messages, "
            f"{self.delayed} delayed messages, {self.sent_records} sent-message records, "
            f"{self.send_orders} send orders, {self.receipts} receipts"
        )


_LEGACY_SUFFIXES = ("conv", "order", "lock", "waiting")


def _legacy_key(key: str, base: str) -> tuple[str, str] | None:
    """(user, what) of a layout-1 key ``<base>:{<user>}:<what>``, else None.

    Layout 2's ``<base>:{<tag>}:<user>:<what>`` has the user after the tag,
    so its part after the tag is never one of layout 1's.
    """
    rest = key[len(base) + 1 :]
    if not rest.startswith("{"):
        return None
    user, _, what = rest[1:].partition("}:")
    if not user or "}" in user or not (what in _LEGACY_SUFFIXES or what.startswith("seen:")):
        return None
    return user, what


async def migrate(
    client: Client,
    keys: Keys,
    *,
    group: str = "senders",
    conversation_ttl_ms: int | None = None,
    sent_ttl_ms: int = 7 * 86_400_000,
    sent_per_user: int = 32,
) -> Migrated:
    """Move this bot's data of an earlier layout to the current one of ``keys``; idempotent.

    From layout 2 (found in the meta key): each user's send order moves into
    their conversation hash, each receipt among their sent records. From
    layout 1 (no meta key): conversations (with their remaining TTL) and send
    orders move to the users' new keys; every message in the old outbox
    (unread or read but not acknowledged) and in its delayed set moves to its
    user's shard; sent records move among their users' last
    ``sent_per_user``. Dedupe marks are dropped (a provider retry of a
    message handled just before the upgrade runs again). Run it with every
    worker stopped; the meta key is written last, so an interrupted run can
    be run again.
    """
    r: Any = client  # typed loosely: redis-py's types do not know decode_responses=True
    meta = await r.hgetall(keys.meta)
    if meta and int(meta.get("layout", 0)) == 2:
        done = await _from_layout_2(r, keys, sent_ttl_ms=sent_ttl_ms, sent_per_user=sent_per_user)
        await r.hset(keys.meta, "layout", LAYOUT)
        return done
    return await _from_layout_1(
        r,
        keys,
        group=group,
        conversation_ttl_ms=conversation_ttl_ms,
        sent_ttl_ms=sent_ttl_ms,
        sent_per_user=sent_per_user,
    )


async def _move_order(r: Any, order: str, conv: str, ttl_if_none: int | None) -> bool:
    """A send-order hash (fields next, done) into the conversation hash; False: it was empty.

    The conversation lives at least as long as the order did.
    """
    fields = await r.hgetall(order)
    if fields.get("next"):
        moved = {"next_seq": fields["next"]}
        if fields.get("done"):
            moved["done_seq"] = fields["done"]
        ttl = await r.pttl(order)
        await r.hset(conv, mapping=moved)
        left = await r.pttl(conv)
        if ttl > 0 and left < ttl:
            await r.pexpire(conv, ttl)
        elif ttl <= 0 and left < 0 and ttl_if_none:  # neither had an expiry
            await r.pexpire(conv, ttl_if_none)
    await r.delete(order)
    return bool(fields.get("next"))


async def _from_layout_2(r: Any, keys: Keys, *, sent_ttl_ms: int, sent_per_user: int) -> Migrated:
    """Layout 2 to 3: send orders into the conversations, receipts among the sent records."""
    done = Migrated()
    # One key at a time: on Redis Cluster each is in its user's slot.
    async for key in r.scan_iter(match=keys.layout2_order_pattern(), count=1000):
        user = key[: -len(":order")].rsplit(":", 1)[-1]
        if key == f"{keys.user(user)}:order" and await _move_order(r, key, keys.conv(user), None):
            done.send_orders += 1
    async for key in r.scan_iter(match=keys.layout2_receipt_pattern(), count=1000):
        head, _, ref = key.partition(":receipt:")
        user = head.rsplit(":", 1)[-1]
        if head != keys.user(user):
            continue
        fields = await r.hgetall(key)
        if fields.get("id"):
            for name in fields:
                if name.startswith("s:"):
                    args = ["r:" + ref, fields["id"], name[2:], sent_ttl_ms, sent_per_user]
                    await r.eval(RECEIPT.source, 1, keys.refs(user), *args)
            done.receipts += 1
        await r.delete(key)
    return done


async def _from_layout_1(
    r: Any,
    keys: Keys,
    *,
    group: str,
    conversation_ttl_ms: int | None,
    sent_ttl_ms: int,
    sent_per_user: int,
) -> Migrated:
    """Layout 1 (before shards) to the current layout."""
    done = Migrated()
    base = keys.base
    # Conversations and send orders.
    legacy = {
        key: found
        async for key in r.scan_iter(match=f"{base}:{{*}}:*", count=1000)
        if (found := _legacy_key(key, base)) is not None
    }
    # Conversations first: a send order then joins a conversation with its TTL.
    for key, (user, suffix) in sorted(legacy.items(), key=lambda found: found[1][1] != "conv"):
        if suffix == "order":
            await _move_order(r, key, keys.conv(user), conversation_ttl_ms)
            continue
        if suffix != "conv":
            await r.delete(key)  # locks, wake-up flags and dedupe marks: not carried over
            continue
        target = keys.conv(user)
        pttl = await r.pttl(key)
        fields = await r.hgetall(key)
        if fields:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(target, mapping=fields)
                ttl = pttl if pttl > 0 else conversation_ttl_ms
                if ttl and ttl > await r.pttl(target):
                    pipe.pexpire(target, ttl)
                pipe.delete(key)
                await pipe.execute()
            done.conversations += 1
        else:
            await r.delete(key)
    # The outbox: unread and pending entries alike, in their order.
    old = keys.legacy_outbox()
    if await r.exists(old):
        last = "-"
        while True:
            entries = await r.xrange(old, min=last, count=500)
            entries = [e for e in entries if e[0] != last]
            if not entries:
                break
            for entry_id, fields in entries:
                if "m" in fields:
                    user = json.loads(fields["m"])["user"]
                    await r.xadd(keys.outbox(keys.shard(user)), fields)
                    done.messages += 1
                await r.xdel(old, entry_id)
            last = entries[-1][0]
        await r.delete(old)
    delayed = keys.legacy_delayed()
    for message, score in await r.zrange(delayed, 0, -1, withscores=True):
        user = json.loads(message)["user"]
        await r.zadd(keys.delayed(keys.shard(user)), {message: score})
        done.delayed += 1
    await r.delete(delayed)
    # Sent records, oldest first so the newest stay among each user's last ones.
    records: list[tuple[float, str, str]] = []
    async for key in r.scan_iter(match=f"{base}:sent:*", count=1000):
        raw = await r.get(key)
        if raw:
            data = json.loads(raw)
            records.append((float(data.get("sent_at", 0)), data["message"]["user"], raw))
        await r.delete(key)
    records.sort()
    for _, user, raw in records:
        record = SentRecord.from_json(raw)
        await r.eval(
            UPDATE_SENT.source,
            1,
            keys.refs(user),
            record.message_id,
            kept_record(record),
            sent_ttl_ms,
            sent_per_user,
        )
        done.sent_records += 1
    for shard in range(keys.shards):
        try:
            await r.xgroup_create(keys.outbox(shard), group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
    await r.hset(keys.meta, mapping={"layout": LAYOUT, "shards": keys.shards})
    return done
