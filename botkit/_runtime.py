"""The runtime: a bot bound to its conversation store and clock, running turns.

This is where one turn happens, end to end::

    begin turn (dedupe, lock, load)  ->  handler (via the handler index)
      ->  commit turn (save, mark done, replies to the outbox, unlock)

The web service, the test kit and the dev tools all run turns through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botkit import _handoff
from botkit import _metrics as metrics
from botkit._clock import Clock, SystemClock
from botkit._context import Context
from botkit._dispatch import HandlerIndex, compose, flows_of
from botkit._events import (
    MESSAGE_KINDS,
    AnyMessage,
    Event,
    EventKind,
    HandoffEnded,
    Media,
    StatusUpdate,
    Timer,
    TimerFired,
    to_millisecond,
)
from botkit._handoff import DEFAULT_TIMEOUT as DEFAULT_HANDOFF_TIMEOUT
from botkit._media import MediaFetcher, MediaPolicy
from botkit._outbound import Origin, OutboundMessage, Template
from botkit._plugins import Plugin, resolve_plugins
from botkit._policy import DeliveryRefused, OutsideSessionWindow, ReplyPolicy
from botkit._router import WINDOW_TIMERS, Router, window_timer
from botkit._transcript import (
    Handoff,
    HandoffEnd,
    TranscriptEntry,
    TranscriptPage,
    incoming_entry,
    outgoing_entry,
)
from botkit._turn import (
    FLOW_TIMEOUT,
    HANDOFF_TIMEOUT,
    SCHEDULED_SEND,
    FlowMove,
    Outcome,
    Turn,
    TurnOutcome,
    due_time,
)
from botkit._where import raised_at
from botkit.storage.base import (
    Conversation,
    ConversationStore,
    DuplicateMessage,
    StorageUnavailable,
    TurnLease,
)
from botkit.storage.outage import outage_log

if TYPE_CHECKING:
    from botkit._bot import Bot
    from botkit._flow import Flow

log = logging.getLogger("botkit.turn")

# The turn running in this task, so bot.send() during it joins its transaction.
_current_turn: contextvars.ContextVar[tuple[Runtime, Turn] | None] = contextvars.ContextVar(
    "botkit_current_turn", default=None
)

_T = TypeVar("_T")

AGENT_ACTION = "botkit.agent"
"""The (never dispatched) timer event of a turn an agent's action runs in."""

StatusHook = Callable[[Context], Awaitable[bool]]
"""Runs in a status turn before the status handlers; False ignores the status."""


class _LockRenewal:
    """Renews a turn's lock every third of its TTL while the handler runs."""

    __slots__ = ("_handle", "_lease", "_period", "_store", "_task")

    def __init__(self, store: ConversationStore, lease: TurnLease) -> None:
        self._store, self._lease = store, lease
        self._period = store.config.lock_ttl / 3
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(self._period, self._fire)

    def _fire(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        try:
            if await self._store.renew(self._lease):
                self._handle = asyncio.get_running_loop().call_later(self._period, self._fire)
        except Exception:  # the commit will find out the lock is gone
            log.warning("could not renew the lock of user ...%s", self._lease.user[-4:])

    def cancel(self) -> None:
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


TS_PAST = 7 * 86_400.0
"""How far in the past an incoming message's time is believed, for the window."""

TS_FUTURE = 300.0
"""How far in the future an incoming message's time is believed (clock skew)."""


class Runtime:
    """A bot bound to a store and a clock: runs turns and queues sends.

    ``plugins`` adds plugin names to the bot's own (``Bot(plugins=[...])``);
    plugin handlers run before the bot's own handlers. ``media`` is where
    ``ctx.download_media`` may fetch from (default: public addresses only).
    ``handoff_timeout`` (seconds, default 30 minutes) ends a handoff in which
    no agent wrote for that long.
    """

    def __init__(
        self,
        bot: Bot,
        store: ConversationStore,
        *,
        clock: Clock | None = None,
        policy: ReplyPolicy | None = None,
        plugins: Sequence[str] = (),
        media: MediaPolicy | None = None,
        handoff_timeout: float = DEFAULT_HANDOFF_TIMEOUT,
    ) -> None:
        if not handoff_timeout > 0:
            raise ValueError(
                f"handoff_timeout={handoff_timeout!r}: give a positive number of seconds"
            )
        self.handoff_timeout = float(handoff_timeout)
        self.bot = bot
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or bot.reply_policy()
        self.plugins: list[Plugin] = resolve_plugins([*bot.plugins, *plugins])
        self.status_hooks: list[StatusHook] = []
        self.on_turn: list[Callable[[TurnOutcome], None]] = []
        self.on_refused: list[Callable[[DeliveryRefused], None]] = []
        self.media_policy = media or MediaPolicy()
        self._media: MediaFetcher | None = None
        self._generation = -1
        self._compile()

    # -- set-up --------------------------------------------------------------

    def _compile(self) -> None:
        front = [p.router for p in self.plugins]
        self.flows: dict[str, Flow] = {}
        for root in (*front, self.bot):
            for flow in flows_of(root):
                if flow.name in self.flows and self.flows[flow.name] is not flow:
                    raise ValueError(
                        f"two flows are named {flow.name!r}; flow names must be unique"
                    )
                self.flows[flow.name] = flow
        self.index = HandlerIndex(self.bot, self.flows, front)
        # While a user is handed off, only the plugins see their messages.
        self.plugin_index = HandlerIndex(Router("no-bot-handlers"), self.flows, front)
        self.window_margins = sorted(
            {m for root in (*front, self.bot) for r in root.routers() for m in r.window_margins}
        )
        self._entry = compose(self.bot.middlewares, self._dispatch)
        self._generation = self.bot.generation

    def flow(self, name: str) -> Flow:
        """The flow called ``name``."""
        try:
            return self.flows[name]
        except KeyError:
            raise KeyError(f"no flow {name!r}; known flows: {sorted(self.flows)}") from None

    @property
    def media(self) -> MediaFetcher:
        """What downloads the media users send (``ctx.download_media``), under ``media_policy``."""
        if self._media is None:
            self._media = MediaFetcher(self.media_policy)
        return self._media

    async def start(self) -> None:
        """Open the store, bind the bot and run start-up hooks (plugins first).

        A store that cannot be reached yet does not stop the start: turns are
        refused as unavailable (503, the provider retries) and the readiness
        probe says so until it answers.
        """
        try:
            await self.store.open()
        except StorageUnavailable as exc:
            outage_log(self.store).failed(exc)  # its end is logged by the first success
        self.bot.runtime = self
        for plugin in self.plugins:
            if plugin.on_startup is not None:
                await plugin.on_startup()
        for router in self._routers():
            for hook in router.startup_hooks:
                await hook()

    async def stop(self) -> None:
        """Run shutdown hooks, close the store and the HTTP client."""
        for router in self._routers():
            for hook in router.shutdown_hooks:
                await hook()
        for plugin in self.plugins:
            if plugin.on_shutdown is not None:
                await plugin.on_shutdown()
        if self.bot.runtime is self:
            self.bot.runtime = None
        if self._media is not None:
            await self._media.aclose()
            self._media = None
        await self.store.close()

    def _routers(self) -> list[Router]:
        """Every router of the turn: the plugins' (first) and the bot's, nested ones included."""
        return [r for root in (*(p.router for p in self.plugins), self.bot) for r in root.routers()]

    # -- turns ---------------------------------------------------------------

    async def handle_message(self, message: AnyMessage) -> TurnOutcome:
        """Run the turn of one incoming message (deduplicated on its id).

        The user's window opens at the message's time, bounded to the last
        7 days and the next 5 minutes: a ``ts`` far in the future would
        otherwise keep the window open for ever (the event keeps the
        provider's value).
        """
        now = self.clock.now()
        inbound_at = now
        if message.timestamp:
            inbound_at = min(max(message.timestamp, now - TS_PAST), now + TS_FUTURE)
        return await self.run_turn(message.user, f"m:{message.id}", message, inbound_at=inbound_at)

    async def handle_status(self, status: StatusUpdate) -> TurnOutcome:
        """Run the turn of a delivery status (deduplicated on message id and status)."""
        if status.user is None:
            raise ValueError("a status turn needs the user the message was sent to")
        return await self.run_turn(status.user, f"s:{status.id}", status)

    async def run_timer(self, user: str, timer: Timer) -> TurnOutcome:
        """Run the turn of a due timer of ``user``.

        The turn holds the user's lock and fires the timer only while it is
        still pending (the same name, due at the same time). The timer leaves
        the user's pending timers with the turn's commit, whatever its handler
        does (a handler that fails does not make it fire again). A timer no
        longer pending (cancelled or replaced since it was read) runs nothing:
        ``Outcome.IGNORED``.
        """
        return await self.run_turn(user, None, TimerFired(user=user, timer=timer))

    async def run_turn(
        self,
        user: str,
        key: str | None,
        event: Event,
        *,
        inbound_at: float | None = None,
        error: BaseException | None = None,
    ) -> TurnOutcome:
        """Begin, run and commit one turn; see the module docstring.

        The turn dispatches ``event`` to its handler, or, given ``error`` (an
        error from outside a handler, such as a message the provider
        rejected), runs the error handler for it. Either way the user's lock
        is renewed while it runs and the outcome is reported.

        Raises what the store raises on begin (:class:`UserBusy`,
        :class:`StorageUnavailable`) and on commit (also :class:`LockLost`):
        then nothing was saved and the message was not marked done, so the
        provider's retry runs it again. A duplicate returns ``Outcome.DUPLICATE``.
        """
        started = time.perf_counter()
        if self._generation != self.bot.generation:
            self._compile()
        try:
            lease = await self.store.begin_turn(user, key, inbound_at=inbound_at)
        except DuplicateMessage as duplicate:
            # A copy still in progress is not known to be done: the caller should
            # have the provider retry it rather than acknowledge it.
            name = Outcome.IN_PROGRESS if duplicate.state == "in_progress" else Outcome.DUPLICATE
            outcome = TurnOutcome(user=user, kind=event.kind, outcome=name)
            self._report(outcome)
            return outcome
        renewal = _LockRenewal(self.store, lease)
        try:
            turn = Turn(event, lease.conversation, self.clock.now())
            ctx = Context(self, turn)
            token = _current_turn.set((self, turn))
            try:
                if error is None:
                    await self._handle(ctx)
                else:
                    await self._handle_error(ctx, error)
            finally:
                _current_turn.reset(token)
            conversation = turn.conversation
            conversation.state = turn.stored_state()
            if event.kind in MESSAGE_KINDS and error is None:
                conversation.last_active = turn.now
            _arm_flow_timeout(turn, lease.conversation.state)
            if self.window_margins and event.kind in MESSAGE_KINDS:
                self._arm_window_reminders(turn)
            if event.kind in MESSAGE_KINDS and lease.conversation.handoff is not None:
                _handoff.heard(
                    turn, getattr(event, "text", None) or getattr(event, "caption", None)
                )
            outgoing = turn.outgoing()
            await self.store.commit_turn(
                lease, conversation, outgoing, _transcript_of(turn, outgoing, lease.key)
            )
        except BaseException:
            renewal.cancel()
            try:
                await self.store.abort_turn(lease)
            except Exception:  # the in-progress mark expires with the lock anyway
                log.debug("abort after a failed turn also failed", exc_info=True)
            raise
        renewal.cancel()
        if turn.cancelled:  # only what the commit saved: a failed turn's cancels were undone
            metrics.count(metrics.TIMERS_CANCELLED, amount=turn.cancelled)
        assert turn.outcome is not None
        outcome = TurnOutcome(
            user=user,
            kind=event.kind,
            outcome=turn.outcome,
            handler=turn.handler.name if turn.handler is not None else None,
            replies=tuple(turn.replies),
            refused=tuple(turn.refused),
            error=turn.error,
            error_handled=turn.error_handled,
            state=conversation.state,
            duration=time.perf_counter() - started,
            notices=tuple(turn.notices),
            moves=tuple(turn.moves),
        )
        self._report(outcome)
        return outcome

    async def _handle(self, ctx: Context) -> None:
        """Dispatch the event; a handler that raises goes to the error handlers."""
        turn = ctx.turn
        event = turn.event
        if isinstance(event, TimerFired):
            if not turn.fire(event.timer):
                turn.outcome = Outcome.IGNORED  # cancelled or replaced since it was read
                return
            if event.timer.name.startswith(SCHEDULED_SEND):
                self._send_scheduled(ctx, event.timer)
                turn.outcome = Outcome.HANDLED
                return
            if event.timer.name == FLOW_TIMEOUT:
                try:
                    await self._time_out_flow(ctx)
                except Exception as exc:
                    await self._handle_error(ctx, exc)
                    return
                turn.outcome = Outcome.HANDLED
                return
            if event.timer.name == HANDOFF_TIMEOUT:
                await self._end_handoff(ctx, HandoffEnd.TIMED_OUT)
                return
            if event.timer.name.startswith(WINDOW_TIMERS) and ctx.handed_off:
                turn.outcome = Outcome.IGNORED  # a person is answering: no "still there?"
                return
        elif isinstance(event, HandoffEnded):
            await self._end_handoff(ctx, HandoffEnd(event.reason), event.agent)
            return
        elif event.kind in MESSAGE_KINDS:
            turn.cancel_on_message()
            if ctx.handed_off:
                await self._handed_off(ctx)
                return
        try:
            await self._expire_flow(ctx)
            await self._entry(ctx)
        except Exception as exc:
            failed = turn.handler
            await self._handle_error(ctx, exc, failed.router if failed is not None else None)
            turn.handler = failed  # the outcome names the handler that failed
            return
        if turn.outcome is None:
            turn.outcome = Outcome.HANDLED if turn.handler is not None else Outcome.UNHANDLED

    async def _handed_off(self, ctx: Context) -> None:
        """A message of a handed-off user: the plugins may take it, the bot's handlers do not."""
        turn = ctx.turn
        try:
            taken = await self.plugin_index.dispatch(ctx, ctx.event.kind, turn.stored_state())
        except Exception as exc:
            failed = turn.handler
            await self._handle_error(ctx, exc, failed.router if failed is not None else None)
            turn.handler = failed
            return
        turn.outcome = Outcome.HANDLED if taken is not None else Outcome.HANDED_OFF

    async def _end_handoff(
        self, ctx: Context, reason: HandoffEnd, agent: str | None = None
    ) -> None:
        """End the user's handoff and run the ``handoff_ended`` handlers (IGNORED: none)."""
        turn = ctx.turn
        ended = _handoff.end(turn, reason, agent)
        if ended is None:
            turn.outcome = Outcome.IGNORED
            return
        turn.event = ended
        turn.on_reset(lambda t: _handoff.end(t, reason, agent))
        try:
            taken = await self.index.dispatch(ctx, EventKind.HANDOFF, turn.stored_state())
        except Exception as exc:
            failed = turn.handler
            await self._handle_error(ctx, exc, failed.router if failed is not None else None)
            turn.handler = failed
            return
        turn.outcome = Outcome.HANDLED if taken is not None else Outcome.UNHANDLED

    def _arm_window_reminders(self, turn: Turn) -> None:
        """Re-arm the ``before_window_closes`` timers: the user's message moved the window."""
        closes = self.policy.window.closes_at(turn.conversation.last_inbound)
        for margin in self.window_margins:
            name = window_timer(margin)
            if closes is None or closes - margin <= turn.now:
                turn.cancel(name)
            else:
                turn.schedule(Timer(name, to_millisecond(closes - margin)))

    async def _expire_flow(self, ctx: Context) -> None:
        """A message after the flow's deadline whose timer has not fired yet (an outage)."""
        if ctx.turn.flow_expired() and not ctx.handed_off:
            await self._time_out_flow(ctx)

    async def _time_out_flow(self, ctx: Context) -> None:
        """The user leaves their flow; its ``on_timeout`` runs (no-op when in no flow)."""
        model = ctx.turn.end_flow("timeout")
        if model is not None and model.flow.on_timeout is not None:
            await _maybe_await(model.flow.on_timeout(ctx))

    async def _dispatch(self, ctx: Context) -> None:
        if isinstance(ctx.event, StatusUpdate):
            for hook in self.status_hooks:
                if not await hook(ctx):
                    ctx.turn.outcome = Outcome.IGNORED
                    return
        await self.index.dispatch(ctx, ctx.event.kind, ctx.turn.stored_state())

    async def _handle_error(
        self, ctx: Context, exc: BaseException, origin: Router | None = None
    ) -> None:
        """Drop the turn's changes; the first matching error handler runs on the clean turn.

        What the error handler replies and changes is committed; if it fails
        too, the turn is dropped back to the stored conversation.
        """
        turn = ctx.turn
        turn.reset_after_error()
        turn.outcome, turn.error = Outcome.ERROR, exc
        handler = self.index.error_handler_for(exc, origin)
        if handler is None:
            _log_failure("unhandled error in a turn of user ...%s", turn.user[-4:], exc=exc)
            return
        try:
            await handler(ctx, exc)
        except Exception as failure:
            _log_failure(
                "the error handler itself failed on %r; the turn is dropped", exc, exc=failure
            )
            turn.reset_after_error()
            return
        turn.error_handled = True

    async def report_error(self, user: str, exc: BaseException, event: Event) -> bool:
        """Give ``exc`` to the first matching error handler, in a turn of ``user``.

        For errors outside a handler, such as a message the provider rejected.
        The turn runs like any other (lock renewed, outcome reported); what
        the error handler replies and changes is committed. Returns False when
        no error handler takes the error (it is logged, and no turn is run).
        """
        if self.index.error_handler_for(exc) is None:
            log.error("%s (no error handler registered)", exc)
            return False
        outcome = await self.run_turn(user, None, event, error=exc)
        return outcome.error_handled

    def _report(self, outcome: TurnOutcome) -> None:
        if outcome.moves:
            self._count_moves(outcome.moves)
        for listener in self.on_turn:
            listener(outcome)

    def _count_moves(self, moves: Sequence[FlowMove]) -> None:
        """The funnel counters: labels are the bot's own flow and state names only."""
        for move in moves:
            found = self.flows.get(move.flow)
            if found is None:
                continue
            known = found.state_names
            flow = move.flow
            if move.source is None:
                metrics.count(metrics.FLOW_ENTRIES, flow, metrics.bounded(move.dest, known))
            elif move.dest is None:
                reason = metrics.bounded(move.reason, metrics.FLOW_EXIT_REASONS)
                metrics.count(metrics.FLOW_EXITS, flow, metrics.bounded(move.source, known), reason)
            else:
                metrics.count(
                    metrics.FLOW_TRANSITIONS,
                    flow,
                    metrics.bounded(move.source, known),
                    metrics.bounded(move.dest, known),
                )

    def report_refused(self, refused: DeliveryRefused) -> None:
        """Log and count a reply the policy refused (opted out, not on WhatsApp)."""
        log.info("not sent to user ...%s: %s", refused.user[-4:], refused.reason)
        for listener in self.on_refused:
            listener(refused)

    # -- proactive sends -----------------------------------------------------

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
        """Schedule a message to ``to`` for ``at`` (an aware datetime or unix seconds) or
        ``after`` seconds; returns its id (for :meth:`cancel_scheduled`).

        It is kept as a timer of the user (durable with Redis) and planned
        when it is due, under the reply policy then: free text if the user's
        window is open at that moment, else ``template``; with neither (or
        when the user opted out meanwhile) it is refused then, logged and
        counted. Raises ``InvalidPhoneNumber``, :class:`~botkit.ReplyTooLong`
        or ValueError (bad time, no content) now; nothing is scheduled then.
        """
        from botkit.devino.validation import normalize_phone

        user = normalize_phone(to)
        if text is None and media is None and template is None:
            raise ValueError("give text, media or template to send")
        now = self.clock.now()
        due = due_time(now, at, after)
        # The content is checked now (length, media); the window waits for the due time.
        self.policy.plan(
            Conversation(user=user, last_inbound=now),
            now,
            text=text,
            media=media,
            template=template,
            origin=Origin.SEND,
        )
        token = secrets.token_hex(8)
        data: dict[str, Any] = {}
        if text is not None:
            data["text"] = text
        if media is not None:
            data["media"] = [media.url, media.mime_type, media.name]
        if template is not None:
            data["template"] = template.to_dict()
        timer = Timer(f"{SCHEDULED_SEND}{token}", due, data)
        current = _current_turn.get()
        if current is not None and current[0] is self and current[1].user == user:
            current[1].schedule(timer)  # this user's turn holds the lock: it saves the timer
        else:
            await self._change_timers(user, lambda timers: timers.__setitem__(timer.name, timer))
        return f"{user}.{token}"

    async def cancel_scheduled(self, scheduled: str) -> bool:
        """Cancel a message :meth:`send_at` scheduled, by its id; False when not pending."""
        user, _, token = scheduled.partition(".")
        if not user.isdigit() or not token.isalnum() or len(token) > 32:
            return False
        name = f"{SCHEDULED_SEND}{token}"
        found: list[Timer] = []

        def drop(timers: dict[str, Timer]) -> None:
            timer = timers.pop(name, None)
            if timer is not None:
                found.append(timer)

        await self._change_timers(user, drop)
        if found:
            metrics.count(metrics.TIMERS_CANCELLED)
        return bool(found)

    async def _change_timers(self, user: str, change: Callable[[dict[str, Timer]], None]) -> None:
        """Change a user's timers in a turn of their own (their lock, one commit)."""
        lease = await self.store.begin_turn(user, None)
        try:
            conversation = lease.conversation.copy()
            before = dict(conversation.timers)
            change(conversation.timers)
            if conversation.timers == before:
                await self.store.abort_turn(lease)
                return
            await self.store.commit_turn(lease, conversation)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.abort_turn(lease)
            raise

    def _send_scheduled(self, ctx: Context, timer: Timer) -> None:
        """A scheduled send is due: plan it under the policy now and queue it with the turn."""
        data = timer.data if isinstance(timer.data, dict) else {}
        media = data.get("media")
        template = data.get("template")
        turn = ctx.turn
        try:
            planned = self.policy.plan(
                turn.conversation,
                turn.now,
                text=data.get("text"),
                media=Media(media[0], media[1], media[2]) if media else None,
                template=Template.from_dict(template) if template else None,
                origin=Origin.SEND,
            )
        except DeliveryRefused as refused:
            turn.refuse(refused)
            self.report_refused(refused)
            return
        turn.queue_send(planned)

    # -- handoff: what agents and operators do --------------------------------

    async def hand_off(self, user: str, *, reason: str = "", note: str = "") -> bool:
        """An operator takes over ``user``'s conversation from the bot (as ``ctx.handoff``).

        False when it was handed off already.
        """
        return await self._agent_turn(
            user,
            lambda turn: _handoff.start(
                turn, reason=reason, note=note, by="operator", timeout=self.handoff_timeout
            ),
        )

    async def claim(self, user: str, agent: str) -> Handoff:
        """``agent`` takes the handed-off conversation of ``user``.

        Raises :class:`~botkit.HandoffError` when it is not handed off
        (``not_handed_off``) or another agent has it (``claimed_by_another``).
        """
        return await self._agent_turn(
            user, lambda turn: _handoff.claim(turn, agent, self.handoff_timeout)
        )

    async def agent_reply(
        self,
        user: str,
        agent: str,
        text: str | None = None,
        *,
        template: Template | None = None,
    ) -> list[OutboundMessage]:
        """Queue ``agent``'s message to the handed-off ``user``, under the window policy.

        Inside the window ``text`` goes as it is; outside it only ``template``
        may go (the bot's default template is not used for a person's words):
        :class:`~botkit.OutsideSessionWindow` otherwise. It claims the
        conversation if nobody had, and restarts the handoff timeout. Raises
        :class:`~botkit.HandoffError` like :meth:`claim`, and the reply
        policy's refusals (opted out, too long); nothing is queued then.
        """

        def reply(turn: Turn) -> list[OutboundMessage]:
            conversation = turn.conversation
            _handoff.agent_wrote(turn, agent, self.handoff_timeout)
            window_open = self.policy.window.is_open(conversation.last_inbound, turn.now)
            if template is None and not window_open:
                raise OutsideSessionWindow(user, conversation.last_inbound)
            planned = self.policy.plan(
                conversation,
                turn.now,
                text=text if window_open else None,
                template=template,
                origin=Origin.AGENT,
            )
            turn.queue_send(planned)
            turn.notify(
                _handoff.Notice(
                    "message.sent",
                    user,
                    turn.now,
                    {"agent": agent, "messages": [m.ref for m in planned]},
                )
            )
            return planned

        return await self._agent_turn(user, reply)

    async def release(self, user: str, agent: str | None = None) -> TurnOutcome:
        """Give the handed-off conversation back to the bot; its ``handoff_ended`` handlers
        run (reason ``released``). ``Outcome.IGNORED`` when it was not handed off."""
        from botkit.devino.validation import normalize_phone

        user = normalize_phone(user)
        event = HandoffEnded(
            user=user, reason=HandoffEnd.RELEASED.value, agent=agent, timestamp=self.clock.now()
        )
        return await self.run_turn(user, None, event)

    async def transcript(
        self, user: str, *, before: str | None = None, limit: int = 50
    ) -> TranscriptPage:
        """A page of ``user``'s transcript, oldest first (see the store's ``transcript``)."""
        from botkit.devino.validation import normalize_phone

        return await self.store.transcript(normalize_phone(user), before=before, limit=limit)

    async def _agent_turn(self, user: str, act: Callable[[Turn], _T]) -> _T:
        """Run ``act`` in a turn of ``user`` of its own: their lock, one commit, no handler.

        What ``act`` raises drops the turn (nothing saved) and propagates.
        """
        from botkit.devino.validation import normalize_phone

        user = normalize_phone(user)
        now = self.clock.now()
        lease = await self.store.begin_turn(user, None)
        try:
            turn = Turn(
                TimerFired(user=user, timer=Timer(AGENT_ACTION, now)), lease.conversation, now
            )
            result = act(turn)
            outgoing = turn.outgoing()
            await self.store.commit_turn(
                lease, turn.conversation, outgoing, _transcript_of(turn, outgoing, None)
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.abort_turn(lease)
            raise
        self._report(
            TurnOutcome(
                user=user,
                kind=EventKind.TIMER,
                outcome=Outcome.HANDLED,
                handler=AGENT_ACTION,
                replies=tuple(outgoing),
                state=turn.conversation.state,
                notices=tuple(turn.notices),
                moves=tuple(turn.moves),
            )
        )
        return result

    async def send(
        self,
        to: str,
        text: str | None = None,
        *,
        media: Media | None = None,
        template: Template | None = None,
    ) -> list[OutboundMessage]:
        """Queue a message to ``to`` outside any turn, under the same reply policy.

        Raises :class:`~botkit.OutsideSessionWindow` (no template outside the
        window), :class:`~botkit.OptedOut`, :class:`~botkit.NotOnWhatsApp`, or
        ``InvalidPhoneNumber``; nothing is queued then. During a turn (from a
        handler) the message is queued by that turn's commit.
        """
        from botkit.devino.validation import normalize_phone

        user = normalize_phone(to)
        conversation = await self.store.load(user)
        try:
            planned = self.policy.plan(
                conversation,
                self.clock.now(),
                text=text,
                media=media,
                template=template,
                origin=Origin.SEND,
            )
        except DeliveryRefused as refused:
            self.report_refused(refused)
            raise
        current = _current_turn.get()
        if current is not None and current[0] is self and current[1].queue_send(planned):
            return planned  # a turn is a transaction: this leaves with its commit
        await self.store.enqueue(planned)
        return planned


def _transcript_of(
    turn: Turn, outgoing: Sequence[OutboundMessage], key: str | None
) -> list[TranscriptEntry]:
    """What the turn adds to the user's transcript: the message in (once: a turn that runs
    again after a failed commit writes it then), what happened, the messages out."""
    entries: list[TranscriptEntry] = []
    if key is not None and key.startswith("m:"):
        entry = incoming_entry(turn.event, turn.now)
        if entry is not None:
            entries.append(entry)
    entries.extend(turn.notes)
    agent = turn.agent
    for message in outgoing:
        entries.append(
            outgoing_entry(message, turn.now, agent if message.origin is Origin.AGENT else None)
        )
    return entries


def _arm_flow_timeout(turn: Turn, stored_state: str | None) -> None:
    """Keep the flow's timeout timer armed for the state the turn leaves the user in.

    It is armed on entering a state and re-armed by every message; other
    turns (statuses, timers) leave it as it was. Out of a flow, or in a state
    without a timeout, there is none.
    """
    model = turn.flow
    timeout = model.flow.timeout_for(model.state) if model is not None else None
    if model is None or timeout is None or turn.conversation.handoff is not None:
        turn.cancel(FLOW_TIMEOUT)  # while handed off, the flow waits for the bot's return
        return
    pending = turn.conversation.timers.get(FLOW_TIMEOUT)
    if (
        pending is not None
        and model.stored == stored_state
        and turn.event.kind not in MESSAGE_KINDS
    ):
        return
    turn.schedule(Timer(FLOW_TIMEOUT, to_millisecond(turn.now + timeout)))


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _log_failure(message: str, *args: object, exc: BaseException) -> None:
    """One ERROR line: what failed, the exception and where it was raised.

    The full traceback follows only at DEBUG (``BOTKIT_LOG_LEVEL=DEBUG``).
    """
    log.error(
        f"{message}: %s: %s (raised at %s)",
        *args,
        type(exc).__name__,
        exc,
        raised_at(exc),
        exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
    )
