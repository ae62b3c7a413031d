"""The provider's rules for outgoing messages, checked locally.

One module, used by both :class:`~botkit.devino.client.DevinoClient` (to reject
a message without a round trip) and the emulator (to answer as the provider
would), so the two always agree on the reason's `key` and `ref`.

Rules taken from the provider's page and the provider notes:

* `to`: after removing ``+``, spaces, dashes, dots and brackets, 7-15 digits
  with no leading 0. Missing → ``must.be.not.null``, more than 15 digits →
  ``length.too.long``, anything else wrong → ``invalid``.
* `from` required; `text` at most 1000 characters; a message needs text,
  content (`contentUrl`) or a template.
* `contentName` 1-100 characters; `contentUrl` and `callbackUrl` http(s) URLs
  with a host; `contentType` one of :data:`MEDIA_TYPES` (parameters such as
  ``codecs=opus`` allowed).
* `languageCode` 2-8 characters (a bound the provider does not publish), of
  the form ``en``, ``en_US``, ``pt-BR``, ``zh_Hant``, ``es_419``.
* `validity` a positive number of days, on template messages only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from botkit._events import MediaKind, masked
from botkit.devino.errors import InvalidPhoneNumber, ReasonKey
from botkit.devino.models import (
    DEFAULT_BATCH_CAP,
    LANGUAGE_CODE_LENGTH,
    MAX_CONTENT_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    PHONE_DIGITS,
    OutgoingMessage,
    Reason,
)

__all__ = [
    "MEDIA_TYPES",
    "InvalidPhoneNumber",
    "MediaKind",
    "MimeRule",
    "batch_reasons",
    "max_bytes",
    "media_kind",
    "normalize_phone",
    "validate_message",
    "with_normalized_phone",
]


@dataclass(frozen=True, slots=True)
class MimeRule:
    """A supported MIME type: its kind and the largest file accepted."""

    kind: MediaKind
    max_bytes: int


_KB = 1024
_MB = 1024 * _KB

#: The largest file accepted per kind. Images and videos take the stricter of
#: the provider's page and WhatsApp's own limits (5 MB, see status 2303);
#: stickers take the animated limit (static ones are limited to 100 KB).
MAX_BYTES: Mapping[MediaKind, int] = MappingProxyType(
    {
        MediaKind.AUDIO: 16 * _MB,
        MediaKind.DOCUMENT: 100 * _MB,
        MediaKind.IMAGE: 5 * _MB,
        MediaKind.VIDEO: 5 * _MB,
        MediaKind.VOICE: 16 * _MB,
        MediaKind.STICKER: 500 * _KB,
    }
)

VOICE_MIME = "audio/ogg; codecs=opus"
"""The content type of a voice note; plain ``audio/ogg`` is audio."""

_KINDS: dict[MediaKind, tuple[str, ...]] = {
    # The page's "audio/acc" and "auidio/ogg" are typos for these.
    MediaKind.AUDIO: ("audio/aac", "audio/mp4", "audio/amr", "audio/mpeg", "audio/ogg"),
    MediaKind.DOCUMENT: (
        "application/pdf",
        "text/plain",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        # The page lists ".sx*": the StarOffice formats.
        "application/vnd.sun.xml.writer",
        "application/vnd.sun.xml.calc",
        "application/vnd.sun.xml.impress",
    ),
    MediaKind.IMAGE: ("image/jpeg", "image/png"),
    MediaKind.VIDEO: ("video/mp4", "video/3gpp"),
    MediaKind.VOICE: (VOICE_MIME,),
    MediaKind.STICKER: ("image/webp",),
}

#: Every content type the provider accepts, keyed by MIME type (lower case,
#: without parameters except the voice note's ``codecs=opus``).
MEDIA_TYPES: Mapping[str, MimeRule] = MappingProxyType(
    {mime: MimeRule(kind, MAX_BYTES[kind]) for kind, mimes in _KINDS.items() for mime in mimes}
)


def media_kind(mime: str) -> MediaKind | None:
    """The kind of content `mime` is, or None when the provider does not accept it.

    Case and spacing do not matter, and parameters are allowed:

    >>> media_kind("Audio/OGG; codecs=opus"), media_kind("audio/ogg"), media_kind("image/gif")
    (<MediaKind.VOICE: 'voice'>, <MediaKind.AUDIO: 'audio'>, None)
    """
    base, _, params = mime.partition(";")
    base = base.strip().lower()
    parameters = {}
    for param in params.split(";"):
        name, _, value = param.partition("=")
        parameters[name.strip().lower()] = value.strip().strip('"').lower()
    if base == "audio/ogg" and parameters.get("codecs") == "opus":
        return MediaKind.VOICE
    media = MEDIA_TYPES.get(base)
    return media.kind if media else None


def max_bytes(kind: str) -> int | None:
    """The largest file accepted for a kind (``"image"``...), or None for an unknown kind."""
    try:
        return MAX_BYTES[MediaKind(kind)]
    except ValueError:
        return None


# ------------------------------------------------------------------ phones

_PHONE_PUNCTUATION = re.compile(r"[\s+\-().]")
_DIGITS = re.compile(r"[0-9]+")
_EXAMPLE = "international format without the trunk 0, e.g. 79034567890 or +49 179 111 22 33"


def _shown(raw: str | None) -> str:
    """What a message shows of a rejected number: its last digits, never all of it."""
    digits = sum(ch.isdigit() for ch in raw or "")
    return f"the number {masked(raw or '')}" if digits >= 5 else repr(raw)


def _phone_problem(raw: str | None) -> tuple[ReasonKey, str] | None:
    digits = _PHONE_PUNCTUATION.sub("", raw or "")
    if not digits:
        return ReasonKey.MUST_BE_NOT_NULL, f"no phone number given: write it in {_EXAMPLE}"
    if not _DIGITS.fullmatch(digits):
        return ReasonKey.INVALID, f"{_shown(raw)} is not a phone number: write it in {_EXAMPLE}"
    shortest, longest = PHONE_DIGITS
    if len(digits) > longest:
        return (
            ReasonKey.LENGTH_TOO_LONG,
            f"{_shown(raw)} has {len(digits)} digits, more than the {longest} a phone number can "
            f"have: write it in {_EXAMPLE}",
        )
    if len(digits) < shortest or digits.startswith("0"):
        return (
            ReasonKey.INVALID,
            f"{_shown(raw)} is not a full international number: write it in {_EXAMPLE}",
        )
    return None


def normalize_phone(raw: str) -> str:
    """A phone number as the provider wants it: digits only, country code first.

    Removes ``+``, spaces, dashes, dots and brackets, then requires 7-15
    digits not starting with 0; raises :class:`InvalidPhoneNumber` otherwise.

    >>> normalize_phone("+7 (903) 456-78-90")
    '79034567890'
    """
    problem = _phone_problem(raw)
    if problem is not None:
        raise InvalidPhoneNumber(problem[1], number=raw)
    return _PHONE_PUNCTUATION.sub("", raw)


def with_normalized_phone(message: OutgoingMessage) -> OutgoingMessage:
    """`message` with `to` reduced to digits; give it a message that passed validation."""
    if message.to is None:
        return message
    to = normalize_phone(message.to)
    return message if to == message.to else message.model_copy(update={"to": to})


# ---------------------------------------------------------------- messages

_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,4})?")


def _is_web_url(url: str) -> bool:
    if not url or any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def validate_message(message: OutgoingMessage, index: int) -> list[Reason]:
    """Why the provider would reject `message` at position `index` of a request.

    Returns the provider's reasons (key and ``messages[index].field`` ref) in a
    fixed order, or an empty list when the message may be sent.

    >>> validate_message(OutgoingMessage(sender="Shop", to="12", text="hi"), 0)
    [Reason(key='invalid', ref='messages[0].to')]
    """
    at = f"messages[{index}]"
    reasons: list[Reason] = []

    def reject(key: ReasonKey, field: str | None) -> None:
        reasons.append(Reason(key=key, ref=f"{at}.{field}" if field else at))

    phone = _phone_problem(message.to)
    if phone is not None:
        reject(phone[0], "to")
    if not (message.sender or "").strip():
        reject(ReasonKey.MUST_BE_NOT_NULL, "from")

    has_text = bool((message.text or "").strip())
    if not (has_text or message.content_url or message.template_id):
        reject(ReasonKey.MUST_BE_NOT_NULL, None)
    if message.text is not None and len(message.text) > MAX_TEXT_LENGTH:
        reject(ReasonKey.LENGTH_TOO_LONG, "text")

    if message.content_url is not None and not _is_web_url(message.content_url):
        reject(ReasonKey.INVALID, "contentUrl")
    if message.content_type is not None and media_kind(message.content_type) is None:
        reject(ReasonKey.INVALID, "contentType")
    if message.content_name is not None:
        if not message.content_name:
            reject(ReasonKey.LENGTH_TOO_SHORT, "contentName")
        elif len(message.content_name) > MAX_CONTENT_NAME_LENGTH:
            reject(ReasonKey.LENGTH_TOO_LONG, "contentName")
    if message.callback_url is not None and not _is_web_url(message.callback_url):
        reject(ReasonKey.INVALID, "callbackUrl")

    if message.language_code is not None:
        shortest, longest = LANGUAGE_CODE_LENGTH
        if len(message.language_code) < shortest:
            reject(ReasonKey.LENGTH_TOO_SHORT, "languageCode")
        elif len(message.language_code) > longest:
            reject(ReasonKey.LENGTH_TOO_LONG, "languageCode")
        elif not _LANGUAGE_CODE.fullmatch(message.language_code):
            reject(ReasonKey.INVALID, "languageCode")

    if message.validity is not None and (message.validity < 1 or not message.is_template):
        reject(ReasonKey.INVALID, "validity")
    return reasons


def batch_reasons(count: int, *, batch_cap: int = DEFAULT_BATCH_CAP) -> list[Reason]:
    """Why the provider would reject a whole request of `count` messages.

    An empty request → ``must.be.not.null messages``; more than `batch_cap`
    messages → ``too.many.messages messages`` (for every message of it).
    """
    if count == 0:
        return [Reason(key=ReasonKey.MUST_BE_NOT_NULL, ref="messages")]
    if count > batch_cap:
        return [Reason(key=ReasonKey.TOO_MANY_MESSAGES, ref="messages")]
    return []
