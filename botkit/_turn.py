"""The turn: what one event of one user holds from begin to commit.

A :class:`Turn` is created when the store has begun the turn (the user's lock
taken, their conversation loaded) and is committed or dropped as a whole.
The handler sees it through its :class:`~botkit.Context`; the runtime, the
router and the status tracker change it only through its methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botkit._events import MESSAGE_KINDS, Event, EventKind, Timer, to_millisecond
from botkit._flow import Flow, FlowModel
from botkit._outbound import OutboundMessage
from botkit._policy import DeliveryRefused
from botkit._transcript import TranscriptEntry, flow_entry
from botkit.storage.base import Conversation

if TYPE_CHECKING:
    from botkit._router import Handler

_NO_VALUES: Mapping[str, Any] = {}

INTERNAL_TIMERS = "botkit."
"""The prefix of the timers botkit itself schedules (a name a bot may not use)."""

SCHEDULED_SEND = "botkit.send."
"""The prefix of the timers ``bot.send_at`` schedules (one per message)."""

FLOW_TIMEOUT = "botkit.flow-timeout"
"""The timer a flow's ``timeout`` keeps armed while the user is in one of its states."""

HANDOFF_TIMEOUT = "botkit.handoff-timeout"
"""The timer that ends a handoff no agent wrote in for the handoff timeout."""


@dataclass(frozen=True, slots=True)
class FlowMove:
    """A user entered a flow (``source`` None), moved in it, or left it (``dest`` None).

    ``reason`` says why they left: ``final`` (a final state), ``cancel``
    (finished or replaced), ``timeout`` or ``handoff``.
    """

    flow: str
    source: str | None
    dest: str | None
    reason: str | None = None


def due_time(now: float, at: datetime | float | None, after: float | None) -> float:
    """When a scheduled thing is due: ``at`` (aware datetime or unix seconds) or ``after`` s,
    to the millisecond."""
    if (at is None) == (after is None):
        raise ValueError("give exactly one of at (a time) or after (seconds)")
    if after is not None:
        if isinstance(after, bool) or not isinstance(after, int | float) or not after >= 0:
            raise ValueError(f"after={after!r}: give a number of seconds, 0 or more")
        return to_millisecond(now + float(after))
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError(f"at={at.isoformat()} has no time zone; give an aware time")
        return to_millisecond(at.timestamp())
    if isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at):
        return to_millisecond(float(at))
    raise ValueError(f"at={at!r}: give an aware datetime or unix seconds")


class Outcome(StrEnum):
    """What became of a turn."""

    HANDLED = "handled"
    """A handler took the event."""
    UNHANDLED = "unhandled"
    """No handler matched."""
    ERROR = "error"
    """A handler raised (or an error was reported); the error handlers ran."""
    DUPLICATE = "duplicate"
    """The event was already done: nothing ran."""
    IN_PROGRESS = "in_progress"
    """The same event is running elsewhere right now: nothing ran."""
    IGNORED = "ignored"
    """A status that does not move its message forward: no handler ran."""
    HANDED_OFF = "handed_off"
    """The user is handed off to a person: the message was recorded, no bot handler ran."""


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What one turn did: for logs, metrics and the test kit."""

    user: str
    kind: EventKind
    outcome: Outcome
    handler: str | None = None
    replies: tuple[OutboundMessage, ...] = ()
    refused: tuple[DeliveryRefused, ...] = ()
    error: BaseException | None = None
    error_handled: bool = False
    state: str | None = None
    duration: float = 0.0
    notices: tuple[Any, ...] = ()
    """What agents hear of this turn (``botkit._handoff.Notice``): handoffs, messages."""
    moves: tuple[FlowMove, ...] = ()
    """The flow moves this turn committed (for the funnel metrics)."""


class Turn:
    """One turn of one user: the event, the conversation, the flow, what leaves at commit.

    - ``event``, ``now``: what happened and when (the runtime's clock);
    - ``conversation``: this turn's copy of the user's stored conversation;
    - ``flow``: the user's place in a flow (:class:`~botkit._flow.FlowModel`:
      the flow and its model), or None;
    - ``replies`` and ``sends``: messages queued to leave with the commit;
    - ``refused``: replies the reply policy refused (opted out, ...);
    - ``handler`` and ``values``: the handler dispatch chose and what its
      filters found (a regex match, named groups);
    - ``outcome``, ``error``, ``error_handled``: set by the runtime as the turn runs;
    - ``cancelled``: how many timers the turn cancelled (counted when it commits).
    """

    __slots__ = (
        "_ended",
        "_flows",
        "_sends_open",
        "_stored",
        "agent",
        "cancelled",
        "conversation",
        "error",
        "error_handled",
        "event",
        "fired",
        "flow",
        "handler",
        "moves",
        "notes",
        "notices",
        "now",
        "outcome",
        "refused",
        "replies",
        "sends",
        "values",
        "view",
    )

    def __init__(self, event: Event, stored: Conversation, now: float) -> None:
        self.event = event
        self.now = now
        self._stored = stored
        self._flows: Mapping[str, Flow] = {}
        self.view: Any = None
        self.conversation = stored.copy()
        self.flow: FlowModel | None = None
        self.replies: list[OutboundMessage] = []
        self.sends: list[OutboundMessage] = []
        self._sends_open = True
        self.refused: list[DeliveryRefused] = []
        self.handler: Handler | None = None
        self.values: Mapping[str, Any] = _NO_VALUES
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.error_handled = False
        self.fired: Timer | None = None
        self.notes: list[TranscriptEntry] = []
        self.notices: list[Any] = []
        self.moves: list[FlowMove] = []
        self.agent: str | None = None
        self._ended: Callable[[Turn], object] | None = None
        self.cancelled = 0

    @property
    def user(self) -> str:
        """The user's phone number, digits only."""
        return self.conversation.user

    def restore_flow(self, flows: Mapping[str, Flow], view: Any) -> str | None:
        """Put the user back in the flow their stored state names; ``view`` gets its callbacks.

        Returns the stored state when it names a flow or state that no longer
        exists (renamed or removed since): the user is then in no flow.
        """
        self._flows, self.view = flows, view
        self.flow = None
        stored = self.conversation.state
        if not stored:
            return None
        name, _, state = stored.partition(":")
        found = flows.get(name)
        if found is None or state not in found.state_names:
            return stored
        self.flow = found.model(state, view)
        return None

    # -- the flow ------------------------------------------------------------

    def enter_flow(self, flow: Flow, state: str) -> FlowModel:
        """Put the user in ``flow`` at ``state`` (callbacks not run: see ``FlowModel.enter``)."""
        self.flow = flow.model(state, self.view)
        self.moved(FlowMove(flow.name, None, state))
        return self.flow

    def end_flow(self, reason: str = "cancel") -> FlowModel | None:
        """Take the user out of their flow; returns where they were (for ``on_exit``).

        ``reason`` is why, for the funnels: ``final``, ``cancel`` or ``timeout``.
        """
        model, self.flow = self.flow, None
        if model is not None:
            self.moved(FlowMove(model.flow.name, model.state, None, reason))
        return model

    def moved(self, move: FlowMove) -> None:
        """Record a flow move (saved in the transcript and counted when the turn commits)."""
        self.moves.append(move)
        self.notes.append(
            flow_entry(move.flow, self.now, source=move.source, dest=move.dest, reason=move.reason)
        )

    def suspend_flow(self) -> None:
        """The user is handed off: their flow waits (its state is kept, its timeout dropped)."""
        self.cancel(FLOW_TIMEOUT)
        model = self.flow
        if model is not None:  # for the funnels, the bot lost the user here
            self.moved(FlowMove(model.flow.name, model.state, None, "handoff"))

    # -- what agents and the transcript hear -------------------------------------

    def note(self, entry: TranscriptEntry) -> None:
        """Add an entry to the user's transcript with this turn's commit."""
        self.notes.append(entry)

    def notify(self, notice: Any) -> None:
        """Tell agents (the webhook, the inbox page) once this turn committed."""
        self.notices.append(notice)

    def on_reset(self, redo: Callable[[Turn], object] | None) -> None:
        """What to do again after a handler failed and the turn was reset (ending a handoff)."""
        self._ended = redo

    def stored_state(self) -> str | None:
        """The state to save: ``"<flow>:<state>"`` or None."""
        return self.flow.stored if self.flow is not None else None

    def flow_expired(self) -> bool:
        """True when the user's flow timed out since their last message (never on a status)."""
        model = self.flow
        return (
            model is not None
            and self.event.kind in MESSAGE_KINDS
            and model.flow.expired(self.conversation.last_active, self.now, model.state)
        )

    # -- timers ----------------------------------------------------------------

    def schedule(self, timer: Timer) -> None:
        """Keep ``timer`` with the conversation (replacing one of the same name)."""
        self.conversation.timers[timer.name] = timer

    def cancel(self, name: str) -> Timer | None:
        """Drop the timer called ``name``; returns it (None when there was none)."""
        return self.conversation.timers.pop(name, None)

    def fire(self, timer: Timer) -> bool:
        """Take ``timer`` out of the pending ones: this turn runs it.

        False when it is no longer pending (cancelled or replaced since it was claimed).
        """
        current = self.conversation.timers.get(timer.name)
        if current is None or current.id != timer.id:
            return False
        del self.conversation.timers[timer.name]
        self.fired = current
        return True

    def cancel_on_message(self) -> None:
        """Drop the timers scheduled with ``cancel_on_message=True`` (the user wrote)."""
        timers = self.conversation.timers
        for name in [n for n, t in timers.items() if t.cancel_on_message]:
            del timers[name]
            self.cancelled += 1

    # -- what leaves with the commit -------------------------------------------

    def queue_reply(self, messages: Iterable[OutboundMessage]) -> None:
        """Queue replies: they leave when the turn commits."""
        self.replies.extend(messages)

    def queue_send(self, messages: Iterable[OutboundMessage]) -> bool:
        """Queue ``bot.send()`` messages with this turn; False once its commit is done."""
        if not self._sends_open:
            return False
        self.sends.extend(messages)
        return True

    def refuse(self, refused: DeliveryRefused) -> None:
        """Record a reply the policy refused."""
        self.refused.append(refused)

    def outgoing(self) -> list[OutboundMessage]:
        """What the commit appends to the outbox; later ``bot.send()`` calls go on their own."""
        self._sends_open = False
        return [*self.replies, *self.sends]

    # -- dispatch and errors ---------------------------------------------------

    def choose(self, handler: Handler | None, values: Mapping[str, Any] = _NO_VALUES) -> None:
        """Record the handler dispatch is running (None when it passed), and its filter values."""
        self.handler, self.values = handler, values

    def reset_after_error(self) -> None:
        """Drop what the failed handler did: back to the stored conversation, nothing queued.

        A flow that timed out stays ended: committing its stored state with a
        new ``last_active`` would bring it back to life. The view stays the same.
        """
        self.conversation = self._stored.copy()
        self.replies, self.sends, self.refused = [], [], []
        self.notes, self.notices, self.moves, self.agent = [], [], [], None
        self._sends_open = True
        self.handler, self.values = None, _NO_VALUES
        self.cancelled = 0  # back with the stored conversation
        self.restore_flow(self._flows, self.view)
        if self.flow_expired():
            self.flow = None
        fired = self.fired
        if fired is not None and self.conversation.timers.get(fired.name) == fired:
            # A timer whose turn failed has fired all the same: it is not retried forever.
            del self.conversation.timers[fired.name]
        if fired is not None and fired.name == FLOW_TIMEOUT:
            self.flow = None  # the flow timed out, whatever on_timeout did
        if self._ended is not None:
            self._ended(self)  # a handoff that ended stays ended, whatever its handler did

    def __repr__(self) -> str:
        return f"<Turn user=...{self.user[-4:]} event={type(self.event).__name__}>"
