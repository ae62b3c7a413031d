"""Dispatch: the compiled handler index of a router tree, and middleware chains.

Typed against :class:`Dispatched`, the little dispatch needs of what handlers
receive (the turn's :class:`~botkit.Context` in practice): the event, and the
turn to record the chosen handler and its filter values on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from botkit._events import Event, EventKind
from botkit._flow import Flow
from botkit._router import (
    ANY_KEY,
    NO_FLOW_KEY,
    ErrorHandlerFn,
    Handler,
    Middleware,
    Router,
    SkipHandler,
    flow_wide_key,
)
from botkit._where import DefinitionError


class Choice(Protocol):
    """Where dispatch records the handler it runs (the turn)."""

    @property
    def values(self) -> Mapping[str, Any]: ...

    def choose(self, handler: Handler | None, values: Mapping[str, Any] = ...) -> None: ...


class Dispatched(Protocol):
    """What dispatch needs of the object handlers receive."""

    @property
    def event(self) -> Event: ...

    @property
    def turn(self) -> Choice: ...


def flows_of(root: Router) -> Iterable[Flow]:
    """The flows in ``root``'s tree."""
    for router in root.routers():
        if isinstance(router, Flow):
            yield router


def compose(
    middlewares: Sequence[Middleware], inner: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    """Wrap ``inner`` in ``middlewares`` (the first is outermost)."""
    call = inner
    for mw in reversed(middlewares):
        call = _wrap(mw, call)
    return call


def _wrap(
    mw: Middleware, inner: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    async def run(ctx: Any) -> Any:
        return await mw(ctx, inner)

    return run


_NO_VALUES: dict[str, Any] = {}


class HandlerIndex:
    """The compiled dispatch table of a router tree.

    Built once (at start-up, or after the tree changed). Each event kind and
    flow state maps to the handlers that can take it, merged in dispatch
    order and cached, so dispatch cost does not grow with handlers bound to
    other states.
    """

    def __init__(
        self, root: Router, flows: Mapping[str, Flow], front: Sequence[Router] = ()
    ) -> None:
        ordered: list[tuple[Handler, tuple[Middleware, ...]]] = []
        for router in front:
            ordered.extend(router.entries(router.middlewares))
        ordered.extend(root.entries())
        self._keys: dict[tuple[EventKind, bool], dict[str, list[Handler]]] = {}
        compiled: list[Handler] = []
        for seq, (registered, chain) in enumerate(ordered):
            # A copy per index: one router (a plugin's, a module-level bot's) may be
            # compiled into several runtimes, each with its own order.
            handler = replace(registered, seq=seq)
            handler.invoke = compose(chain, _call_handler(handler))
            self._check_states(handler, flows)
            for kind in handler.kinds:
                per_state = self._keys.setdefault((kind, handler.fallback), {})
                for key in handler.states:
                    per_state.setdefault(key, []).append(handler)
            compiled.append(handler)
        self.handlers = tuple(compiled)
        self.error_handlers = tuple(
            eh for router in (*front, root) for r in router.routers() for eh in r.error_handlers
        )
        self._cache: dict[tuple[EventKind, bool, str | None], tuple[Handler, ...]] = {}

    @staticmethod
    def _check_states(handler: Handler, flows: Mapping[str, Flow]) -> None:
        for key in handler.states:
            if key in (ANY_KEY, NO_FLOW_KEY):
                continue
            flow_name, _, state = key.partition(":")
            flow = flows.get(flow_name)
            if flow is None:
                raise DefinitionError(
                    f"handler {handler.name} is bound to flow {flow_name!r}, which is not "
                    f"included in the bot (known flows: {sorted(flows) or 'none'})",
                    handler.where,
                )
            if state != "*" and state not in flow.state_names:
                raise DefinitionError(
                    f"handler {handler.name}: flow {flow_name!r} has no state {state!r} "
                    f"(states: {list(flow.state_names)})",
                    handler.where,
                )

    def candidates(
        self, kind: EventKind, state: str | None, fallback: bool = False
    ) -> tuple[Handler, ...]:
        """Handlers that may take an event of ``kind`` from a user in ``state``, in order."""
        cache_key = (kind, fallback, state)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        per_state = self._keys.get((kind, fallback), {})
        if state is None:
            keys = [NO_FLOW_KEY, ANY_KEY]
        else:
            flow_name = state.partition(":")[0]
            keys = [state, flow_wide_key(flow_name), ANY_KEY]
        merged = sorted(
            {h.seq: h for key in keys for h in per_state.get(key, ())}.values(),
            key=lambda h: h.seq,
        )
        found = tuple(merged)
        if len(self._cache) < 10_000:  # bounded: states are static, this is a safety net
            self._cache[cache_key] = found
        return found

    async def dispatch(self, ctx: Dispatched, kind: EventKind, state: str | None) -> Handler | None:
        """Run the first matching handler (then fallbacks); return it, or None if none took it."""
        for fallback in (False, True):
            for handler in self.candidates(kind, state, fallback):
                flt = handler.filter
                if flt is None:
                    values: Mapping[str, Any] = _NO_VALUES
                else:
                    result = await flt.check_async(ctx) if flt.is_async else flt.check(ctx)
                    if not result:
                        continue
                    values = (
                        result
                        if isinstance(result, dict)
                        else (dict(result) if isinstance(result, Mapping) else _NO_VALUES)
                    )
                turn = ctx.turn
                turn.choose(handler, values)
                try:
                    assert handler.invoke is not None
                    await handler.invoke(ctx)
                except SkipHandler:
                    turn.choose(None)
                    continue
                return handler
            if kind is EventKind.STATUS:
                break
        return None

    def handles(self, kind: EventKind) -> bool:
        """True when any handler (in any state) takes events of ``kind``."""
        return any(k == kind and per_state for (k, _), per_state in self._keys.items())

    def error_handler_for(
        self, exc: BaseException, origin: Router | None = None
    ) -> ErrorHandlerFn | None:
        """The error handler for ``exc`` raised in a handler of ``origin``.

        The failing handler's own router is asked first, then its parents up
        to the bot, so a router's specific handler is not hidden by a
        catch-all on the bot; then every error handler in registration order.
        """
        node = origin
        while node is not None:
            for types, fn in node.error_handlers:
                if isinstance(exc, types):
                    return fn
            node = node.parent
        for types, fn in self.error_handlers:
            if isinstance(exc, types):
                return fn
        return None


def _call_handler(handler: Handler) -> Callable[[Any], Awaitable[Any]]:
    callback = handler.callback
    names = handler.kwarg_names
    if names is not None and not names:

        async def call_plain(ctx: Any) -> Any:
            return await callback(ctx)

        return call_plain

    async def call_with_values(ctx: Dispatched) -> Any:
        values = ctx.turn.values
        if names is None:
            kwargs = {k: v for k, v in values.items() if k.isidentifier()}
        else:
            kwargs = {k: values[k] for k in names if k in values}
        return await callback(ctx, **kwargs)

    return call_with_values
