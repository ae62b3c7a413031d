"""The test kit for bot authors: talk to a bot in-process, with a clock you control.

::

    from botkit.testing import BotTester
    from mybot import bot

    async def test_greets():
        async with BotTester(bot) as chat:
            replies = await chat.send_text("hi")
            assert replies.texts == ["Hello!"]
            assert await chat.state() is None
            chat.advance(hours=25)  # the 24-hour window is now closed

Each ``send_*`` runs one full turn (the same code the web service runs) with
the memory store, and returns the replies that turn committed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from botkit.bot import Bot
from botkit.clock import ManualClock
from botkit.events import (
    Contact,
    ContactsMessage,
    LocationMessage,
    AnyMessage,
    Media,
    MediaMessage,
    StatusUpdate,
    TextMessage,
)
from botkit.outbound import OutboundMessage, SendMode, Template
from botkit.runtime import Runtime, TurnOutcome
from botkit.storage.base import Conversation, StoreConfig
from botkit.storage.memory import MemoryStore

DEFAULT_USER = "79990000001"


class Replies(list[OutboundMessage]):
    """The messages one turn queued, in order, with shortcuts for assertions."""

    @property
    def texts(self) -> list[str]:
        """The text of each text or media message (templates excluded)."""
        return [m.text for m in self if m.text is not None]

    @property
    def text(self) -> str:
        """All texts joined by newlines (handy for ``"size" in replies.text``)."""
        return "\n".join(self.texts)

    @property
    def templates(self) -> list[Template]:
        """The templates sent."""
        return [m.template for m in self if m.mode is SendMode.TEMPLATE and m.template]


class BotTester:
    """Drives a bot turn by turn, as the given user, on the memory store and a manual clock.

    ``user`` is the default sender; every ``send_*`` takes ``user=`` too.
    The clock is frozen: it moves only with :meth:`advance`. With
    ``raise_errors`` (the default) an exception no error handler took is
    re-raised from ``send_*``, so a failing handler fails the test.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        user: str = DEFAULT_USER,
        clock: ManualClock | None = None,
        plugins: Sequence[str] = (),
        store_config: StoreConfig | None = None,
        raise_errors: bool = True,
    ) -> None:
        self.bot = bot
        self.user = user
        self.clock = clock or ManualClock(frozen=True)
        self.store = MemoryStore(store_config, clock=self.clock)
        self.runtime = Runtime(bot, self.store, clock=self.clock, plugins=plugins)
        self.last: TurnOutcome | None = None
        self.raise_errors = raise_errors
        self._ids = itertools.count(1)
        self._started = False
        self._proactive: list[OutboundMessage] = []

    async def __aenter__(self) -> BotTester:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the bot (start-up hooks run); ``send_*`` does it for you if needed."""
        if not self._started:
            await self.runtime.start()
            self._started = True

    async def stop(self) -> None:
        """Stop the bot (shutdown hooks run)."""
        if self._started:
            await self.runtime.stop()
            self._started = False

    # -- talking -------------------------------------------------------------

    async def send(self, message: AnyMessage) -> Replies:
        """Run the turn of a ready-made message and return its replies."""
        await self.start()
        self.last = await self.runtime.handle_message(message)
        await self._drain()
        if self.last.error is not None and not self.last.error_handled and self.raise_errors:
            raise self.last.error
        return Replies(self.last.replies)

    async def send_text(self, text: str, *, user: str | None = None, **fields: Any) -> Replies:
        """Send a text message as ``user``."""
        return await self.send(TextMessage(text=text, **self._common(user, fields)))

    async def send_media(
        self,
        url: str,
        mime_type: str,
        *,
        name: str | None = None,
        caption: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> Replies:
        """Send a media message (image, document, ...) as ``user``."""
        media = Media(url, mime_type, name)
        return await self.send(
            MediaMessage(media=media, caption=caption, **self._common(user, fields))
        )

    async def send_contacts(
        self,
        *contacts: Contact | tuple[str, str],
        user: str | None = None,
        **fields: Any,
    ) -> Replies:
        """Send contact cards: ``Contact(...)`` objects or ``(name, phone)`` pairs."""
        cards = tuple(
            c if isinstance(c, Contact) else Contact(name=c[0], phones=(c[1],)) for c in contacts
        )
        return await self.send(ContactsMessage(contacts=cards, **self._common(user, fields)))

    async def send_location(
        self,
        latitude: float,
        longitude: float,
        *,
        address: str | None = None,
        name: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> Replies:
        """Send a location as ``user``."""
        return await self.send(
            LocationMessage(
                latitude=latitude,
                longitude=longitude,
                address=address,
                name=name,
                **self._common(user, fields),
            )
        )

    async def send_status(
        self,
        reply: OutboundMessage,
        status: str,
        *,
        error_code: int | None = None,
        message_id: str | None = None,
    ) -> TurnOutcome:
        """Deliver a status callback for one of the bot's replies (runs the status handlers)."""
        await self.start()
        update = StatusUpdate(
            message_id=message_id or reply.ref,
            status=status.lower(),
            error_code=error_code,
            user=reply.user,
            reference=reply.ref,
            timestamp=self.clock.now(),
        )
        self.last = await self.runtime.handle_status(update)
        await self._drain()
        return self.last

    # -- inspecting ----------------------------------------------------------

    async def conversation(self, user: str | None = None) -> Conversation:
        """The stored conversation record of ``user``."""
        return await self.store.load(user or self.user)

    async def state(self, user: str | None = None) -> str | None:
        """The user's stored flow state, ``"flow:state"``, or None."""
        return (await self.conversation(user)).state

    async def data(self, user: str | None = None) -> dict[str, Any]:
        """The user's stored ``ctx.data``."""
        return (await self.conversation(user)).data

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0) -> None:
        """Move the clock forward (flow timeouts, the 24-hour window)."""
        self.clock.advance(seconds, minutes=minutes, hours=hours)

    async def sent(self) -> Replies:
        """Messages queued outside turns (``bot.send``) since the last call."""
        out = Replies(self._proactive)
        self._proactive.clear()
        return out

    # -- internals -----------------------------------------------------------

    def _common(self, user: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": str(next(self._ids)),
            "user": user or self.user,
            "timestamp": self.clock.now(),
        }
        base.update(fields)
        return base

    async def _drain(self) -> None:
        """Empty the outbox (no sender runs here); keep what turns did not return."""
        turn_refs = {m.ref for m in (self.last.replies if self.last else ())}
        while True:
            items = await self.store.outbox_read("tester", 1000, 0)
            if not items:
                break
            await self.store.outbox_ack([i.id for i in items])
            self._proactive.extend(i.message for i in items if i.message.ref not in turn_refs)


def transcript(replies: Iterable[OutboundMessage]) -> str:
    """A readable rendering of replies, one per line, for failure messages."""
    lines = []
    for m in replies:
        if m.mode is SendMode.TEMPLATE and m.template is not None:
            lines.append(f"[template {m.template.id} {dict(m.template.params)}]")
        elif m.mode is SendMode.MEDIA and m.media is not None:
            lines.append(f"[{m.media.kind.value} {m.media.url}] {m.text or ''}".rstrip())
        else:
            lines.append(m.text or "")
    return "\n".join(lines)
