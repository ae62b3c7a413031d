"""The conversation record in Redis (its field list, written once) and the sent records' codec.

A user's conversation is one hash. :data:`FIELDS` names its fields in the
order the scripts return them: the Lua scripts get the same list (see
:mod:`botkit.storage.redis.scripts`), and :func:`conversation` and
:func:`changes` read and write by these names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botkit._events import Timer
from botkit._outbound import SentRecord
from botkit._transcript import Handoff
from botkit.storage.base import Conversation

FIELDS = (
    "state",
    "data",
    "version",
    "last_inbound",
    "last_active",
    "opted_out",
    "not_on_whatsapp",
    "timers",
    "handoff",
)
"""The conversation hash's fields, in the order BEGIN and LOAD return them."""

Stored = Sequence[str | None]
"""A conversation's fields as read from Redis, in :data:`FIELDS` order (None: missing)."""


def number(value: float | None) -> str:
    """A float as Redis keeps it ("" for None): repr() round-trips, Lua's tostring would not."""
    return "" if value is None else repr(float(value))


def dump_data(user: str, data: dict[str, Any]) -> str:
    """``ctx.data`` as JSON; a TypeError that says what to keep when it is not JSON."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the conversation data of user ...{user[-4:]} cannot be saved in Redis: {exc}. "
            "Keep only JSON values in ctx.data (str, int, float, bool, None, lists, "
            "dicts with str keys)"
        ) from exc


def changes(stored: Stored, new: Conversation) -> tuple[list[str], list[str]]:
    """The conversation's fields to set (name, value, ...) and to delete, against ``stored``.

    ``last_inbound`` never moves back: the later of the stored and the new
    one is kept.
    """
    was = dict(zip(FIELDS, stored, strict=True))
    put = ["version", str(int(was["version"] or 0) + 1)]
    drop: list[str] = []

    def update(name: str, now: str | None, default: str | None = None) -> None:
        before = was[name] if default is None else (was[name] or default)
        if now is None:
            if before is not None:
                drop.append(name)
        elif now != before:
            put.extend((name, now))

    update("state", new.state)
    update("data", dump_data(new.user, new.data))
    inbound, last_inbound = new.last_inbound, was["last_inbound"]
    if inbound is not None and (last_inbound is None or inbound > float(last_inbound)):
        update("last_inbound", number(inbound))
    update("last_active", None if new.last_active is None else number(new.last_active))
    update("opted_out", "1" if new.opted_out else "0", "0")
    update("not_on_whatsapp", "1" if new.not_on_whatsapp else "0", "0")
    update("timers", dump_timers(new) if new.timers else None)
    update("handoff", None if new.handoff is None else new.handoff.to_json())
    return put, drop


def dump_timers(conversation: Conversation) -> str:
    """The pending timers as compact JSON: ``{"name": [due, id, data?, 1?], ...}``."""
    stored = {name: timer.stored() for name, timer in conversation.timers.items()}
    return dump_data(conversation.user, stored)


def load_timers(raw: str | None) -> dict[str, Timer]:
    """The timers :func:`dump_timers` wrote."""
    if not raw:
        return {}
    return {name: Timer.from_stored(name, value) for name, value in json.loads(raw).items()}


def conversation(user: str, stored: Stored) -> Conversation:
    """The conversation of ``user`` from its stored fields (an empty one when all are missing)."""
    f = dict(zip(FIELDS, stored, strict=True))
    return Conversation(
        user=user,
        state=f["state"],
        data=json.loads(f["data"]) if f["data"] else {},
        version=int(f["version"] or 0),
        last_inbound=None if not f["last_inbound"] else float(f["last_inbound"]),
        last_active=None if not f["last_active"] else float(f["last_active"]),
        opted_out=f["opted_out"] == "1",
        not_on_whatsapp=f["not_on_whatsapp"] == "1",
        timers=load_timers(f["timers"]),
        handoff=Handoff.from_json(f["handoff"]) if f["handoff"] else None,
    )


# Statuses that say a message reached the user's phone (the provider's names,
# any case): from then on nothing resends it, so its text, media and
# templates need not be kept (see botkit.delivery._status.was_delivered).
_REACHED = frozenset({"delivered", "read", "visited"})


def kept_record(record: SentRecord) -> str:
    """The record as kept: its JSON while the message may still be resent; once a
    receipt says it reached the user (nothing resends it then), compact JSON
    without the content, the user and the messageId (both are known from
    where it is kept) nor default values."""
    if record.status.lower() not in _REACHED:
        return record.to_json()
    data = json.loads(record.to_json())
    del data["message_id"], data["sent_at"]
    message = data["message"]
    del message["user"]
    for name in ("text", "media", "template", "fallback", "created_at"):
        message.pop(name, None)
    if message.get("origin") == "reply":
        del message["origin"]
    if message.get("attempt") == 0:
        del message["attempt"]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def record_from_kept(message_id: str, user: str, kept: str) -> SentRecord:
    """A record from :func:`kept_record`'s form."""
    if kept.startswith('{"message_id"'):
        return SentRecord.from_json(kept)
    data = json.loads(kept)
    data["message_id"] = message_id
    data["message"]["user"] = user
    data["sent_at"] = 0.0
    return SentRecord.from_json(json.dumps(data))
