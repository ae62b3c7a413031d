"""The reply policy: what form a reply takes, or why it cannot be sent.

WhatsApp allows free text and media only within 24 hours of the user's last
message (the session window); outside it only templates. The policy decides
before anything is sent, so no code path sends free text known to fall
outside the window.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from botkit._errors import BotkitError
from botkit._events import Media, masked
from botkit._outbound import Origin, OutboundMessage, SendMode, Template
from botkit.storage.base import Conversation

TEXT_LIMIT = 1000
DAY = 86_400.0
MAX_REPLY_CHARS = 4096
"""The longest text one reply may have by default, before splitting (``BOTKIT_MAX_REPLY_CHARS``)."""


class ReplyTooLong(BotkitError, ValueError):
    """A reply's text is longer than the policy allows; nothing of it was queued.

    Without this bound a runaway reply (a whole file, a loop's output)
    becomes hundreds of provider messages. ``length`` and ``limit`` are in
    characters; ``user`` is the full number.
    """

    reason = "reply_too_long"

    def __init__(self, user: str, length: int, limit: int) -> None:
        super().__init__(
            f"ReplyTooLong: a reply to {masked(user)} is {length} characters, over the limit "
            f"of {limit}; send a shorter text or a document, or raise BOTKIT_MAX_REPLY_CHARS"
        )
        self.user = user
        self.length = length
        self.limit = limit


class DeliveryRefused(BotkitError):
    """A message was refused by the reply policy before anything was sent.

    ``user`` is the full number; the message shows only its last digits.
    """

    reason = "refused"

    def __init__(self, message: str, *, user: str) -> None:
        super().__init__(message)
        self.user = user


class OutsideSessionWindow(DeliveryRefused):
    """Free text or media outside the 24-hour window, and no template to fall back to."""

    reason = "outside_session_window"

    def __init__(self, user: str, last_inbound: float | None) -> None:
        if last_inbound is None:
            since = "has never written to the bot"
        else:
            at = datetime.fromtimestamp(last_inbound, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            since = f"last wrote at {at}"
        super().__init__(
            f"OutsideSessionWindow: user {masked(user)} {since}, so the 24-hour session window is "
            "closed and WhatsApp accepts only templates; pass template=Template(...) "
            "(or set Bot(default_template=...)), or send within 24h of the user's last message",
            user=user,
        )
        self.last_inbound = last_inbound


class OptedOut(DeliveryRefused):
    """The user opted out of messages; nothing is sent to them until they opt back in."""

    reason = "opted_out"

    def __init__(self, user: str) -> None:
        super().__init__(
            f"OptedOut: user {masked(user)} opted out of messages; nothing was sent. "
            "They opt back in by writing START (opt-out plugin) or ctx.opt_in()",
            user=user,
        )


class NotOnWhatsApp(DeliveryRefused):
    """The platform said the number does not use WhatsApp (status 2305)."""

    reason = "not_on_whatsapp"

    def __init__(self, user: str) -> None:
        super().__init__(
            f"NotOnWhatsApp: {masked(user)} does not use WhatsApp (status 2305 earlier); "
            "nothing was sent. The mark clears when the user writes to the bot",
            user=user,
        )


@dataclass(frozen=True, slots=True)
class SessionWindow:
    """The 24-hour customer service window, with a safety margin.

    The margin defaults to 5 minutes of a 24-hour window and scales with
    shorter windows (a 60 s test window keeps a 0.2 s margin), because the
    platform itself warns that replies near the edge can still fail.
    """

    length: float = DAY
    margin: float | None = None

    @property
    def safety_margin(self) -> float:
        """The margin in seconds."""
        if self.margin is not None:
            return self.margin
        return 300.0 * self.length / DAY

    def closes_at(self, last_inbound: float | None) -> float | None:
        """When free text stops being allowed (margin included), or None if never opened."""
        if last_inbound is None:
            return None
        return last_inbound + self.length - self.safety_margin

    def is_open(self, last_inbound: float | None, now: float) -> bool:
        """True when free text may be sent at ``now``."""
        closes = self.closes_at(last_inbound)
        return closes is not None and now < closes


@dataclass(frozen=True, slots=True)
class ReplyPolicy:
    """Turns ``reply(text=..., media=..., template=...)`` into outbound messages.

    Inside the window text and media go as they are, with the template (or
    the bot's ``default_template``) kept as the fallback for a late 2312.
    Outside it the template goes instead; with none the reply is refused with
    :class:`OutsideSessionWindow`. Text over 1,000 characters is split on
    paragraph, sentence or word boundaries when ``split_long_text`` is on;
    text over ``max_text`` characters is refused first (:class:`ReplyTooLong`).
    """

    window: SessionWindow = SessionWindow()
    default_template: Template | None = None
    split_long_text: bool = True
    max_text: int = MAX_REPLY_CHARS

    def plan(
        self,
        conversation: Conversation,
        now: float,
        *,
        text: str | None = None,
        media: Media | None = None,
        template: Template | None = None,
        origin: Origin = Origin.REPLY,
        split: bool | None = None,
    ) -> list[OutboundMessage]:
        """Decide the messages to queue, or raise a :class:`DeliveryRefused`."""
        user = conversation.user
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        if media is not None and not isinstance(media, Media):
            raise TypeError("media must be botkit.Media(url, mime_type, name=None)")
        if template is not None and not isinstance(template, Template):
            raise TypeError("template must be botkit.Template(id, params, language)")
        if text is not None and not text.strip():
            text = None  # blank text is no text: nothing to split, nothing to send
        if not text and media is None and template is None:
            raise ValueError("nothing to send: pass text=..., media=... or template=...")
        if text is not None and len(text) > self.max_text:
            raise ReplyTooLong(user, len(text), self.max_text)
        if conversation.opted_out:
            raise OptedOut(user)
        if conversation.not_on_whatsapp:
            raise NotOnWhatsApp(user)
        fallback = template or self.default_template

        def message(mode: SendMode, **content: object) -> OutboundMessage:
            return OutboundMessage(
                user=user,
                mode=mode,
                origin=origin,
                created_at=now,
                **content,  # type: ignore[arg-type]
            )

        if not text and media is None:
            return [message(SendMode.TEMPLATE, template=template)]
        if not self.window.is_open(conversation.last_inbound, now):
            if fallback is None:
                raise OutsideSessionWindow(user, conversation.last_inbound)
            return [message(SendMode.TEMPLATE, template=fallback)]
        do_split = self.split_long_text if split is None else split
        chunks = split_text(text) if text and do_split else ([text] if text else [])
        if not do_split and text and len(text) > TEXT_LIMIT:
            raise ValueError(
                f"text is {len(text)} characters and WhatsApp takes at most {TEXT_LIMIT}; "
                "shorten it or let botkit split it (split=True)"
            )
        messages: list[OutboundMessage] = []
        if media is not None:
            caption = chunks.pop(0) if len(chunks) == 1 else None
            messages.append(message(SendMode.MEDIA, media=media, text=caption))
        messages.extend(message(SendMode.TEXT, text=chunk) for chunk in chunks)
        # One reply falls back as one template: only its first part carries it.
        if fallback is not None:
            messages[0] = dataclasses.replace(messages[0], fallback=fallback)
        return messages


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, in order.

    It cuts between paragraphs when it can, else between sentences, else
    between words, and only as a last resort inside a word.
    """
    if len(text) <= limit:
        return [text]
    pieces = _pack(text.split("\n\n"), "\n\n", limit, _split_paragraph)
    return [p for p in pieces if p.strip()]


def _split_paragraph(paragraph: str, limit: int) -> list[str]:
    return _pack(_SENTENCE_END.split(paragraph), " ", limit, _split_sentence)


def _split_sentence(sentence: str, limit: int) -> list[str]:
    return _pack(sentence.split(" "), " ", limit, _split_word)


def _split_word(word: str, limit: int) -> list[str]:
    return [word[i : i + limit] for i in range(0, len(word), limit)]


def _pack(
    parts: list[str], joiner: str, limit: int, finer: Callable[[str, int], list[str]]
) -> list[str]:
    """Join consecutive parts while they fit; split a part that alone is too long."""
    out: list[str] = []
    current = ""
    for part in parts:
        pieces = [part] if len(part) <= limit else finer(part, limit)
        for piece in pieces:
            candidate = f"{current}{joiner}{piece}" if current else piece
            if len(candidate) <= limit:
                current = candidate
            else:
                if current:
                    out.append(current)
                current = piece
    if current:
        out.append(current)
    return out
