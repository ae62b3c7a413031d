"""Routers: handlers registered with decorators, nested with ``include_router``.

A handler is an ``async def`` taking the turn's :class:`~botkit.Context`::

    router = Router()

    @router.text("hi", "hello")
    async def greet(ctx: Context) -> None:
        await ctx.reply(text=f"Hello, {ctx.message.profile_name or 'there'}!")

For each event the first handler that matches wins, in registration order: a
router's handlers and included routers in the order they were added (depth
first). ``raise SkipHandler`` passes the event on to the next match. Handlers
are indexed by event kind and flow state at start-up, so handlers bound to
other states cost nothing at dispatch.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, overload

from botkit._events import MESSAGE_KINDS, EventKind
from botkit._filters import Filter, StatusIs, Text, TimerIs, all_of, as_filter
from botkit._where import DefinitionError, caller_location

# Handlers, error handlers and middlewares receive the turn's Context, which
# sits in a layer above this one: here it is ``Any``.
HandlerFn: TypeAlias = Callable[..., Awaitable[Any]]
ErrorHandlerFn: TypeAlias = Callable[[Any, BaseException], Awaitable[Any]]
Middleware: TypeAlias = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
Hook: TypeAlias = Callable[[], Awaitable[Any]]
H = TypeVar("H", bound=HandlerFn)


class SkipHandler(Exception):
    """Raise in a handler to pass the event to the next matching handler."""


class _AnyState:
    def __repr__(self) -> str:
        return "ANY"


#: ``state=ANY`` (the default for plain routers): the handler runs in any state, in a flow or not.
ANY: Any = _AnyState()

# Internal state keys of the handler index.
ANY_KEY = "*"
NO_FLOW_KEY = ""


WINDOW_TIMERS = "botkit.window-closes."
"""The prefix of the timers ``before_window_closes`` keeps armed (one per margin)."""


def window_timer(margin: float) -> str:
    """The name of the timer that fires ``margin`` seconds before the window closes."""
    return f"{WINDOW_TIMERS}{margin:g}"


def flow_wide_key(flow: str) -> str:
    """The index key of handlers bound to every state of ``flow``."""
    return f"{flow}:*"


@dataclass(slots=True, eq=False)
class Handler:
    """A registered handler, as the index keeps it."""

    callback: HandlerFn
    kinds: frozenset[EventKind]
    filter: Filter | None
    states: tuple[str, ...]
    router: Router
    where: str
    fallback: bool = False
    kwarg_names: frozenset[str] | None = frozenset()
    seq: int = 0
    invoke: Callable[[Any], Awaitable[Any]] | None = field(default=None, repr=False)
    raw_state: Any = None

    @property
    def name(self) -> str:
        """The handler function's qualified name, for logs."""
        return getattr(self.callback, "__qualname__", repr(self.callback))


def _kwarg_names(fn: HandlerFn, flt: Filter | None, where: str) -> frozenset[str] | None:
    """The values the handler takes as keyword arguments (None: all, it has ``**kwargs``).

    An argument without a default that no filter gives fails here, where the
    handler is written, not on the first message.
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return frozenset()
    if not params:
        raise DefinitionError(f"handler {fn.__qualname__} must take the context: (ctx)", where)
    given: frozenset[str] | None = frozenset() if flt is None else flt.provides
    names: set[str] = set()
    takes_all = False
    for p in params[1:]:
        if p.kind is p.VAR_KEYWORD:
            takes_all = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            raise DefinitionError(
                f"handler {fn.__qualname__}: argument {p.name!r} is positional-only; "
                "filter values are passed by name",
                where,
            )
        elif p.kind is not p.POSITIONAL_ONLY:
            names.add(p.name)
            if p.default is p.empty and given is not None and p.name not in given:
                offered = ", ".join(sorted(given)) or "none"
                raise DefinitionError(
                    f"handler {fn.__qualname__} takes {p.name!r}, which its filters do not "
                    f"give (they give: {offered}); add a filter that gives it, such as a Regex "
                    f"with a group (?P<{p.name}>...), or give the argument a default",
                    where,
                )
    return None if takes_all else frozenset(names)


class Router:
    """A group of handlers. Nest routers with :meth:`include_router`.

    ``state`` on a decorator binds a handler to flow states: ``ANY`` (the
    default: whatever the state), ``None`` (only when the user is in no flow)
    or ``"flow:state"``. Flows bind with their own state names:
    ``@order.text(state="size")``.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"router@{caller_location()}"
        self.parent: Router | None = None
        self._items: list[Handler | Router] = []
        self._middlewares: list[Middleware] = []
        self._error_handlers: list[tuple[tuple[type[BaseException], ...], ErrorHandlerFn]] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._window_margins: list[float] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- decorators ----------------------------------------------------------

    def text(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for text messages.

        Strings are exact texts, and several strings mean any of them:
        ``text("hi", "hello")`` is ``text(Text("hi", "hello"))``. Filter
        objects must all pass: ``text(Keywords("price"), ~Text("no"))``; use
        ``|`` for either of two filters.
        """
        return self._decorator((EventKind.TEXT,), filters, state, caller_location())

    def media(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for media messages (image, video, audio, voice, document, sticker)."""
        return self._decorator((EventKind.MEDIA,), filters, state, caller_location())

    def contacts(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for shared contact cards."""
        return self._decorator((EventKind.CONTACTS,), filters, state, caller_location())

    def location(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for shared locations."""
        return self._decorator((EventKind.LOCATION,), filters, state, caller_location())

    def message(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for messages of any kind."""
        return self._decorator(MESSAGE_KINDS, filters, state, caller_location())

    def status(self, *filters: object) -> Callable[[H], H]:
        """Register a handler for delivery statuses; strings name statuses (``"read"``)."""
        names = tuple(f for f in filters if isinstance(f, str))
        others = tuple(f for f in filters if not isinstance(f, str))
        # Several names mean any of them: ``status("read", "delivered")``.
        converted = ((StatusIs(*names),) if names else ()) + others
        return self._decorator((EventKind.STATUS,), converted, ANY, caller_location())

    def timer(self, *names: str, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for the user's timers called ``names`` (any timer when none).

        It runs as a turn of the user when a timer ``ctx.schedule(name, ...)``
        made comes due; ``ctx.timer`` is the timer (name, due time, data)::

            @router.timer("nudge", state=None)
            async def nudge(ctx: Context) -> None:
                await ctx.reply("Still there?")
        """
        where = caller_location()
        for name in names:
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"timer names are strings, not {name!r}", where)
        filters = (TimerIs(*names),) if names else ()
        return self._decorator((EventKind.TIMER,), filters, state, where)

    def before_window_closes(self, *, margin: float, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler run ``margin`` minutes before a user's 24-hour window closes.

        It runs as a turn of the user while free text may still be sent (the
        window's safety margin included), so the bot can ask "Still there?
        Reply to keep chatting". Every message from the user moves it (the
        window moved). Off unless a handler is registered::

            @bot.before_window_closes(margin=60)
            async def still_there(ctx: Context) -> None:
                await ctx.reply("Still there? Reply to keep chatting.")
        """
        where = caller_location()
        if isinstance(margin, bool) or not isinstance(margin, int | float) or margin <= 0:
            raise DefinitionError(f"margin={margin!r}: give a positive number of minutes", where)
        seconds = float(margin) * 60
        self._window_margins.append(seconds)
        self._changed()
        return self._decorator((EventKind.TIMER,), (TimerIs(window_timer(seconds)),), state, where)

    @overload
    def handoff_ended(self, fn: H, /) -> H: ...  # type: ignore[overload-overlap]

    @overload
    def handoff_ended(self, *filters: object, state: Any = ANY) -> Callable[[H], H]: ...

    def handoff_ended(self, *filters: Any, state: Any = ANY) -> Any:
        """Register a handler run when a handoff to a person ends: the bot is back.

        ``ctx.event.reason`` is ``"released"`` (an agent gave the conversation
        back) or ``"timed_out"`` (no agent wrote for the handoff timeout); the
        user is in the flow state they were in before. Usable bare or called::

            @bot.handoff_ended
            async def back(ctx: Context) -> None:
                await ctx.reply("The bot again. Where were we?")
        """
        where = caller_location()
        if len(filters) == 1 and inspect.isfunction(filters[0]) and state is ANY:
            return self._decorator((EventKind.HANDOFF,), (), ANY, where)(filters[0])
        return self._decorator((EventKind.HANDOFF,), filters, state, where)

    @property
    def window_margins(self) -> tuple[float, ...]:
        """The ``before_window_closes`` margins of this router (seconds; not nested ones)."""
        return tuple(self._window_margins)

    def fallback(self, *filters: object, state: Any = ANY) -> Callable[[H], H]:
        """Register a handler for messages no other handler took."""
        return self._decorator(MESSAGE_KINDS, filters, state, caller_location(), fallback=True)

    def error(self, *exc_types: type[BaseException]) -> Callable[[ErrorHandlerFn], ErrorHandlerFn]:
        """Register an error handler ``async def (ctx, exc)`` for the given exception types.

        It runs when a handler raises (its turn's changes and replies are
        dropped first) and when the provider rejects a reply. What the error
        handler itself replies and changes is kept.
        """
        where = caller_location()
        types = exc_types or (Exception,)
        for t in types:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise DefinitionError(f"@error() takes exception classes, not {t!r}", where)

        def register(fn: ErrorHandlerFn) -> ErrorHandlerFn:
            _check_async(fn, where)
            self._error_handlers.append((types, fn))
            self._changed()
            return fn

        return register

    def middleware(self, fn: Middleware) -> Middleware:
        """Register ``async def mw(ctx, call_next)``; it must ``await call_next(ctx)`` to go on.

        On a :class:`~botkit.Bot` a middleware wraps the whole turn; on a
        nested router it wraps that router's handlers. The chain is built
        once at start-up, not per event.
        """
        _check_async(fn, caller_location())
        self._middlewares.append(fn)
        self._changed()
        return fn

    def on_startup(self, fn: Hook) -> Hook:
        """Run ``async def fn()`` when the service starts."""
        self._startup.append(fn)
        return fn

    def on_shutdown(self, fn: Hook) -> Hook:
        """Run ``async def fn()`` when the service stops."""
        self._shutdown.append(fn)
        return fn

    def include_router(self, router: Router) -> Router:
        """Nest ``router`` here; its handlers come after what was added before it."""
        where = caller_location()
        if not isinstance(router, Router):
            raise DefinitionError(f"include_router() takes a Router, not {router!r}", where)
        if router is self or router.parent is not None:
            raise DefinitionError(f"{router!r} is already included somewhere", where)
        node: Router | None = self
        while node is not None:
            if node is router:
                raise DefinitionError(f"including {router!r} here would make a cycle", where)
            node = node.parent
        router.parent = self
        self._items.append(router)
        self._changed()
        return router

    # -- internals -----------------------------------------------------------

    def _decorator(
        self,
        kinds: Sequence[EventKind],
        filters: tuple[object, ...],
        state: Any,
        where: str,
        *,
        fallback: bool = False,
    ) -> Callable[[H], H]:
        # Several strings are any of them (``text("hi", "hello")``); filter objects
        # must all pass (combine them with | for either).
        texts = tuple(f for f in filters if isinstance(f, str))
        try:
            converted = ((Text(*texts),) if texts else ()) + tuple(
                as_filter(f) for f in filters if not isinstance(f, str)
            )
        except TypeError as exc:
            raise DefinitionError(str(exc), where) from None
        combined = all_of(converted)
        states = self._state_keys(state, where)

        def register(fn: H) -> H:
            _check_async(fn, where)
            handler = Handler(
                callback=fn,
                kinds=frozenset(kinds),
                filter=combined,
                states=states,
                router=self,
                where=where,
                fallback=fallback,
                kwarg_names=_kwarg_names(fn, combined, where),
                raw_state=state,
            )
            self._items.append(handler)
            self._changed()
            return fn

        return register

    def _state_keys(self, state: Any, where: str) -> tuple[str, ...]:
        """Turn a decorator's ``state=`` into index keys (flows override this)."""
        if state is ANY:
            return (ANY_KEY,)
        if state is None:
            return (NO_FLOW_KEY,)
        values: Iterable[Any] = [state] if isinstance(state, str) else state
        keys: list[str] = []
        for value in values:
            if not isinstance(value, str) or value.count(":") != 1 or value.endswith(":"):
                raise DefinitionError(
                    f"state={value!r}: on a plain router use ANY, None or 'flow:state' "
                    "(or register the handler on the Flow itself with its state name)",
                    where,
                )
            keys.append(value)
        return tuple(keys)

    def _changed(self) -> None:
        node: Router | None = self
        while node is not None:
            node._on_change()
            node = node.parent

    def _on_change(self) -> None:
        """Hook for the root to drop its compiled index."""

    def routers(self) -> Iterable[Router]:
        """This router and every router nested in it, depth first."""
        yield self
        for item in self._items:
            if isinstance(item, Router):
                yield from item.routers()

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        """The middlewares registered on this router, outermost first."""
        return tuple(self._middlewares)

    @property
    def startup_hooks(self) -> tuple[Hook, ...]:
        """The ``on_startup`` hooks of this router (not of nested ones)."""
        return tuple(self._startup)

    @property
    def shutdown_hooks(self) -> tuple[Hook, ...]:
        """The ``on_shutdown`` hooks of this router (not of nested ones)."""
        return tuple(self._shutdown)

    @property
    def error_handlers(self) -> tuple[tuple[tuple[type[BaseException], ...], ErrorHandlerFn], ...]:
        """This router's error handlers (not nested ones'): ``(exception types, handler)``."""
        return tuple(self._error_handlers)

    def entries(
        self, chain: tuple[Middleware, ...] = ()
    ) -> Iterable[tuple[Handler, tuple[Middleware, ...]]]:
        """Handlers in dispatch order, each with the router middlewares that wrap it."""
        for item in self._items:
            if isinstance(item, Router):
                yield from item.entries(chain + tuple(item._middlewares))
            else:
                yield item, chain


def _check_async(fn: Any, where: str) -> None:
    if not callable(fn):
        raise DefinitionError(f"{fn!r} is not a function", where)
    if not inspect.iscoroutinefunction(fn) and not inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    ):
        raise DefinitionError(
            f"{getattr(fn, '__qualname__', fn)!r} must be an 'async def' function", where
        )
