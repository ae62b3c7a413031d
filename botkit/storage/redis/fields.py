"""The conversation record in Redis (its field list, written once) and the sent records' codec.

A user's conversation is one hash: the fields :data:`FIELDS` names (the Lua
scripts get the same list, see :mod:`botkit.storage.redis.scripts`) and one
field per pending timer, ``t:<name>`` (:func:`timer_value`). BEGIN and LOAD
read the whole hash; :func:`conversation` and :func:`changes` read and
write it by these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botkit._events import Timer
from botkit._json import compact_json
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
    "handoff",
)
"""The conversation hash's fields (besides its timers)."""

TIMER = "t:"
"""The start of a timer's field in the conversation hash: ``t:<name>``."""

Stored = Mapping[str, str]
"""A conversation's hash as read from Redis (field: value)."""


def number(value: float | None) -> str:
    """A float as Redis keeps it ("" for None): repr() round-trips, Lua's tostring would not."""
    return "" if value is None else repr(float(value))


def dump_data(user: str, data: dict[str, Any]) -> str:
    """``ctx.data`` as JSON; a TypeError that says what to keep when it is not JSON."""
    try:
        return compact_json(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the conversation data of user ...{user[-4:]} cannot be saved in Redis: {exc}. "
            "Keep only JSON values in ctx.data (str, int, float, bool, None, lists, "
            "dicts with str keys)"
        ) from exc


def changes(
    stored: Stored, new: Conversation, loaded: Mapping[str, Timer] | None = None
) -> tuple[list[str], list[str]]:
    """The conversation's fields to set (name, value, ...) and to delete, against ``stored``.

    ``last_inbound`` never moves back: the later of the stored and the new
    one is kept. ``loaded``: the timers as read from ``stored``; a timer equal
    to its loaded one is known unchanged without encoding it again.
    """
    was = stored.get
    put = ["version", str(int(was("version") or 0) + 1)]
    drop: list[str] = []

    def update(name: str, now: str | None, default: str | None = None) -> None:
        before = was(name) if default is None else (was(name) or default)
        if now is None:
            if before is not None:
                drop.append(name)
        elif now != before:
            put.extend((name, now))

    update("state", new.state)
    update("data", dump_data(new.user, new.data))
    inbound, last_inbound = new.last_inbound, was("last_inbound")
    if inbound is not None and (last_inbound is None or inbound > float(last_inbound)):
        update("last_inbound", number(inbound))
    update("last_active", None if new.last_active is None else number(new.last_active))
    update("opted_out", "1" if new.opted_out else "0", "0")
    update("not_on_whatsapp", "1" if new.not_on_whatsapp else "0", "0")
    timers = new.timers
    for name, timer in timers.items():
        if loaded is None or loaded.get(name) != timer:
            update(TIMER + name, timer_value(timer))
    if loaded is None or timers.keys() != loaded.keys():  # else none was dropped
        drop.extend(f for f in stored if f.startswith(TIMER) and f[len(TIMER) :] not in timers)
    update("handoff", None if new.handoff is None else new.handoff.to_json())
    return put, drop


def timer_value(timer: Timer) -> str:
    """A timer as its field keeps it: the due time in milliseconds when it has no data
    and does not cancel on message (Redis keeps such a value as a number, in 10
    bytes), else ``<due ms> <1 to cancel on message, else 0> <data JSON or nothing>``."""
    if timer.data_json is None and not timer.cancel_on_message:
        return str(timer.due_ms)
    return f"{timer.due_ms} {1 if timer.cancel_on_message else 0} {timer.data_json or ''}"


def load_timer(name: str, value: str) -> Timer:
    """The timer :func:`timer_value` wrote."""
    due, _, rest = value.partition(" ")
    if not rest:
        return Timer.from_json(name, int(due) / 1000, None)
    return Timer.from_json(name, int(due) / 1000, rest[2:] or None, rest[0] == "1")


def conversation(user: str, stored: Stored) -> Conversation:
    """The conversation of ``user`` from its hash (an empty one when it has no fields)."""
    f = stored.get
    data, last_inbound, last_active = f("data"), f("last_inbound"), f("last_active")
    handoff = f("handoff")
    return Conversation(
        user=user,
        state=f("state"),
        data=json.loads(data) if data else {},
        version=int(f("version") or 0),
        last_inbound=float(last_inbound) if last_inbound else None,
        last_active=float(last_active) if last_active else None,
        opted_out=f("opted_out") == "1",
        not_on_whatsapp=f("not_on_whatsapp") == "1",
        timers={
            name[len(TIMER) :]: load_timer(name[len(TIMER) :], value)
            for name, value in stored.items()
            if name.startswith(TIMER)
        },
        handoff=Handoff.from_json(handoff) if handoff else None,
    )


# Statuses that say a message reached the user's phone (the provider's names,
# any case): from then on nothing resends it, so its text, media and
# templates need not be kept (see botkit.delivery._status.was_delivered).
_REACHED = frozenset({"delivered", "read", "visited"})


def kept_record(record: SentRecord) -> str:
    """The record as kept: its JSON while the message may still be resent; once a
    receipt says it reached the user (nothing resends it then), a compact array
    ``[ref, mode, status]`` without the content, the user and the messageId
    (both are known from where it is kept), followed by an object of whatever
    else differs from the defaults (origin, attempt, not_before, resent)."""
    if record.status.lower() not in _REACHED:
        return record.to_json()
    message = record.message.to_dict()
    for name in ("user", "text", "media", "template", "fallback", "created_at"):
        message.pop(name, None)
    ref, mode = message.pop("ref"), message.pop("mode")
    if message.get("origin") == "reply":
        del message["origin"]
    if message.get("attempt") == 0:
        del message["attempt"]
    if record.resent:
        message["resent"] = True
    kept: list[Any] = [ref, mode, record.status]
    if message:
        kept.append(message)
    return compact_json(kept)


def record_from_kept(message_id: str, user: str, kept: str) -> SentRecord:
    """A record from :func:`kept_record`'s forms (and the compact object of botkit 0.x
    layout 2's first weeks, ``{"message": {...}, "status": ...}``)."""
    if kept.startswith('{"message_id"'):
        return SentRecord.from_json(kept)
    data = json.loads(kept)
    if isinstance(data, list):
        ref, mode, status, *rest = data
        extra = dict(rest[0]) if rest else {}
        resent = extra.pop("resent", False)
        data = {"message": {"ref": ref, "mode": mode, **extra}, "status": status}
        if resent:
            data["resent"] = True
    data["message_id"] = message_id
    data["message"]["user"] = user
    data["sent_at"] = 0.0
    return SentRecord.from_json(json.dumps(data))
