"""Bot: the root router, with the settings that belong to the bot itself."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from botkit._dispatch import flows_of
from botkit._errors import BotkitError
from botkit._events import Media
from botkit._outbound import OutboundMessage, Template
from botkit._policy import MAX_REPLY_CHARS, ReplyPolicy, SessionWindow
from botkit._router import Router
from botkit._where import DefinitionError, caller_location

if TYPE_CHECKING:
    from botkit._flow import Flow


class BotRuntime(Protocol):
    """What a running bot sends through: the runtime that binds it (``bot.runtime``)."""

    async def send(
        self,
        to: str,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
    ) -> list[OutboundMessage]: ...

    async def send_at(
        self,
        to: str,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
        at: datetime | float | None = None,
        after: float | None = None,
    ) -> str: ...

    async def cancel_scheduled(self, scheduled: str) -> bool: ...


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BotNotRunning(BotkitError, RuntimeError):
    """``bot.send`` was called while the bot is not running anywhere in this process."""


class Bot(Router):
    """The root router of a bot, and its own settings.

    ::

        bot = Bot("pizza", sender="PizzaCo", default_template=Template("come_back"))

        @bot.text()
        async def echo(ctx):
            await ctx.reply(ctx.message.text)

    ``name`` namespaces the bot's keys in a shared Redis. ``sender`` is the
    provider's ``from`` name. ``default_template`` is
    sent instead of free text outside the 24-hour window when a reply names no
    template. ``plugins`` are enabled by name (with ``BOTKIT_PLUGINS``').
    ``session_window`` (seconds) and ``safety_margin`` are the bot's own
    defaults: ``BOTKIT_SESSION_WINDOW``, ``BOTKIT_SAFETY_MARGIN`` and
    ``BOTKIT_SENDER``, when set, win over them (an operator can change a
    deployed bot without editing its code), and an explicit argument to
    ``load_settings`` wins over both.
    """

    def __init__(
        self,
        name: str = "bot",
        *,
        sender: str | None = None,
        default_template: Template | None = None,
        plugins: Sequence[str] = (),
        session_window: float | None = None,
        safety_margin: float | None = None,
        split_long_text: bool = True,
    ) -> None:
        where = caller_location()
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(
                f"bot name {name!r} must be 1-64 letters, digits, '_', '.' or '-'", where
            )
        super().__init__(name)
        if default_template is not None and not isinstance(default_template, Template):
            raise DefinitionError("default_template must be a botkit.Template", where)
        if isinstance(plugins, str):
            raise DefinitionError("plugins is a list of names: plugins=['optout']", where)
        self.sender = sender
        self.default_template = default_template
        self.plugins: list[str] = list(plugins)
        self.session_window = session_window
        self.safety_margin = safety_margin
        self.split_long_text = split_long_text
        self.runtime: BotRuntime | None = None
        self.generation = 0

    def _on_change(self) -> None:
        self.generation += 1

    @property
    def flows(self) -> dict[str, Flow]:
        """The flows included in this bot, by name."""
        return {flow.name: flow for flow in flows_of(self)}

    def reply_policy(
        self,
        session_window: float | None = None,
        safety_margin: float | None = None,
        max_text: int = MAX_REPLY_CHARS,
    ) -> ReplyPolicy:
        """The reply policy: the values given (the service's resolved settings), else the bot's.

        Else the defaults. The service passes what its settings resolved
        (explicit argument > environment > ``Bot(...)`` > default).
        """
        length = session_window or self.session_window or SessionWindow().length
        margin = safety_margin if safety_margin is not None else self.safety_margin
        return ReplyPolicy(
            window=SessionWindow(length=length, margin=margin),
            default_template=self.default_template,
            split_long_text=self.split_long_text,
            max_text=max_text,
        )

    async def send(
        self,
        to: str,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
    ) -> list[OutboundMessage]:
        """Send a message to ``to`` from anywhere (a job, another service).

        It follows the reply policy: free text inside the user's 24-hour
        window, ``template`` outside it, :class:`~botkit.OutsideSessionWindow`
        with none. Returns the queued messages. Needs the bot running in
        this process (``botkit run``/``dev`` or ``BotTester``). Called from a
        handler, the message leaves when that turn commits, and not at all
        if the handler fails.
        """
        return await self._running().send(to, text, media=media, template=template)

    async def send_at(
        self,
        to: str,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
        at: datetime | float | None = None,
        after: float | None = None,
    ) -> str:
        """Send a message to ``to`` later: ``at`` an aware datetime (or unix seconds) or
        ``after`` seconds. Returns its id; :meth:`cancel_scheduled` takes it back.

        The message is kept durably (a timer of the user) and the window is
        decided when it is due: free text if the user's window is open then,
        else ``template``; with neither it is refused then (logged and
        counted), not now::

            await bot.send_at(user, "Your table is ready", after=3600,
                              template=Template("table_ready", []))
        """
        runtime = self._running()
        return await runtime.send_at(to, text, media=media, template=template, at=at, after=after)

    async def cancel_scheduled(self, scheduled: str) -> bool:
        """Cancel a message :meth:`send_at` scheduled; False when it is no longer pending."""
        return await self._running().cancel_scheduled(scheduled)

    def _running(self) -> BotRuntime:
        if self.runtime is None:
            raise BotNotRunning(
                f"bot {self.name!r} is not running in this process: start it with "
                "'botkit run' or 'botkit dev', or use BotTester in tests; from another "
                "process use the service's POST /api/send"
            )
        return self.runtime
