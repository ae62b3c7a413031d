"""Context: what a handler holds during one turn.

A turn is a transaction. Replies are buffered and leave only when the turn
commits; changes to ``ctx.data`` and the flow state are saved at the same
moment. If the handler raises, none of it happens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from botkit import _handoff
from botkit._bot import Bot
from botkit._events import (
    Event,
    HandoffEnded,
    Media,
    MediaMessage,
    Message,
    StatusUpdate,
    Timer,
    TimerFired,
)
from botkit._flow import Flow, FlowError, NotInFlow
from botkit._media import MediaFetcher
from botkit._outbound import Origin, OutboundMessage, Template
from botkit._policy import DeliveryRefused, OutsideSessionWindow, ReplyPolicy
from botkit._turn import INTERNAL_TIMERS, FlowMove, Turn, due_time
from botkit.storage.base import Conversation


class TurnHost(Protocol):
    """What a :class:`Context` needs of the runtime running its turn."""

    @property
    def bot(self) -> Bot: ...

    @property
    def flows(self) -> Mapping[str, Flow]: ...

    @property
    def policy(self) -> ReplyPolicy: ...

    @property
    def media(self) -> MediaFetcher: ...

    @property
    def handoff_timeout(self) -> float: ...

    def report_refused(self, refused: DeliveryRefused) -> None: ...


log = logging.getLogger("botkit.turn")


class FlowControl:
    """``ctx.flow``: where the user is in a flow, and how to move them.

    ``await ctx.flow.trigger("pick")`` or the generated ``await ctx.flow.pick()``
    fire a transition; ``await ctx.flow.start(order)`` enters a flow;
    ``await ctx.flow.finish()`` leaves it.
    """

    __slots__ = ("_flows", "_turn")

    def __init__(self, turn: Turn, flows: Mapping[str, Flow]) -> None:
        self._turn = turn
        self._flows = flows

    @property
    def active(self) -> bool:
        """True while the user is in a flow."""
        return self._turn.flow is not None

    @property
    def name(self) -> str | None:
        """The current flow's name, or None."""
        model = self._turn.flow
        return model.flow.name if model is not None else None

    @property
    def state(self) -> str | None:
        """The user's state within the current flow, or None."""
        model = self._turn.flow
        return model.state if model is not None else None

    @property
    def allowed(self) -> tuple[str, ...]:
        """The triggers allowed from the current state."""
        model = self._turn.flow
        return model.allowed if model is not None else ()

    async def trigger(self, trigger: str, /, **kwargs: Any) -> bool:
        """Fire ``trigger``; True when a transition happened (False when a condition said no).

        Raises :class:`~botkit.InvalidTrigger` naming the allowed
        triggers when the current state does not allow it, and
        :class:`~botkit.NotInFlow` when the user is in no flow.
        """
        turn = self._turn
        model = turn.flow
        if model is None:
            raise NotInFlow(
                f"NotInFlow: cannot {trigger!r}: user ...{turn.user[-4:]} is in no flow; "
                "enter one first with await ctx.flow.start(flow)"
            )
        source = model.state
        moved = await model.trigger(trigger, kwargs)
        if moved and turn.flow is model and model.state != source:
            turn.moved(FlowMove(model.flow.name, source, model.state))
        if moved and turn.flow is model and model.finished:
            turn.end_flow("final")
        return moved

    async def start(self, flow: Flow | str, state: str | None = None) -> None:
        """Enter ``flow`` (leaving any other) at ``state`` or its initial state."""
        target = self._flow_named(flow) if isinstance(flow, str) else flow
        if self._flows.get(target.name) is not target:
            # Its handlers are not in the index and its state would be dropped next turn.
            raise FlowError(
                f"flow {target.name!r} is not part of this bot: add it with "
                f"bot.include_router({target.name}) before the bot starts"
            )
        if state is not None and state not in target.state_names:
            raise ValueError(f"flow {target.name!r} has no state {state!r}: {target.state_names}")
        if self._turn.flow is not None:
            await self.finish()
        await self._turn.enter_flow(target, state or target.initial).enter()

    async def finish(self) -> None:
        """Leave the current flow (running the state's ``on_exit``); no-op when in none."""
        model = self._turn.end_flow()
        if model is not None:
            await model.exit()

    def _flow_named(self, name: str) -> Flow:
        try:
            return self._flows[name]
        except KeyError:
            raise KeyError(f"no flow {name!r}; known flows: {sorted(self._flows)}") from None

    def __getattr__(self, trigger: str) -> Callable[..., Coroutine[Any, Any, bool]]:
        model = self._turn.flow
        if model is None or trigger not in model.flow.triggers:
            raise AttributeError(
                f"ctx.flow has no trigger {trigger!r}"
                + (
                    f"; flow {model.flow.name!r} has {list(model.flow.triggers)}"
                    if model is not None
                    else " (no flow)"
                )
            )

        async def fire(**kwargs: Any) -> bool:
            return await self.trigger(trigger, **kwargs)

        return fire

    def __repr__(self) -> str:
        return f"<FlowControl {self.name}:{self.state}>" if self.active else "<FlowControl none>"


class Context:
    """One turn of one user, as its handler sees it: the event, their data and flow, ``reply``.

    ``ctx.data`` is a per-user dict (JSON-able values) that persists between
    turns. ``ctx.flow`` moves the user through flows. ``ctx.match`` is the
    regex match when a :class:`~botkit.Regex` filter took the event.
    ``ctx.turn`` is the :class:`Turn` behind it (what a middleware may read:
    the handler dispatch chose, the replies queued so far).
    """

    __slots__ = ("_runtime", "flow", "turn")

    def __init__(self, runtime: TurnHost, turn: Turn) -> None:
        self._runtime = runtime
        self.turn = turn
        self.flow = FlowControl(turn, runtime.flows)
        dropped = turn.restore_flow(runtime.flows, self)
        if dropped is not None:
            # The flow was renamed or removed since this user entered it.
            log.warning("dropping unknown stored state %r", dropped)

    # -- what the handler reads ----------------------------------------------

    @property
    def event(self) -> Event:
        """What this turn handles: a :class:`~botkit.Message` or a :class:`~botkit.StatusUpdate`."""
        return self.turn.event

    @property
    def conversation(self) -> Conversation:
        """The user's conversation as this turn will save it."""
        return self.turn.conversation

    @property
    def now(self) -> float:
        """The time of this turn (the runtime's clock), in epoch seconds."""
        return self.turn.now

    @property
    def refused(self) -> list[DeliveryRefused]:
        """Replies the reply policy refused in this turn (opted out, not on WhatsApp)."""
        return self.turn.refused

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
        """The incoming message (TypeError in a status or timer handler)."""
        if isinstance(self.event, StatusUpdate):
            raise TypeError("this turn handles a delivery status, not a message; use ctx.status")
        if isinstance(self.event, TimerFired):
            raise TypeError("this turn runs a timer, not a message; use ctx.timer")
        if isinstance(self.event, HandoffEnded):
            raise TypeError("this turn ends a handoff, not a message; see ctx.event.reason")
        return self.event

    @property
    def timer(self) -> Timer:
        """The timer this turn runs (TypeError in a message or status handler)."""
        if not isinstance(self.event, TimerFired):
            raise TypeError(
                "this turn does not run a timer; ctx.timer is for @router.timer handlers"
            )
        return self.turn.fired or self.event.timer

    @property
    def timers(self) -> dict[str, Timer]:
        """The user's pending timers by name, the earliest first (a copy: change them with
        :meth:`schedule` and :meth:`cancel`)."""
        pending = (t for t in self.conversation.timers.values() if not _internal(t.name))
        return {t.name: t for t in sorted(pending, key=lambda t: (t.due, t.name))}

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
        found = self.turn.values.get("match")
        return found if isinstance(found, re.Match) else None

    @property
    def state(self) -> str | None:
        """The user's state in the current flow (None when in no flow)."""
        model = self.turn.flow
        return model.state if model is not None else None

    @property
    def in_session_window(self) -> bool:
        """True when free text may be sent to the user now."""
        return self._runtime.policy.window.is_open(self.conversation.last_inbound, self.now)

    @property
    def opted_out(self) -> bool:
        """True when the user opted out of messages."""
        return self.conversation.opted_out

    @property
    def handed_off(self) -> bool:
        """True while the conversation is handed off to a person (see :meth:`handoff`)."""
        return self.conversation.handoff is not None

    @property
    def replies(self) -> tuple[OutboundMessage, ...]:
        """The replies buffered so far in this turn."""
        return tuple(self.turn.replies)

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
            self.turn.refuse(refused)
            self._runtime.report_refused(refused)
            return []
        self.turn.queue_reply(planned)
        return planned

    def schedule(
        self,
        name: str,
        *,
        after: float | None = None,
        at: datetime | float | None = None,
        data: Any = None,
        cancel_on_message: bool = False,
    ) -> Timer:
        """Schedule the timer ``name``: ``after`` seconds from now, or ``at`` a time.

        When it is due, the ``@router.timer(name)`` handler runs as a turn of
        this user (their lock, their data; replies go as free text inside the
        window, as the template outside it). It is saved when this turn
        commits, and survives restarts with the Redis store. Scheduling a name
        again replaces the earlier timer. ``data`` (JSON values) comes back as
        ``ctx.timer.data``. ``cancel_on_message=True`` drops the timer when
        the user writes before it is due. ``at`` is an aware datetime or unix
        seconds; a time in the past fires at once::

            ctx.schedule("nudge", after=600, data={"step": 2}, cancel_on_message=True)
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a timer needs a name: ctx.schedule('nudge', after=60)")
        if _internal(name):
            raise ValueError(f"timer names starting with {INTERNAL_TIMERS!r} are botkit's own")
        timer = Timer(name, due_time(self.now, at, after), data, cancel_on_message)
        self.turn.schedule(timer)
        return timer

    def cancel(self, name: str) -> bool:
        """Cancel the pending timer ``name`` (saved when the turn commits); False when none."""
        if _internal(name) or self.turn.cancel(name) is None:
            return False
        self.turn.cancelled += 1
        return True

    async def handoff(self, reason: str = "", note: str = "") -> None:
        """Hand the conversation to a person: the bot stops answering this user.

        From the commit of this turn, the user's messages are kept in their
        transcript and announced to agents (the agent API, its webhook and
        the ``/agent`` page), and the bot's handlers do not run for them
        (plugins such as opt-out still do). The user's flow state is kept
        and goes on after the handoff ends: released by an agent, or timed
        out after ``BOTKIT_HANDOFF_TIMEOUT`` without an agent message; then
        the ``@router.handoff_ended`` handlers run. Replies queued in this
        turn still go out. A no-op when already handed off::

            @bot.text("agent", "human")
            async def to_a_person(ctx: Context) -> None:
                await ctx.handoff(reason="asked for a person")
                await ctx.reply("Connecting you to a person. They will answer here.")
        """
        _handoff.start(
            self.turn,
            reason=str(reason),
            note=str(note),
            by="bot",
            timeout=self._runtime.handoff_timeout,
        )

    def opt_out(self) -> None:
        """Stop all messages to this user (saved when the turn commits)."""
        self.conversation.opted_out = True

    def opt_in(self) -> None:
        """Allow messages to this user again."""
        self.conversation.opted_out = False

    async def download_media(
        self, path: str | Path | None = None, *, timeout: float | None = None
    ) -> bytes | Path:
        """Download the message's media: bytes, or streamed to the file ``path`` (returned).

        With ``path`` the body goes to the file chunk by chunk and is never
        held whole in memory: use it for documents and videos. The download
        is guarded (the README's security notes): public addresses only unless
        allowed (``BOTKIT_MEDIA_ALLOW_HOSTS``), at most 5 redirects, a size
        cap by media kind (``BOTKIT_MEDIA_MAX_BYTES`` lowers it) and a total
        ``timeout`` (``BOTKIT_MEDIA_TIMEOUT``, 30 s). Raises
        :class:`~botkit.MediaBlocked`, :class:`~botkit.MediaExpired`,
        :class:`~botkit.MediaTooLarge` or
        :class:`~botkit.MediaDownloadFailed` (all :class:`~botkit.MediaError`).
        """
        event = self.event
        if not isinstance(event, MediaMessage):
            raise TypeError("download_media() needs a media message")
        return await self._runtime.media.download(event.media, path, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Context user=...{self.user[-4:]} event={type(self.event).__name__}>"


def _internal(name: str) -> bool:
    return name.startswith(INTERNAL_TIMERS)
