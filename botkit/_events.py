"""What handlers receive: incoming messages and delivery statuses.

These types are provider-neutral and immutable. ``botkit.devino`` turns the
provider's payloads into them; nothing here knows the wire format.

A message is exactly one of :class:`TextMessage`, :class:`MediaMessage`,
:class:`ContactsMessage` or :class:`LocationMessage`; a delivery status
callback is a :class:`StatusUpdate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

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


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer pending for a user: ``ctx.schedule(name, ...)`` made it, ``ctx.timer`` is it firing.

    ``due`` is unix seconds (:attr:`due_at` as an aware UTC datetime);
    ``data`` is what ``schedule(data=...)`` gave (JSON values); ``id`` names
    this one scheduling (scheduling the same name again makes a new id);
    ``cancel_on_message`` drops it when the user writes first.
    """

    name: str
    due: float
    data: Any = None
    id: str = ""
    cancel_on_message: bool = False

    @property
    def due_at(self) -> datetime:
        """When the timer is due, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.due, UTC)

    def stored(self) -> list[Any]:
        """The compact form a store keeps under the timer's name: ``[due, id, data?, 1?]``."""
        out: list[Any] = [self.due, self.id]
        if self.data is not None or self.cancel_on_message:
            out.append(self.data)
        if self.cancel_on_message:
            out.append(1)
        return out

    @classmethod
    def from_stored(cls, name: str, stored: list[Any]) -> Timer:
        """The timer from :meth:`stored`'s form."""
        data = stored[2] if len(stored) > 2 else None
        return cls(
            name, float(stored[0]), data, str(stored[1]), len(stored) > 3 and bool(stored[3])
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    """A user's timer came due: the event of a timer turn (``@router.timer(name)``)."""

    kind: ClassVar[EventKind] = EventKind.TIMER

    user: str
    timer: Timer

    @property
    def id(self) -> str:
        """The timer's id: one scheduling fires once."""
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
