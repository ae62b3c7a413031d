"""Human handoff: a conversation passed from the bot to a person, and back.

While a user is handed off (``await ctx.handoff(...)``, or an operator's
``POST /api/conversations/{user}/handoff``), their messages are recorded in
the transcript and announced to agents, and the bot's own handlers do not run
for them (plugins such as opt-out still do). An agent claims the
conversation, replies through the outbox under the window policy, and
releases it; with no agent message for the handoff timeout it times out.
Either way the bot's ``@router.handoff_ended`` handlers run and the user's
flow goes on where it was.

Every change here is made to a :class:`~botkit.Turn`: it is saved with the
turn's commit, under the user's lock, with its transcript entries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from botkit._errors import BotkitError
from botkit._events import HandoffEnded, Timer, masked, to_millisecond
from botkit._transcript import Handoff, HandoffEnd, handoff_entry
from botkit._turn import HANDOFF_TIMEOUT, Turn

DEFAULT_TIMEOUT = 30 * 60.0
"""A handoff with no agent message for this long (seconds) goes back to the bot."""


class HandoffError(BotkitError):
    """An agent action that does not fit the conversation's handoff state (the API's 409).

    ``reason`` is a short key: ``not_handed_off``, ``already_handed_off`` or
    ``claimed_by_another``.
    """

    def __init__(self, user: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.user = user
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Notice:
    """Something agents hear about after a turn committed (the webhook, the inbox page).

    ``event`` is ``handoff.started``, ``handoff.claimed``, ``message.received``,
    ``message.sent`` or ``handoff.ended``.
    """

    event: str
    user: str
    at: float
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The webhook's body: ``{"event", "user", "at", ...}``."""
        return {"event": self.event, "user": self.user, "at": self.at, **self.data}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Notice:
        """The notice from :meth:`to_dict`'s form."""
        data = dict(body)
        return cls(str(data.pop("event")), str(data.pop("user")), float(data.pop("at")), data)


def start(turn: Turn, *, reason: str, note: str, by: str, timeout: float) -> bool:
    """Hand the turn's user off to a person; False when they already are.

    The flow state is kept (and its timeout timer dropped until the end);
    the handoff's own timeout timer is armed.
    """
    conversation = turn.conversation
    if conversation.handoff is not None:
        return False
    handoff = Handoff(since=turn.now, reason=reason, note=note, by=by)
    conversation.handoff = handoff
    turn.suspend_flow()
    _arm(turn, timeout)
    turn.note(handoff_entry("started", turn.now, reason=reason, note=note, by=by))
    turn.notify(Notice("handoff.started", turn.user, turn.now, {"handoff": handoff.to_dict()}))
    return True


def claim(turn: Turn, agent: str, timeout: float) -> Handoff:
    """``agent`` takes the handed-off conversation (again: a no-op for the same agent).

    Raises :class:`HandoffError` when it is not handed off or another agent has it.
    """
    handoff = _current(turn)
    if handoff.agent == agent:
        return handoff
    if handoff.agent is not None:
        raise HandoffError(
            turn.user,
            "claimed_by_another",
            f"the conversation with {masked(turn.user)} is taken by agent {handoff.agent!r}; "
            "only they (or a release) can free it",
        )
    taken = replace(handoff, agent=agent, claimed_at=turn.now, last_agent_at=turn.now)
    turn.conversation.handoff = taken
    _arm(turn, timeout)
    turn.note(handoff_entry("claimed", turn.now, agent=agent))
    turn.notify(Notice("handoff.claimed", turn.user, turn.now, {"handoff": taken.to_dict()}))
    return taken


def agent_wrote(turn: Turn, agent: str, timeout: float) -> None:
    """An agent's message goes out in this turn: it claims the conversation if nobody had,
    and the timeout starts again."""
    handoff = claim(turn, agent, timeout)
    turn.conversation.handoff = replace(handoff, last_agent_at=turn.now)
    turn.agent = agent
    _arm(turn, timeout)


def end(turn: Turn, reason: HandoffEnd, agent: str | None = None) -> HandoffEnded | None:
    """End the handoff (None when there was none): the bot answers again, the flow resumes.

    Returns the event the ``@router.handoff_ended`` handlers get.
    """
    handoff = turn.conversation.handoff
    if handoff is None:
        return None
    turn.conversation.handoff = None
    turn.cancel(HANDOFF_TIMEOUT)
    who = agent or handoff.agent
    turn.note(handoff_entry(reason.value, turn.now, agent=who))
    turn.notify(
        Notice(
            "handoff.ended",
            turn.user,
            turn.now,
            {"reason": reason.value, "handoff": handoff.to_dict()},
        )
    )
    return HandoffEnded(user=turn.user, reason=reason.value, agent=who, timestamp=turn.now)


def heard(turn: Turn, text: str | None) -> None:
    """The handed-off user wrote: keep their last message with the handoff, tell agents."""
    handoff = turn.conversation.handoff
    if handoff is None:
        return
    turn.conversation.handoff = handoff.heard(text, turn.now)
    message = {"text": text} if text is not None else {}
    turn.notify(Notice("message.received", turn.user, turn.now, {"message": message}))


def _current(turn: Turn) -> Handoff:
    handoff = turn.conversation.handoff
    if handoff is None:
        raise HandoffError(
            turn.user,
            "not_handed_off",
            f"the conversation with {masked(turn.user)} is not handed off; "
            "hand it off first (POST /api/conversations/{user}/handoff)",
        )
    return handoff


def _arm(turn: Turn, timeout: float) -> None:
    turn.schedule(Timer(HANDOFF_TIMEOUT, to_millisecond(turn.now + timeout)))
