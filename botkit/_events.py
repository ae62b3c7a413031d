"""What handlers receive: incoming messages and delivery statuses.

These types are provider-neutral and immutable. ``botkit.devino`` turns the
provider's payloads into them; nothing here knows the wire format.

A message is exactly one of :class:`TextMessage`, :class:`MediaMessage`,
:class:`ContactsMessage` or :class:`LocationMessage`; a delivery status
callback is a :class:`StatusUpdate`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from botkit._json import compact_json

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def masked(number: str) -> str:
    """A phone number as logs and messages show it: its last four digits (``...4567``).

    Phone numbers are personal data; exceptions keep the full number as an
    attribute and show only this.
    """
    tail = "".join(ch for ch in str(number) if ch.isdigit())[-4:]
    return f"...{tail}" if tail else "..."


def _empty() -> Mapping[str, Any]:
    return _EMPTY


class EventKind(StrEnum):
    """The kinds of event a handler can be registered for."""

    TEXT = "text"
    MEDIA = "media"
    CONTACTS = "contacts"
    LOCATION = "location"
    STATUS = "status"
    TIMER = "timer"
    HANDOFF = "handoff"


MESSAGE_KINDS: tuple[EventKind, ...] = (
    EventKind.TEXT,
    EventKind.MEDIA,
    EventKind.CONTACTS,
    EventKind.LOCATION,
)


class MediaKind(StrEnum):
    """What a media file is, as WhatsApp shows it."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    VOICE = "voice"
    DOCUMENT = "document"
    STICKER = "sticker"


def media_kind_of(mime_type: str | None) -> MediaKind:
    """Derive the media kind from a MIME type.

    ``image/webp`` is a sticker, ``audio/ogg; codecs=opus`` a voice note,
    other ``image/``, ``video/`` and ``audio/`` types are what they say, and
    anything else (PDF, office files, unknown) is a document.
    """
    base, _, params = (mime_type or "").strip().lower().partition(";")
    base = base.strip()
    if base == "image/webp":
        return MediaKind.STICKER
    if base.startswith("image/"):
        return MediaKind.IMAGE
    if base.startswith("video/"):
        return MediaKind.VIDEO
    if base == "audio/ogg" and "opus" in params:
        return MediaKind.VOICE
    if base.startswith("audio/"):
        return MediaKind.AUDIO
    return MediaKind.DOCUMENT


@dataclass(frozen=True, slots=True)
class Media:
    """A media file: received in a :class:`MediaMessage`, or sent with ``ctx.reply(media=...)``.

    ``Media("https://example.com/menu.pdf", "application/pdf", name="menu.pdf")``
    """

    url: str
    mime_type: str
    name: str | None = None

    @property
    def kind(self) -> MediaKind:
        """The media kind derived from the MIME type."""
        return media_kind_of(self.mime_type)


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact card a user shared."""

    name: str | None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    birthday: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """An incoming message. Use one of the subclasses; ``kind`` says which.

    ``user`` is the sender's number in international format, digits only;
    ``timestamp`` is unix seconds (the provider's when it gave one).
    """

    kind: ClassVar[EventKind]

    id: str
    user: str
    to: str = ""
    profile_name: str | None = None
    timestamp: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessage(Message):
    """A text message."""

    kind: ClassVar[EventKind] = EventKind.TEXT
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaMessage(Message):
    """An image, video, audio, voice note, document or sticker, with an optional caption."""

    kind: ClassVar[EventKind] = EventKind.MEDIA
    media: Media
    caption: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactsMessage(Message):
    """One or more contact cards."""

    kind: ClassVar[EventKind] = EventKind.CONTACTS
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationMessage(Message):
    """A shared location."""

    kind: ClassVar[EventKind] = EventKind.LOCATION
    latitude: float | None = None
    longitude: float | None = None
    address: str | None = None
    name: str | None = None
    url: str | None = None


class DeliveryStatus(StrEnum):
    """Known delivery statuses, in lower case; unknown ones are kept as plain strings.

    The one status enum: the provider's upper-case names parse into it
    (:meth:`parse`, case-insensitive; ``VP_EXPIRED`` is :attr:`EXPIRED`) and
    :attr:`wire` gives them back.
    """

    ENQUEUED = "enqueued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    VISITED = "visited"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @classmethod
    def parse(cls, name: str) -> DeliveryStatus | None:
        """The status called ``name`` in any case, or None when it is not known.

        >>> DeliveryStatus.parse("VP_EXPIRED")
        <DeliveryStatus.EXPIRED: 'expired'>
        """
        key = name.strip().lower()
        if key == "vp_expired":
            return cls.EXPIRED
        try:
            return cls(key)
        except ValueError:
            return None

    @property
    def wire(self) -> str:
        """The provider's name for it: upper case, ``VP_EXPIRED`` for :attr:`EXPIRED`."""
        return "VP_EXPIRED" if self is DeliveryStatus.EXPIRED else self.value.upper()

    @property
    def is_final(self) -> bool:
        """True when no later status can follow (the message failed or was read)."""
        return _STATUS_RANK[self] >= 3

    @property
    def rank(self) -> int:
        """Progress order: a status only moves forward to a higher rank.

        ENQUEUED < SENT < DELIVERED < READ/VISITED; the failures rank above
        all of them since they are final.
        """
        return _STATUS_RANK[self]


_STATUS_RANK = {
    DeliveryStatus.ENQUEUED: 0,
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.READ: 3,
    DeliveryStatus.VISITED: 3,
    DeliveryStatus.UNDELIVERED: 4,
    DeliveryStatus.FAILED: 4,
    DeliveryStatus.CANCELLED: 4,
    DeliveryStatus.EXPIRED: 4,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """A delivery status for a message the bot sent.

    ``status`` is lower case: one of :class:`DeliveryStatus` when known, the
    provider's own word otherwise. ``user`` is the recipient, known from the
    signed reference the message carried. ``reference`` is botkit's own id of
    the outbound message.
    """

    kind: ClassVar[EventKind] = EventKind.STATUS

    message_id: str
    status: str
    error_code: int | None = None
    user: str | None = None
    reference: str | None = None
    timestamp: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=_empty, compare=False, repr=False)

    @property
    def id(self) -> str:
        """An id that names this status change once: ``<messageId>:<status>``."""
        return f"{self.message_id}:{self.status}"


class Timer:
    """A timer pending for a user: ``ctx.schedule(name, ...)`` made it, ``ctx.timer`` is it firing.

    ``due`` is unix seconds, to the millisecond (:attr:`due_at` as an aware
    UTC datetime); ``data`` is what ``schedule(data=...)`` gave (JSON values,
    kept as JSON: each read of ``data`` is a fresh copy); ``cancel_on_message``
    drops it when the user writes first. A user has at most one timer of a
    name: the name and the due time are the timer's identity (:attr:`id`).
    A timer is immutable; reschedule to change one. Raises TypeError when
    ``data`` is not JSON values.
    """

    __slots__ = ("cancel_on_message", "data_json", "due", "name")

    name: str
    due: float
    cancel_on_message: bool
    data_json: str | None
    """``data`` as compact JSON (None: no data)."""

    def __init__(
        self, name: str, due: float, data: Any = None, cancel_on_message: bool = False
    ) -> None:
        try:
            encoded = None if data is None else compact_json(data)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"timer {name!r}: data must be JSON values ({exc})") from None
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "due", due)
        _set(self, "cancel_on_message", cancel_on_message)
        _set(self, "data_json", encoded)

    @classmethod
    def from_json(
        cls, name: str, due: float, data_json: str | None, cancel_on_message: bool = False
    ) -> Timer:
        """The timer whose ``data`` is the JSON text ``data_json`` (how a store reads one back)."""
        timer = cls.__new__(cls)
        _set = object.__setattr__
        _set(timer, "name", name)
        _set(timer, "due", due)
        _set(timer, "cancel_on_message", cancel_on_message)
        _set(timer, "data_json", data_json)
        return timer

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Timer is immutable (cannot set {name}); schedule it again")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Timer is immutable (cannot delete {name})")

    @property
    def data(self) -> Any:
        """What ``schedule(data=...)`` gave (a fresh copy each time; None: no data)."""
        return None if self.data_json is None else json.loads(self.data_json)

    @property
    def due_at(self) -> datetime:
        """When the timer is due, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.due, UTC)

    @property
    def due_ms(self) -> int:
        """The due time in whole milliseconds (how stores keep it)."""
        return round(self.due * 1000)

    @property
    def id(self) -> str:
        """``<name>@<due in ms>``: names this timer among the user's (scheduling the same
        name at another time makes another id)."""
        return f"{self.name}@{self.due_ms}"

    def _key(self) -> tuple[str, float, str | None, bool]:
        return (self.name, self.due, self.data_json, self.cancel_on_message)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timer):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Timer(name={self.name!r}, due={self.due!r}, data={self.data!r}, "
            f"cancel_on_message={self.cancel_on_message!r})"
        )


def to_millisecond(when: float) -> float:
    """Unix seconds down to the millisecond (the precision of a timer's due time): a
    timer is never due later than asked."""
    return math.floor(when * 1000 + 1e-3) / 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    """A user's timer came due: the event of a timer turn (``@router.timer(name)``)."""

    kind: ClassVar[EventKind] = EventKind.TIMER

    user: str
    timer: Timer

    @property
    def id(self) -> str:
        """The timer's id (:attr:`Timer.id`)."""
        return self.timer.id


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffEnded:
    """A handoff to a person ended: the event of a ``@router.handoff_ended`` turn.

    ``reason`` is ``"released"`` (an agent gave the conversation back) or
    ``"timed_out"`` (no agent wrote for the handoff timeout); ``agent`` is
    who had claimed it (None when nobody had).
    """

    kind: ClassVar[EventKind] = EventKind.HANDOFF

    user: str
    reason: str
    agent: str | None = None
    timestamp: float = 0.0

    @property
    def id(self) -> str:
        """An id for logs: the reason and the time."""
        return f"handoff-ended:{self.reason}:{self.timestamp!r}"


AnyMessage = TextMessage | MediaMessage | ContactsMessage | LocationMessage
Event = AnyMessage | StatusUpdate | TimerFired | HandoffEnded
