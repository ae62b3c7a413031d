"""What a conversation's record holds beyond the bot's state: its handoff and its transcript.

A :class:`Handoff` is kept in the user's conversation while a person, not
the bot, answers them. A :class:`TranscriptEntry` is one line of the user's
transcript: a message in or out, a later delivery status, a flow move or a
handoff event. Both are wire-neutral and know nothing of the stores.

Transcript entries never carry the user's phone number: a transcript is kept
under its user, and the agent API names the user once, beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from botkit._events import (
    ContactsMessage,
    Event,
    LocationMessage,
    MediaMessage,
    TextMessage,
)
from botkit._json import compact_json
from botkit._outbound import Origin, OutboundMessage

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class HandoffStatus(StrEnum):
    """Where a handed-off conversation is: waiting for a person, or taken by one."""

    WAITING = "waiting"
    TAKEN = "taken"


class HandoffEnd(StrEnum):
    """Why a handoff ended (``ctx.event.reason`` in a ``@router.handoff_ended`` handler)."""

    RELEASED = "released"
    """An agent gave the conversation back to the bot."""
    TIMED_OUT = "timed_out"
    """No agent wrote for the handoff timeout (``BOTKIT_HANDOFF_TIMEOUT``)."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """A conversation handed to a person: the bot's handlers do not run for the user's messages.

    ``since`` (unix seconds) is when it was handed off, ``reason`` and
    ``note`` what the bot or operator said about it, ``by`` who handed it
    off (``"bot"`` or ``"operator"``), ``agent`` who claimed it (None while
    waiting), ``last_agent_at`` the last agent message (or the claim), and
    ``last_text``/``last_at`` the user's last message since.
    """

    since: float
    reason: str = ""
    note: str = ""
    by: str = "bot"
    agent: str | None = None
    claimed_at: float | None = None
    last_agent_at: float | None = None
    last_text: str | None = None
    last_at: float | None = None

    @property
    def status(self) -> HandoffStatus:
        """Waiting for an agent, or taken by one."""
        return HandoffStatus.WAITING if self.agent is None else HandoffStatus.TAKEN

    def heard(self, text: str | None, at: float) -> Handoff:
        """The handoff after the user wrote ``text`` at ``at``."""
        return replace(self, last_text=text, last_at=at)

    def to_dict(self) -> dict[str, Any]:
        """A compact dict (defaults left out): what the stores keep and the API shows."""
        out: dict[str, Any] = {"since": self.since}
        for name in ("reason", "note", "agent", "claimed_at", "last_agent_at"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.by != "bot":
            out["by"] = self.by
        if self.last_at is not None:
            out["last_text"], out["last_at"] = self.last_text, self.last_at
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON."""
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Handoff:
        """The handoff from :meth:`to_dict`'s form."""
        return cls(
            since=float(data["since"]),
            reason=str(data.get("reason", "")),
            note=str(data.get("note", "")),
            by=str(data.get("by", "bot")),
            agent=data.get("agent"),
            claimed_at=data.get("claimed_at"),
            last_agent_at=data.get("last_agent_at"),
            last_text=data.get("last_text"),
            last_at=data.get("last_at"),
        )

    @classmethod
    def from_json(cls, raw: str) -> Handoff:
        """The handoff from :meth:`to_json`'s form."""
        return cls.from_dict(json.loads(raw))


class EntryKind(StrEnum):
    """What a transcript entry records."""

    IN = "in"
    """A message from the user."""
    OUT = "out"
    """A message to the user (the bot's, an agent's or a send from outside)."""
    STATUS = "status"
    """A later delivery status of an outgoing message (by its ``ref``)."""
    FLOW = "flow"
    """The user entered, moved through or left a flow."""
    HANDOFF = "handoff"
    """The conversation was handed off, claimed, released or timed out."""


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One line of a user's transcript.

    ``kind`` says what it records, ``at`` when (unix seconds), ``data`` the
    rest (JSON values; see :func:`incoming_entry` and friends). ``id`` is
    the store's id of the entry, increasing in the user's transcript (empty
    before it is stored); it is the cursor of the agent API's pages.
    """

    kind: EntryKind
    at: float
    data: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    id: str = ""

    def to_json(self) -> str:
        """The stored form: compact JSON ``{"k": kind, "t": at, ...data}``."""
        return compact_json({"k": self.kind.value, "t": self.at, **self.data})

    @classmethod
    def from_json(cls, entry_id: str, raw: str) -> TranscriptEntry:
        """The entry from its stored form."""
        data = json.loads(raw)
        kind = EntryKind(data.pop("k"))
        at = float(data.pop("t"))
        return cls(kind, at, MappingProxyType(data), entry_id)

    def to_dict(self) -> dict[str, Any]:
        """What the agent API shows: ``{"id", "kind", "at", ...data}``."""
        return {"id": self.id, "kind": self.kind.value, "at": self.at, **self.data}


@dataclass(frozen=True, slots=True)
class TranscriptPage:
    """Entries of a transcript, oldest first; ``before`` asks for the page before them."""

    entries: tuple[TranscriptEntry, ...]
    before: str | None
    """The id to pass as ``before`` for the previous (older) page; None at the start."""


def latest_statuses(entries: Iterable[TranscriptEntry]) -> dict[str, str]:
    """The last delivery status seen of each outgoing message (by ``ref``) among ``entries``."""
    return {
        str(entry.data.get("ref")): str(entry.data.get("status"))
        for entry in entries
        if entry.kind is EntryKind.STATUS
    }


def incoming_entry(event: Event, at: float) -> TranscriptEntry | None:
    """The entry of an incoming message (None for other events)."""
    data: dict[str, Any]
    if isinstance(event, TextMessage):
        data = {"type": "text", "text": event.text}
    elif isinstance(event, MediaMessage):
        media = event.media
        data = {"type": "media", "media": {"url": media.url, "mime": media.mime_type}}
        if media.name:
            data["media"]["name"] = media.name
        if event.caption:
            data["text"] = event.caption
    elif isinstance(event, LocationMessage):
        data = {"type": "location", "latitude": event.latitude, "longitude": event.longitude}
        if event.address or event.name:
            data["text"] = ", ".join(p for p in (event.name, event.address) if p)
    elif isinstance(event, ContactsMessage):
        data = {"type": "contacts", "text": ", ".join(c.name or "?" for c in event.contacts)}
    else:
        return None
    data["mid"] = event.id
    return TranscriptEntry(EntryKind.IN, at, data)


def outgoing_entry(
    message: OutboundMessage, at: float, agent: str | None = None
) -> TranscriptEntry:
    """The entry of a message queued to the user (``agent``: the agent who wrote it)."""
    data: dict[str, Any] = {"ref": message.ref, "mode": message.mode.value}
    if message.text is not None:
        data["text"] = message.text
    if message.media is not None:
        data["media"] = {"url": message.media.url, "mime": message.media.mime_type}
    if message.template is not None:
        data["template"] = {"id": message.template.id, "params": dict(message.template.params)}
    if message.not_before > at:
        data["not_before"] = message.not_before
    if agent is not None:
        data["by"] = f"agent:{agent}"
    elif message.origin is not Origin.REPLY:
        data["by"] = message.origin.value
    return TranscriptEntry(EntryKind.OUT, at, data)


def status_entry(
    ref: str, status: str, at: float, error_code: int | None = None
) -> TranscriptEntry:
    """The entry of a delivery status of the outgoing message ``ref``."""
    data: dict[str, Any] = {"ref": ref, "status": status}
    if error_code is not None:
        data["code"] = error_code
    return TranscriptEntry(EntryKind.STATUS, at, data)


def flow_entry(
    flow: str, at: float, *, source: str | None, dest: str | None, reason: str | None = None
) -> TranscriptEntry:
    """The entry of a flow move: entered (no ``source``), moved, or left (no ``dest``)."""
    data: dict[str, Any] = {"flow": flow, "from": source, "to": dest}
    if reason is not None:
        data["reason"] = reason
    return TranscriptEntry(EntryKind.FLOW, at, data)


def handoff_entry(event: str, at: float, **data: Any) -> TranscriptEntry:
    """The entry of a handoff event (started, claimed, released, timed_out)."""
    return TranscriptEntry(
        EntryKind.HANDOFF, at, {"event": event, **{k: v for k, v in data.items() if v}}
    )
