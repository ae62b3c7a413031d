"""The runtime: a bot bound to its conversation store and clock, running turns.

This is where one turn happens, end to end::

    begin turn (dedupe, lock, load)  ->  handler (via the handler index)
      ->  commit turn (save, mark done, replies to the outbox, unlock)

The web service, the test kit and the dev tools all run turns through here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from botkit._clock import Clock, SystemClock
from botkit._context import Context
from botkit._events import AnyMessage, Event, EventKind, Media, StatusUpdate
from botkit._outbound import Origin, OutboundMessage, Template
from botkit._plugins import Plugin, resolve_plugins
from botkit._router import HandlerIndex, Router, compose
from botkit.delivery._policy import DeliveryRefused, ReplyPolicy
from botkit.storage.base import (
    ConversationStore,
    DuplicateMessage,
    StorageUnavailable,
    TurnLease,
)

if TYPE_CHECKING:
    from botkit._bot import Bot
    from botkit._flow import Flow

log = logging.getLogger("botkit.turn")

# The turn running in this task, so bot.send() during it joins its transaction.
_current_turn: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "botkit_current_turn", default=None
)

StatusHook = Callable[[Context], Awaitable[bool]]
"""Runs in a status turn before the status handlers; False ignores the status."""


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What one turn did: for logs, metrics and the test kit.

    ``outcome`` is ``handled``, ``unhandled`` (no handler matched),
    ``error`` (a handler raised; the error handlers ran), ``duplicate``
    (already done), ``in_progress`` (the same message is running elsewhere
    right now), or ``ignored`` (a status that does not move the message forward).
    """

    user: str
    kind: str
    outcome: str
    handler: str | None = None
    replies: tuple[OutboundMessage, ...] = ()
    refused: tuple[DeliveryRefused, ...] = ()
    error: BaseException | None = None
    error_handled: bool = False
    state: str | None = None
    duration: float = 0.0


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


class Runtime:
    """A bot bound to a store and a clock: runs turns and queues sends.

    ``plugins`` adds plugin names to the bot's own (``Bot(plugins=[...])``);
    plugin handlers run before the bot's own handlers.
    """

    def __init__(
        self,
        bot: Bot,
        store: ConversationStore,
        *,
        clock: Clock | None = None,
        policy: ReplyPolicy | None = None,
        plugins: Sequence[str] = (),
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.bot = bot
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or bot.reply_policy()
        self.plugins: list[Plugin] = resolve_plugins([*bot.plugins, *plugins])
        self.status_hooks: list[StatusHook] = []
        self.on_turn: list[Callable[[TurnOutcome], None]] = []
        self.on_refused: list[Callable[[DeliveryRefused], None]] = []
        self._http = http
        self._own_http = http is None
        self._generation = -1
        self._compile()

    # -- set-up --------------------------------------------------------------

    def _compile(self) -> None:
        front = [p.router for p in self.plugins]
        self.flows: dict[str, Flow] = {}
        for root in (*front, self.bot):
            for flow in root._flows():
                if flow.name in self.flows and self.flows[flow.name] is not flow:
                    raise ValueError(
                        f"two flows are named {flow.name!r}; flow names must be unique"
                    )
                self.flows[flow.name] = flow
        self.index = HandlerIndex(self.bot, self.flows, front)
        self._entry = compose(self.bot._middlewares, self._dispatch)
        self._generation = self.bot.generation

    def flow(self, name: str) -> Flow:
        """The flow called ``name``."""
        try:
            return self.flows[name]
        except KeyError:
            raise KeyError(f"no flow {name!r}; known flows: {sorted(self.flows)}") from None

    @property
    def http(self) -> httpx.AsyncClient:
        """A shared HTTP client for media downloads."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        return self._http

    async def start(self) -> None:
        """Open the store, bind the bot and run start-up hooks (plugins first).

        A store that cannot be reached yet does not stop the start: turns are
        refused as unavailable (503, the provider retries) and the readiness
        probe says so until it answers.
        """
        try:
            await self.store.open()
        except StorageUnavailable as exc:
            log.warning("the conversation store is unavailable at start-up (%s); retrying", exc)
        self.bot.runtime = self
        for plugin in self.plugins:
            if plugin.on_startup is not None:
                await plugin.on_startup()
        for router in self._routers():
            for hook in router._startup:
                await hook()

    async def stop(self) -> None:
        """Run shutdown hooks, close the store and the HTTP client."""
        for router in self._routers():
            for hook in router._shutdown:
                await hook()
        for plugin in self.plugins:
            if plugin.on_shutdown is not None:
                await plugin.on_shutdown()
        if self.bot.runtime is self:
            self.bot.runtime = None
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None
        await self.store.close()

    def _routers(self) -> list[Router]:
        """Every router of the turn: the plugins' (first) and the bot's, nested ones included."""
        return [r for root in (*(p.router for p in self.plugins), self.bot) for r in root._walk()]

    # -- turns ---------------------------------------------------------------

    async def handle_message(self, message: AnyMessage) -> TurnOutcome:
        """Run the turn of one incoming message (deduplicated on its id)."""
        inbound_at = message.timestamp or self.clock.now()
        return await self.run_turn(message.user, f"m:{message.id}", message, inbound_at=inbound_at)

    async def handle_status(self, status: StatusUpdate) -> TurnOutcome:
        """Run the turn of a delivery status (deduplicated on message id and status)."""
        if status.user is None:
            raise ValueError("a status turn needs the user the message was sent to")
        return await self.run_turn(status.user, f"s:{status.id}", status)

    async def run_turn(
        self, user: str, key: str | None, event: Event, *, inbound_at: float | None = None
    ) -> TurnOutcome:
        """Begin, dispatch and commit one turn; see the module docstring.

        Raises what the store raises on begin (:class:`UserBusy`,
        :class:`StorageUnavailable`) and on commit (also :class:`LockLost`):
        then nothing was saved and the message was not marked done, so the
        provider's retry runs it again. A duplicate returns ``outcome="duplicate"``.
        """
        started = time.perf_counter()
        if self._generation != self.bot.generation:
            self._compile()
        try:
            lease = await self.store.begin_turn(user, key, inbound_at=inbound_at)
        except DuplicateMessage as duplicate:
            # A copy still in progress is not known to be done: the caller should
            # have the provider retry it rather than acknowledge it.
            name = "in_progress" if duplicate.state == "in_progress" else "duplicate"
            outcome = TurnOutcome(user=user, kind=event.kind.value, outcome=name)
            self._report(outcome)
            return outcome
        renewal = _LockRenewal(self.store, lease)
        try:
            ctx, outcome_name, handler, error, handled = await self._run(lease, event)
            conversation = ctx.conversation
            conversation.state = ctx.stored_state()
            if event.kind is not EventKind.STATUS:
                conversation.last_active = ctx.now
            await self.store.commit_turn(lease, conversation, [*ctx._replies, *(ctx._sends or ())])
            ctx._sends = None
        except BaseException:
            renewal.cancel()
            try:
                await self.store.abort_turn(lease)
            except Exception:  # the in-progress mark expires with the lock anyway
                log.debug("abort after a failed turn also failed", exc_info=True)
            raise
        renewal.cancel()
        outcome = TurnOutcome(
            user=user,
            kind=event.kind.value,
            outcome=outcome_name,
            handler=handler,
            replies=tuple(ctx._replies),
            refused=tuple(ctx.refused),
            error=error,
            error_handled=handled,
            state=conversation.state,
            duration=time.perf_counter() - started,
        )
        self._report(outcome)
        return outcome

    async def _run(
        self, lease: TurnLease, event: Event
    ) -> tuple[Context, str, str | None, BaseException | None, bool]:
        now = self.clock.now()
        ctx = Context(self, event, lease.conversation.copy(), now)
        token = _current_turn.set(ctx)
        try:
            await self._expire_flow(ctx)
            await self._entry(ctx)
        except Exception as exc:
            ctx._sends = None  # what the failed handler sent is dropped with its replies
            failed = ctx._handler
            handler = failed.name if failed is not None else None
            origin = failed.router if failed is not None else None
            ctx, handled = await self._handle_error(lease, event, now, exc, origin)
            return ctx, "error", handler, exc, handled
        finally:
            _current_turn.reset(token)
        if ctx._ignored:
            return ctx, "ignored", None, None, False
        if ctx._handler is None:
            return ctx, "unhandled", None, None, False
        return ctx, "handled", ctx._handler.name, None, False

    async def _expire_flow(self, ctx: Context) -> None:
        flow = ctx._flow
        if flow is None or isinstance(ctx.event, StatusUpdate):
            return
        if flow.expired(ctx.conversation.last_active, ctx.now):
            ctx._flow, ctx._model = None, None
            if flow.on_timeout is not None:
                await _maybe_await(flow.on_timeout(ctx))

    async def _dispatch(self, ctx: Context) -> None:
        if isinstance(ctx.event, StatusUpdate):
            for hook in self.status_hooks:
                if not await hook(ctx):
                    ctx._ignored = True
                    return
        await self.index.dispatch(ctx, ctx.event.kind, ctx.stored_state())

    async def _handle_error(
        self,
        lease: TurnLease,
        event: Event,
        now: float,
        exc: BaseException,
        origin: Router | None = None,
    ) -> tuple[Context, bool]:
        """Drop the failed turn's changes; the first matching error handler gets a fresh context.

        Returns the context to commit and whether an error handler took the error.
        """
        ctx = self._fresh_context(lease, event, now)
        handler = self.index.error_handler_for(exc, origin)
        if handler is None:
            log.error(
                "unhandled error in a turn of user ...%s: %r", lease.user[-4:], exc, exc_info=exc
            )
            return ctx, False
        _current_turn.set(ctx)  # reset when _run returns
        try:
            await handler(ctx, exc)
        except Exception:
            log.exception("the error handler itself failed; the turn is dropped")
            return self._fresh_context(lease, event, now), False
        return ctx, True

    def _fresh_context(self, lease: TurnLease, event: Event, now: float) -> Context:
        """A context on the stored conversation, as if the failed handler never ran.

        A flow that timed out stays ended: committing its stored state with a
        new ``last_active`` would bring it back to life.
        """
        ctx = Context(self, event, lease.conversation.copy(), now)
        flow = ctx._flow
        if (
            flow is not None
            and not isinstance(event, StatusUpdate)
            and flow.expired(ctx.conversation.last_active, now)
        ):
            ctx._flow, ctx._model = None, None
        return ctx

    async def report_error(self, user: str, exc: BaseException, event: Event) -> bool:
        """Give ``exc`` to the first matching error handler, in a turn of ``user``.

        For errors outside a handler, such as a message the provider rejected.
        What the error handler replies and changes is committed. Returns
        False when no error handler takes the error (it is logged).
        """
        handler = self.index.error_handler_for(exc)
        if handler is None:
            log.error("%s (no error handler registered)", exc)
            return False
        lease = await self.store.begin_turn(user, None)
        ctx = Context(self, event, lease.conversation.copy(), self.clock.now())
        try:
            await handler(ctx, exc)
        except Exception:
            log.exception("the error handler failed on %r", exc)
            await self.store.abort_turn(lease)
            return False
        ctx.conversation.state = ctx.stored_state()
        await self.store.commit_turn(lease, ctx.conversation, ctx._replies)
        return True

    def _report(self, outcome: TurnOutcome) -> None:
        for listener in self.on_turn:
            listener(outcome)

    def report_refused(self, refused: DeliveryRefused) -> None:
        """Log and count a reply the policy refused (opted out, not on WhatsApp)."""
        log.info("not sent to user ...%s: %s", refused.user[-4:], refused.reason)
        for listener in self.on_refused:
            listener(refused)

    # -- proactive sends -----------------------------------------------------

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
        turn = _current_turn.get()
        if turn is not None and turn._runtime is self and turn._sends is not None:
            turn._sends.extend(planned)  # a turn is a transaction: this leaves with its commit
            return planned
        await self.store.enqueue(planned)
        return planned


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value
