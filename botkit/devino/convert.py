"""Between the wire and the rest of botkit: provider payloads to events, outbound to payloads.

This is the one place that maps :mod:`botkit.devino.models` onto the
provider-neutral :mod:`botkit.events` and :mod:`botkit.outbound` types.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from botkit._events import (
    AnyMessage,
    Contact,
    ContactsMessage,
    LocationMessage,
    Media,
    MediaMessage,
    StatusUpdate,
    TextMessage,
)
from botkit._outbound import OutboundMessage, SendMode
from botkit.devino.errors import InvalidPhoneNumber
from botkit.devino.models import (
    IncomingMessage,
    OutgoingMessage,
    StatusReport,
)
from botkit.devino.validation import normalize_phone

# A ts above this is in milliseconds (year 5138 in seconds): the page only says "UNIX time".
_MS_THRESHOLD = 100_000_000_000


def unix_seconds(ts: int | None, fallback: float) -> float:
    """The provider's ``ts`` as unix seconds (milliseconds tolerated), else ``fallback``."""
    if not ts or ts < 0:
        return fallback
    return ts / 1000.0 if ts > _MS_THRESHOLD else float(ts)


def user_id(sender: str) -> str:
    """The user's id: the normalised number, or the raw sender when it is not a number."""
    try:
        return normalize_phone(sender)
    except InvalidPhoneNumber:
        # Never drop a message over an odd sender; keep it usable as a key.
        return "".join(ch for ch in sender.strip() if ch not in "{}") or "unknown"


def to_event(
    message: IncomingMessage, now: float, raw: Mapping[str, Any] | None = None
) -> AnyMessage:
    """The event a handler receives for an incoming message.

    ``raw`` is the payload exactly as the provider posted it (the parsed
    model's own rendering when not given).

    Media wins over location, which wins over contacts, which win over text
    (a media message's text is its caption).
    """
    raw = MappingProxyType(dict(raw) if raw is not None else message.to_wire())
    common: dict[str, Any] = {
        "id": message.incoming_message_id,
        "user": user_id(message.sender),
        "to": message.to,
        "profile_name": message.profile_name,
        "timestamp": unix_seconds(message.ts, now),
        "raw": raw,
    }
    if message.content_url:
        media = Media(
            message.content_url,
            message.content_type or "application/octet-stream",
            message.content_name,
        )
        return MediaMessage(media=media, caption=message.text, **common)
    geo = message.geo_location
    if geo is not None:
        return LocationMessage(
            latitude=geo.latitude,
            longitude=geo.longitude,
            address=geo.address,
            name=geo.address_name,
            url=geo.address_url,
            **common,
        )
    if message.contacts:
        return ContactsMessage(contacts=tuple(_contact(c) for c in message.contacts), **common)
    return TextMessage(text=message.text or "", **common)


def _contact(contact: Any) -> Contact:
    names = contact.contact_name or []
    name = names[0] if names else None
    formatted = None
    if name is not None:
        formatted = (
            name.formatted_name
            or " ".join(p for p in (name.first_name, name.last_name) if p)
            or None
        )
    company = (contact.contact_company or [None])[0]
    return Contact(
        name=formatted,
        phones=tuple(p.phone or p.wa_id for p in contact.phones or [] if p.phone or p.wa_id),
        emails=tuple(e.email for e in contact.emails or [] if e.email),
        first_name=name.first_name if name else None,
        last_name=name.last_name if name else None,
        company=company.company if company else None,
        birthday=contact.birthday,
        raw=MappingProxyType(contact.to_wire()),
    )


def status_name(report: StatusReport) -> str:
    """The status in lower case (``vp_expired`` becomes ``expired``)."""
    known = report.known_status
    if known is not None:
        return known.value
    return str(report.status).strip().lower()


def to_status(
    report: StatusReport, *, user: str | None, reference: str | None, now: float
) -> StatusUpdate:
    """The event a status handler receives."""
    code = report.error_code
    return StatusUpdate(
        message_id=report.message_id,
        status=status_name(report),
        error_code=code if isinstance(code, int) and code != 0 else None,
        user=user,
        reference=reference,
        timestamp=unix_seconds(report.ts, now),
        raw=MappingProxyType(report.to_wire()),
    )


def to_outgoing(
    message: OutboundMessage,
    *,
    sender: str,
    callback_url: str | None = None,
    callback_data: str | None = None,
) -> OutgoingMessage:
    """The provider payload for an outbound message."""
    fields: dict[str, Any] = {
        "sender": sender,
        "to": message.user,
        "callback_url": callback_url,
        "callback_data": callback_data if callback_url else None,
    }
    if message.mode is SendMode.TEMPLATE and message.template is not None:
        template = message.template
        fields["template_id"] = template.id
        fields["template_params"] = dict(template.params) or None
        fields["language_code"] = template.language
        fields["validity"] = template.validity
    else:
        fields["text"] = message.text
        if message.media is not None:
            fields["content_url"] = message.media.url
            fields["content_type"] = message.media.mime_type
            fields["content_name"] = message.media.name
    return OutgoingMessage(**fields)
