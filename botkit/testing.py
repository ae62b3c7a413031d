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
import os
from collections.abc import Generator, Iterable, Sequence
from types import TracebackType
from typing import Any

from botkit._bot import Bot
from botkit._clock import ManualClock
from botkit._events import (
    AnyMessage,
    Contact,
    ContactsMessage,
    EventKind,
    LocationMessage,
    Media,
    MediaMessage,
    StatusUpdate,
    TextMessage,
    Timer,
)
from botkit._media import MediaPolicy
from botkit._outbound import OutboundMessage, SendMode, Template
from botkit._runtime import Runtime
from botkit._turn import TurnOutcome
from botkit.delivery._timers import fire_due_timers
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
    ``plugins`` are enabled beside the bot's own and those in ``BOTKIT_PLUGINS``.
    ``media`` guards ``ctx.download_media``; by default it is
    :meth:`MediaPolicy.for_development`, which also fetches from this
    machine, so a test can serve its files locally.
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
        media: MediaPolicy | None = None,
    ) -> None:
        self.bot = bot
        self.user = user
        self.clock = clock or ManualClock(frozen=True)
        self.store = MemoryStore(store_config, clock=self.clock)
        # As the service does: plugins named in BOTKIT_PLUGINS are enabled too.
        from_env = os.environ.get("BOTKIT_PLUGINS", "").split(",")
        self.runtime = Runtime(
            bot,
            self.store,
            clock=self.clock,
            plugins=[*plugins, *from_env],
            media=media or MediaPolicy.for_development(),
        )
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

    def advance(
        self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0
    ) -> Advanced:
        """Move the clock forward (flow timeouts, the 24-hour window, timers).

        The clock moves at once. Await the result to run the timers that came
        due, as the service's timer worker would, and get what they sent::

            sent = await chat.advance(minutes=30)
            assert sent.text == "Your unfinished order was dropped ..."

        Not awaited, due timers wait: a message sent next finds a flow whose
        timeout passed ended all the same (``on_timeout`` runs first in its turn).
        """
        self.clock.advance(seconds, minutes=minutes, hours=hours)
        return Advanced(self)

    async def fire_timers(self) -> Replies:
        """Run the timers due by the clock now; return what their turns replied."""
        await self.start()
        replies: list[OutboundMessage] = []
        outcomes: list[TurnOutcome] = []

        def keep(outcome: TurnOutcome) -> None:
            if outcome.kind is EventKind.TIMER:
                outcomes.append(outcome)
                replies.extend(outcome.replies)

        self.runtime.on_turn.append(keep)
        try:
            await fire_due_timers(self.runtime)
        finally:
            self.runtime.on_turn.remove(keep)
        if outcomes:
            self.last = outcomes[-1]
        await self._drain()
        mine = {m.ref for m in replies}
        self._proactive[:] = [m for m in self._proactive if m.ref not in mine]
        for outcome in outcomes:
            if outcome.error is not None and not outcome.error_handled and self.raise_errors:
                raise outcome.error
        return Replies(replies)

    async def timers(self, user: str | None = None) -> dict[str, Timer]:
        """The user's pending timers by name (botkit's own, such as a flow's timeout, too)."""
        return dict((await self.conversation(user)).timers)

    async def sent(self) -> Replies:
        """Messages queued outside turns (``bot.send``) since the last call."""
        await self._drain()  # sends made since the last turn are still in the outbox
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
            await self.store.outbox_ack([i.id for i in items], answered=items)
            self._proactive.extend(i.message for i in items if i.message.ref not in turn_refs)


class Advanced:
    """What :meth:`BotTester.advance` returns: await it to fire the timers that came due."""

    __slots__ = ("_tester",)

    def __init__(self, tester: BotTester) -> None:
        self._tester = tester

    def __await__(self) -> Generator[Any, None, Replies]:
        return self._tester.fire_timers().__await__()


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


class LiveBot:
    """A bot served for real: the web service under uvicorn, talking to the provider emulator.

    For end-to-end tests: messages go in through the real webhook, replies
    come out at the emulator, status callbacks come back over HTTP::

        async with LiveBot(bot) as live:
            await live.say("79031234567", "hi")
            [reply] = await live.replies(1)
            assert reply.message.text == "echo #1: hi"

    The bot and the emulator share ``clock`` (a running :class:`ManualClock`),
    so ``live.clock.advance(hours=25)`` closes the 24-hour window for both.
    ``store`` defaults to the memory store; ``settings`` fields can be
    overridden with ``**settings`` (e.g. ``api_token="t"``).
    """

    def __init__(
        self,
        bot: Bot,
        *,
        store: Any = None,
        clock: ManualClock | None = None,
        emulator: Any = None,
        sender_config: Any = None,
        client: Any = None,
        rate_retry: Any = None,
        **settings: Any,
    ) -> None:
        from botkit.devtools.emulator import Emulator

        self.bot = bot
        self.clock = clock or ManualClock()
        self.emulator = emulator or Emulator(api_key="live-test", clock=self.clock.now)
        self._store = store
        self._sender_config = sender_config
        self._client = client
        self._rate_retry = rate_retry
        self._settings = settings
        self._stack: Any = None
        self.url = ""
        self.token = settings.get("webhook_token") or "live-test-token-0123456789"
        self.app: Any = None

    async def __aenter__(self) -> LiveBot:
        import contextlib

        from botkit.devtools._server import free_port
        from botkit.service._app import create_app
        from botkit.service._serving import serve_app
        from botkit.service._settings import load_settings

        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            emulator_url = await stack.enter_async_context(self.emulator.serve())
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            fields: dict[str, Any] = {
                "devino_url": emulator_url,
                "devino_api_key": "live-test",
                "webhook_token": self.token,
                "public_url": self.url,
                "sender": self.bot.sender or "botkit-test",
                **self._settings,
            }
            settings = load_settings(**fields)
            self.app = create_app(
                self.bot,
                settings,
                store=self._store,
                clock=self.clock,
                sender_config=self._sender_config,
                client=self._client,
                rate_retry=self._rate_retry,
            )
            await stack.enter_async_context(serve_app(self.app, port=port))
            self.emulator.webhook_url = f"{self.url}/whatsapp/incoming/{self.token}"
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def service(self) -> Any:
        """The running :class:`botkit.service.Service`."""
        return self.app.state.service

    async def say(self, user: str, text: str | None = None, **content: Any) -> Any:
        """``user`` writes to the bot through the emulator (``content_url=...`` etc. for media)."""
        result = await self.emulator.inject(user, text, **content)
        if result.status_code != 200:
            raise AssertionError(f"the webhook answered {result.status_code}: {result.body}")
        return result

    async def replies(self, count: int, *, within: float = 5.0) -> list[Any]:
        """Wait until the provider received ``count`` messages in all; return them all."""
        messages: list[Any] = await self.emulator.wait_for_messages(count, within=within)
        return messages
