"""What the bot sends: templates and the outbound messages that wait in the outbox.

An :class:`OutboundMessage` is a reply or proactive send after the reply
policy decided its form (free text, media or template). It is what the
conversation store appends to the outbox when a turn commits and what the
sender turns into a provider request.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from botkit._events import Media
from botkit._json import compact_json


def _positional(params: Mapping[str, Any] | Sequence[Any] | None) -> Mapping[str, str]:
    if params is None:
        return MappingProxyType({})
    if isinstance(params, Mapping):
        return MappingProxyType({str(k): str(v) for k, v in params.items()})
    if isinstance(params, str | bytes):
        raise TypeError(
            "template params are a list or a mapping of position to value, not a string"
        )
    return MappingProxyType({str(i): str(v) for i, v in enumerate(params, start=1)})


@dataclass(frozen=True, slots=True, init=False)
class Template:
    """A pre-approved WhatsApp template, the only thing allowed outside the 24-hour window.

    Parameters fill the template by position; give a list (positions 1, 2, ...)
    or a mapping of position to value::

        Template("order_ready", ["Margherita", "#42"], language="en")
        Template("order_ready", {"1": "Margherita", "2": "#42"})

    ``validity`` is the message lifetime in days (templates only).
    """

    id: str
    params: Mapping[str, str]
    language: str | None
    validity: int | None

    def __init__(
        self,
        id: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        language: str | None = None,
        validity: int | None = None,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise ValueError("a Template needs the template id the provider knows it by")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "params", _positional(params))
        object.__setattr__(self, "language", language)
        object.__setattr__(self, "validity", validity)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "id": self.id,
            "params": dict(self.params),
            "language": self.language,
            "validity": self.validity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        """Rebuild a template from :meth:`to_dict`'s form."""
        return cls(data["id"], data.get("params"), data.get("language"), data.get("validity"))


class SendMode(StrEnum):
    """The form a message goes out in."""

    TEXT = "text"
    MEDIA = "media"
    TEMPLATE = "template"


class Origin(StrEnum):
    """Why a message is in the outbox."""

    REPLY = "reply"
    SEND = "send"
    FALLBACK = "fallback"
    RETRY = "retry"
    AGENT = "agent"
    CAMPAIGN = "campaign"


class _Refs:
    """Unique, unpredictable references without a system call each.

    Each is a keyed hash (BLAKE2b, 128 bits) of a per-process count, under
    a random per-process key: unique (distinct counts, a fresh key per
    process) and, without the key, not guessable from the ones seen. 32 hex
    digits, like a UUID's. A forked child draws a new key.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.key = secrets.token_bytes(32)
        self.count = itertools.count()

    def next(self) -> str:
        n = next(self.count).to_bytes(8, "big")
        return hashlib.blake2b(n, key=self.key, digest_size=16).hexdigest()


_refs = _Refs()
os.register_at_fork(after_in_child=_refs.reseed)


def new_ref() -> str:
    """A fresh botkit message reference (32 hex digits, unique across processes, unpredictable)."""
    return _refs.next()


def campaign_ref(campaign_id: str, phone: str, attempt: int = 0) -> str:
    """The message reference of a campaign's message to ``phone`` (its idempotency key).

    The same for every sender that takes the recipient, so a receipt (a
    status callback naming it) settles it whoever sent it. A retry (a 2301)
    or a template fallback (a 2312) is ``attempt`` 1, 2, ...
    """
    digest = hashlib.blake2b(phone.encode(), digest_size=6, person=b"botkit-camp").hexdigest()
    return f"c-{campaign_id}-{digest}" + (f"-{attempt}" if attempt else "")


def campaign_of(ref: str | None) -> str | None:
    """The campaign id of a campaign message reference, or None for any other."""
    if not ref or not ref.startswith("c-"):
        return None
    parts = ref.split("-")
    return parts[1] if len(parts) >= 3 and parts[1] else None


def next_ref(ref: str, attempt: int) -> str | None:
    """A campaign reference for the message's ``attempt``; None when ``ref`` is not one."""
    if campaign_of(ref) is None:
        return None
    return "-".join(ref.split("-")[:3]) + f"-{attempt}"


def _next_ref(ref: str, attempt: int) -> str:
    """The reference of a message's next attempt: a campaign's keeps its campaign."""
    return next_ref(ref, attempt) or new_ref()


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundMessage:
    """One message on its way to a user, in the form the reply policy chose.

    ``ref`` is botkit's own id for it; the provider's ``messageId`` is known
    only once it is sent. ``fallback`` is the template to resend it as if the
    platform still answers 2312 (outside the session window).
    """

    user: str
    mode: SendMode
    text: str | None = None
    media: Media | None = None
    template: Template | None = None
    fallback: Template | None = None
    ref: str = field(default_factory=new_ref)
    origin: Origin = Origin.REPLY
    attempt: int = 0
    created_at: float = 0.0
    not_before: float = 0.0

    def retried(self, not_before: float) -> OutboundMessage:
        """The same message for another attempt at ``not_before``, under a new reference."""
        return replace(
            self,
            ref=_next_ref(self.ref, self.attempt + 1),
            origin=Origin.RETRY,
            attempt=self.attempt + 1,
            not_before=not_before,
        )

    def as_template(self, template: Template) -> OutboundMessage:
        """This message resent as ``template`` (after a 2312)."""
        return replace(
            self,
            mode=SendMode.TEMPLATE,
            text=None,
            media=None,
            template=template,
            fallback=None,
            ref=_next_ref(self.ref, self.attempt + 1),
            origin=Origin.FALLBACK,
            attempt=self.attempt + 1,
            not_before=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (what the outbox stores)."""
        out: dict[str, Any] = {
            "ref": self.ref,
            "user": self.user,
            "mode": self.mode.value,
            "origin": self.origin.value,
            "attempt": self.attempt,
            "created_at": self.created_at,
        }
        if self.not_before:
            out["not_before"] = self.not_before
        if self.text is not None:
            out["text"] = self.text
        if self.media is not None:
            out["media"] = {
                "url": self.media.url,
                "mime_type": self.media.mime_type,
                "name": self.media.name,
            }
        if self.template is not None:
            out["template"] = self.template.to_dict()
        if self.fallback is not None:
            out["fallback"] = self.fallback.to_dict()
        return out

    def to_json(self) -> str:
        """Serialise for the outbox."""
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutboundMessage:
        """Rebuild from :meth:`to_dict`'s form."""
        media = data.get("media")
        template = data.get("template")
        fallback = data.get("fallback")
        return cls(
            ref=data["ref"],
            user=data["user"],
            mode=SendMode(data["mode"]),
            origin=Origin(data.get("origin", Origin.REPLY.value)),
            attempt=int(data.get("attempt", 0)),
            created_at=float(data.get("created_at", 0.0)),
            not_before=float(data.get("not_before", 0.0)),
            text=data.get("text"),
            media=Media(media["url"], media["mime_type"], media.get("name")) if media else None,
            template=Template.from_dict(template) if template else None,
            fallback=Template.from_dict(fallback) if fallback else None,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> OutboundMessage:
        """Rebuild from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(raw))


@dataclass(frozen=True, slots=True, kw_only=True)
class SentRecord:
    """A message the provider accepted, kept (7 days by default) by its ``messageId``.

    Status callbacks find the message, its user and its fallback template here.
    ``resent`` is True once a status callback queued the message again (its
    fallback template after a 2312, a retry after a 2301): never twice.
    """

    message_id: str
    message: OutboundMessage
    sent_at: float
    status: str = "accepted"
    resent: bool = False

    @property
    def user(self) -> str:
        """The recipient."""
        return self.message.user

    def to_json(self) -> str:
        """Serialise for the store."""
        return compact_json(
            {
                "message_id": self.message_id,
                "message": self.message.to_dict(),
                "sent_at": self.sent_at,
                "status": self.status,
                **({"resent": True} if self.resent else {}),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> SentRecord:
        """Rebuild from :meth:`to_json`'s output."""
        data = json.loads(raw)
        return cls(
            message_id=data["message_id"],
            message=OutboundMessage.from_dict(data["message"]),
            sent_at=float(data["sent_at"]),
            status=data.get("status", "accepted"),
            resent=bool(data.get("resent", False)),
        )
