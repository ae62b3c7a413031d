"""Context: what a handler holds during one turn.

A turn is a transaction. Replies are buffered and leave only when the turn
commits; changes to ``ctx.data`` and the flow state are saved at the same
moment. If the handler raises, none of it happens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit._events import Event, Media, MediaMessage, Message, StatusUpdate
from botkit._flow import Flow, FlowError, NotInFlow, _Model
from botkit._outbound import Origin, OutboundMessage, Template
from botkit.delivery._policy import DeliveryRefused, OutsideSessionWindow
from botkit.storage.base import Conversation

if TYPE_CHECKING:
    from botkit._bot import Bot
    from botkit._router import Handler
    from botkit._runtime import Runtime

log = logging.getLogger("botkit.turn")


class FlowControl:
    """``ctx.flow``: where the user is in a flow, and how to move them.

    ``await ctx.flow.trigger("pick")`` or the generated ``await ctx.flow.pick()``
    fire a transition; ``await ctx.flow.start(order)`` enters a flow;
    ``await ctx.flow.finish()`` leaves it.
    """

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @property
    def active(self) -> bool:
        """True while the user is in a flow."""
        return self._ctx._flow is not None

    @property
    def name(self) -> str | None:
        """The current flow's name, or None."""
        flow = self._ctx._flow
        return flow.name if flow is not None else None

    @property
    def state(self) -> str | None:
        """The user's state within the current flow, or None."""
        model = self._ctx._model
        return model.state if model is not None else None

    @property
    def allowed(self) -> tuple[str, ...]:
        """The triggers allowed from the current state."""
        flow, model = self._ctx._flow, self._ctx._model
        if flow is None or model is None:
            return ()
        return flow.allowed_triggers(model.state)

    async def trigger(self, trigger: str, /, **kwargs: Any) -> bool:
        """Fire ``trigger``; True when a transition happened (False when a condition said no).

        Raises :class:`~botkit.InvalidTrigger` naming the allowed
        triggers when the current state does not allow it, and
        :class:`~botkit.NotInFlow` when the user is in no flow.
        """
        ctx = self._ctx
        flow, model = ctx._flow, ctx._model
        if flow is None or model is None:
            raise NotInFlow(
                f"NotInFlow: cannot {trigger!r}: user ...{ctx.user[-4:]} is in no flow; "
                "enter one first with await ctx.flow.start(flow)"
            )
        moved = await flow._trigger(model, trigger, kwargs)
        if moved and ctx._model is model and model.state in flow.final:
            ctx._flow, ctx._model = None, None
        return moved

    async def start(self, flow: Flow | str, state: str | None = None) -> None:
        """Enter ``flow`` (leaving any other) at ``state`` or its initial state."""
        ctx = self._ctx
        target = ctx._runtime.flow(flow) if isinstance(flow, str) else flow
        if ctx._runtime.flows.get(target.name) is not target:
            # Its handlers are not in the index and its state would be dropped next turn.
            raise FlowError(
                f"flow {target.name!r} is not part of this bot: add it with "
                f"bot.include_router({target.name}) before the bot starts"
            )
        if state is not None and state not in target.state_names:
            raise ValueError(f"flow {target.name!r} has no state {state!r}: {target.state_names}")
        if ctx._flow is not None:
            await self.finish()
        model = target._new_model(state or target.initial, ctx)
        ctx._flow, ctx._model = target, model
        await target._enter(model)

    async def finish(self) -> None:
        """Leave the current flow (running the state's ``on_exit``); no-op when in none."""
        ctx = self._ctx
        flow, model = ctx._flow, ctx._model
        ctx._flow, ctx._model = None, None
        if flow is not None and model is not None:
            await flow._exit(model)

    def __getattr__(self, trigger: str) -> Callable[..., Coroutine[Any, Any, bool]]:
        flow = self._ctx._flow
        if flow is None or trigger not in flow.triggers:
            raise AttributeError(
                f"ctx.flow has no trigger {trigger!r}"
                + (f"; flow {flow.name!r} has {list(flow.triggers)}" if flow else " (no flow)")
            )

        async def fire(**kwargs: Any) -> bool:
            return await self.trigger(trigger, **kwargs)

        return fire

    def __repr__(self) -> str:
        return f"<FlowControl {self.name}:{self.state}>" if self.active else "<FlowControl none>"


class Context:
    """One turn of one user: the event, their data and flow state, and ``reply``.

    ``ctx.data`` is a per-user dict (JSON-able values) that persists between
    turns. ``ctx.flow`` moves the user through flows. ``ctx.match`` is the
    regex match when a :class:`~botkit.Regex` filter took the event.
    """

    __slots__ = (
        "_flow",
        "_handler",
        "_ignored",
        "_model",
        "_replies",
        "_runtime",
        "_sends",
        "_values",
        "conversation",
        "event",
        "flow",
        "now",
        "refused",
    )

    def __init__(
        self, runtime: Runtime, event: Event, conversation: Conversation, now: float
    ) -> None:
        self._runtime = runtime
        self.event = event
        self.conversation = conversation
        self.now = now
        self.refused: list[DeliveryRefused] = []
        self._replies: list[OutboundMessage] = []
        # bot.send() calls made during the turn: they leave with its commit (None once over).
        self._sends: list[OutboundMessage] | None = []
        self._values: dict[str, Any] = {}
        self._handler: Handler | None = None
        self._ignored = False
        self.flow = FlowControl(self)
        self._flow: Flow | None = None
        self._model: _Model | None = None
        if conversation.state:
            flow_name, _, state = conversation.state.partition(":")
            found = runtime.flows.get(flow_name)
            if found is not None and state in found.state_names:
                self._flow, self._model = found, found._new_model(state, self)
            else:
                # The flow was renamed or removed since this user entered it.
                log.warning("dropping unknown stored state %r", conversation.state)

    # -- what the handler reads ----------------------------------------------

    @property
    def bot(self) -> Bot:
        """The bot this turn belongs to."""
        return self._runtime.bot

    @property
    def user(self) -> str:
        """The user's phone number, digits only."""
        return self.conversation.user

    @property
    def data(self) -> dict[str, Any]:
        """The user's persistent data (saved when the turn commits)."""
        return self.conversation.data

    @property
    def message(self) -> Message:
        """The incoming message (TypeError in a status handler)."""
        if isinstance(self.event, StatusUpdate):
            raise TypeError("this turn handles a delivery status, not a message; use ctx.status")
        return self.event

    @property
    def status(self) -> StatusUpdate:
        """The delivery status (TypeError in a message handler)."""
        if not isinstance(self.event, StatusUpdate):
            raise TypeError("this turn handles a message, not a delivery status; use ctx.message")
        return self.event

    @property
    def text(self) -> str | None:
        """The message's text (or a media caption); None for other events."""
        return getattr(self.event, "text", None) or getattr(self.event, "caption", None)

    @property
    def match(self) -> re.Match[str] | None:
        """The regex match of a ``Regex`` filter, if one took the event."""
        found = self._values.get("match")
        return found if isinstance(found, re.Match) else None

    @property
    def state(self) -> str | None:
        """The user's state in the current flow (None when in no flow)."""
        return self._model.state if self._model is not None else None

    @property
    def in_session_window(self) -> bool:
        """True when free text may be sent to the user now."""
        return self._runtime.policy.window.is_open(self.conversation.last_inbound, self.now)

    @property
    def opted_out(self) -> bool:
        """True when the user opted out of messages."""
        return self.conversation.opted_out

    @property
    def replies(self) -> tuple[OutboundMessage, ...]:
        """The replies buffered so far in this turn."""
        return tuple(self._replies)

    # -- what the handler does -----------------------------------------------

    async def reply(
        self,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
        split: bool | None = None,
    ) -> list[OutboundMessage]:
        """Queue a reply; it is sent when the turn commits.

        Inside the 24-hour window ``text`` and ``media`` go as they are;
        outside it ``template`` (or the bot's default template) goes instead,
        and with none :class:`~botkit.OutsideSessionWindow` is raised. To an
        opted-out user nothing is sent: the attempt is logged and kept in
        ``ctx.refused``. Text over 1,000 characters is split (``split=False``
        refuses it instead).
        """
        try:
            planned = self._runtime.policy.plan(
                self.conversation,
                self.now,
                text=text,
                media=media,
                template=template,
                origin=Origin.REPLY,
                split=split,
            )
        except OutsideSessionWindow:
            raise
        except DeliveryRefused as refused:
            self.refused.append(refused)
            self._runtime.report_refused(refused)
            return []
        self._replies.extend(planned)
        return planned

    def opt_out(self) -> None:
        """Stop all messages to this user (saved when the turn commits)."""
        self.conversation.opted_out = True

    def opt_in(self) -> None:
        """Allow messages to this user again."""
        self.conversation.opted_out = False

    async def download_media(
        self, path: str | Path | None = None, *, timeout: float = 30.0
    ) -> bytes | Path:
        """Download the message's media: bytes, or written to ``path`` (returned).

        Streams with a timeout and the size cap of the media kind; raises
        :class:`~botkit.MediaExpired` when the URL no longer works and
        :class:`~botkit.MediaTooLarge` past the cap.
        """
        from botkit._media import download

        event = self.event
        if not isinstance(event, MediaMessage):
            raise TypeError("download_media() needs a media message")
        return await download(self._runtime.http, event.media, path, timeout=timeout)

    # -- used by the runtime -------------------------------------------------

    def stored_state(self) -> str | None:
        """The state to save: ``"<flow>:<state>"`` or None."""
        if self._flow is None or self._model is None:
            return None
        return f"{self._flow.name}:{self._model.state}"

    def __repr__(self) -> str:
        return f"<Context user=...{self.user[-4:]} event={type(self.event).__name__}>"
