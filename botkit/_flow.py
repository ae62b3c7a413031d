"""Flows: a conversation as a finite-state machine, on the ``transitions`` library.

A flow is declared once, with its states and transitions, and its handlers
bind to states::

    order = Flow(
        "order",
        states=["menu", "size", "address", "confirm"],
        transitions=[
            ("pick", "menu", "size"),
            ("sized", "size", "address"),
            ("addressed", "address", "confirm"),
            {"trigger": "restart", "source": "confirm", "dest": "menu"},
        ],
        timeout=30 * 60,  # 30 minutes of silence ends the flow
    )

    @order.text(state="size")
    async def size(ctx):
        await ctx.flow.trigger("sized")  # or: await ctx.flow.sized()

One ``AsyncMachine`` is built per flow when it is defined (``model=None``,
``auto_transitions=False``). Each turn triggers it on a throwaway model that
carries the user's stored state, so nothing per user outlives the turn.
Callbacks (``conditions``, ``unless``, ``before``, ``after``, ``prepare``,
and a state's ``on_enter``/``on_exit``) are sync or async functions of
``(ctx)``, or of ``(ctx, **kwargs)`` to receive the trigger's keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from transitions.core import EventData
from transitions.extensions.asyncio import (
    AsyncEventData,
)

from botkit._compat import SequentialMachine
from botkit._errors import BotkitError
from botkit._router import ANY, Router, flow_wide_key
from botkit._where import DefinitionError, caller_location

Callback = Callable[..., Any]
_CALLBACK_KEYS = ("conditions", "unless", "before", "after", "prepare")
_STATE_CALLBACK_KEYS = ("on_enter", "on_exit")


class FlowError(BotkitError):
    """Base class of errors a handler can hit while moving a user through a flow."""


class InvalidTrigger(FlowError):
    """The trigger does not exist or is not allowed from the user's current state."""

    def __init__(self, flow: str, state: str, trigger: str, allowed: Sequence[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none (a final state?)"
        super().__init__(
            f"InvalidTrigger: flow {flow!r} cannot {trigger!r} from state {state!r}; "
            f"triggers allowed there: {allowed_text}"
        )
        self.flow, self.state, self.trigger, self.allowed = flow, state, trigger, tuple(allowed)


class NotInFlow(FlowError):
    """A flow trigger was used while the user is in no flow (or another flow)."""


@dataclass(frozen=True, slots=True)
class State:
    """A flow state with optional enter/exit callbacks (``on_enter(ctx)``, ``on_exit(ctx)``).

    ``timeout`` (seconds or a timedelta) replaces the flow's timeout in this state.
    """

    name: str
    on_enter: Callback | Sequence[Callback] | None = None
    on_exit: Callback | Sequence[Callback] | None = None
    timeout: float | timedelta | None = None


class FlowModel:
    """A user's place in a flow during one turn: the throwaway model its machine runs on.

    ``ctx`` is what the flow's callbacks receive (the turn's :class:`~botkit.Context`).
    The flow's shared machine is triggered through :meth:`trigger`, :meth:`enter`
    and :meth:`exit`; nothing per user outlives the turn.
    """

    __slots__ = ("ctx", "flow", "state")

    def __init__(self, flow: Flow, state: str, ctx: Any) -> None:
        self.flow = flow
        self.state = state
        self.ctx = ctx

    @property
    def stored(self) -> str:
        """The state as the store keeps it: ``"<flow>:<state>"``."""
        return f"{self.flow.name}:{self.state}"

    @property
    def finished(self) -> bool:
        """True in one of the flow's final states."""
        return self.state in self.flow.final

    @property
    def allowed(self) -> tuple[str, ...]:
        """The triggers allowed from the current state."""
        return self.flow.allowed_triggers(self.state)

    async def trigger(self, trigger: str, kwargs: Mapping[str, Any]) -> bool:
        """Fire ``trigger``; True when a transition happened (False when a condition said no).

        Raises :class:`InvalidTrigger` when the current state does not allow it.
        """
        flow = self.flow
        if trigger not in flow.allowed_triggers(self.state):
            raise InvalidTrigger(flow.name, self.state, trigger, self.allowed)
        result: bool = await flow._machine.events[trigger].trigger(self, **kwargs)
        return result

    async def enter(self) -> None:
        """Run the current state's ``on_enter`` callbacks."""
        machine = self.flow._machine
        state = machine.get_state(self.state)
        await state.enter(AsyncEventData(state, None, machine, self, args=(), kwargs={}))

    async def exit(self) -> None:
        """Run the current state's ``on_exit`` callbacks."""
        machine = self.flow._machine
        state = machine.get_state(self.state)
        await state.exit(AsyncEventData(state, None, machine, self, args=(), kwargs={}))


def _adapt(fn: Callback, where: str, what: str) -> Callback:
    """Turn ``fn(ctx[, **kwargs])`` into a transitions callback taking EventData."""
    if not callable(fn):
        raise DefinitionError(f"{what} must be a function of (ctx), not {fn!r}", where)
    try:
        params = inspect.signature(fn).parameters.values()
        takes_kwargs = any(p.kind is p.VAR_KEYWORD or p.kind is p.KEYWORD_ONLY for p in params)
    except (TypeError, ValueError):
        takes_kwargs = False
    if inspect.iscoroutinefunction(fn):

        async def run_async(event: EventData) -> Any:
            kwargs = event.kwargs if takes_kwargs else {}
            return await fn(_ctx_of(event), **kwargs)

        return run_async

    def run(event: EventData) -> Any:
        kwargs = event.kwargs if takes_kwargs else {}
        return fn(_ctx_of(event), **kwargs)

    return run


def _seconds(value: Any, what: str, where: str) -> float | None:
    """A timeout given as seconds or a timedelta, checked to be positive."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DefinitionError(f"{what} must be positive (seconds or a timedelta)", where)
    return float(value)


def _ctx_of(event: EventData) -> Any:
    model = cast(FlowModel, event.model)
    return model.ctx


def _listify(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


class Flow(Router):
    """A conversation state machine whose handlers bind to its states.

    ``states``: names, :class:`State` objects or dicts with ``name``,
    ``on_enter``, ``on_exit``. ``transitions``: tuples ``(trigger, source,
    dest)`` or dicts with ``trigger``, ``source`` (a state, a list, or
    ``"*"``), ``dest`` (``None`` for an internal transition) and the callback
    keys. ``initial`` defaults to the first state. Entering a state listed in
    ``final`` ends the flow. ``timeout`` (seconds or a timedelta) ends the
    flow after that much silence (a state may set its own:
    ``State("address", timeout=600)``): a timer is armed on entering each
    state and re-armed by every message, and when it fires,
    ``on_timeout(ctx)`` runs as a turn of the user (its replies are sent at
    the deadline) and the user leaves the flow.
    """

    def __init__(
        self,
        name: str,
        states: Sequence[str | State | Mapping[str, Any]],
        transitions: Iterable[Sequence[Any] | Mapping[str, Any]] = (),
        *,
        initial: str | None = None,
        final: Iterable[str] = (),
        timeout: float | timedelta | None = None,
        on_timeout: Callback | None = None,
    ) -> None:
        where = caller_location()
        super().__init__(name)
        if not isinstance(name, str) or not name or ":" in name or name != name.strip():
            raise DefinitionError(
                f"flow name {name!r} must be a non-empty string without ':'", where
            )
        self.where = where
        state_defs = [self._state_def(s, where) for s in states]
        if not state_defs:
            raise DefinitionError(f"flow {name!r} needs at least one state", where)
        self.state_names: tuple[str, ...] = tuple(d["name"] for d in state_defs)
        if len(set(self.state_names)) != len(self.state_names):
            raise DefinitionError(f"flow {name!r} lists a state twice: {self.state_names}", where)
        self.initial = initial if initial is not None else self.state_names[0]
        self._require_state(self.initial, "initial", where)
        self.final = frozenset(final)
        for state in self.final:
            self._require_state(state, "final", where)
        self.timeout: float | None = _seconds(timeout, f"flow {name!r}: timeout", where)
        self._timeouts: dict[str, float | None] = {
            d["name"]: (
                self.timeout
                if d.get("timeout") is None
                else _seconds(d["timeout"], f"flow {name!r}, state {d['name']!r}: timeout", where)
            )
            for d in state_defs
        }
        if on_timeout is not None and not callable(on_timeout):
            raise DefinitionError(
                f"on_timeout must be a function of (ctx), not {on_timeout!r}", where
            )
        self.on_timeout = on_timeout
        self.transition_defs = [self._transition_def(t, where) for t in transitions]
        self._machine = SequentialMachine(
            model=None,
            states=[self._machine_state(d, where) for d in state_defs],
            transitions=[self._machine_transition(t, where) for t in self.transition_defs],
            initial=self.initial,
            auto_transitions=False,
            send_event=True,
            name=f"flow:{name}",
        )
        self.triggers: tuple[str, ...] = tuple(
            dict.fromkeys(t["trigger"] for t in self.transition_defs)
        )
        self._allowed: dict[str, tuple[str, ...]] = {
            s: tuple(self._machine.get_triggers(s)) for s in self.state_names
        }

    # -- definition ----------------------------------------------------------

    def _state_def(self, state: str | State | Mapping[str, Any], where: str) -> dict[str, Any]:
        if isinstance(state, str):
            out: dict[str, Any] = {"name": state}
        elif isinstance(state, State):
            out = {"name": state.name, "on_enter": state.on_enter, "on_exit": state.on_exit}
            out["timeout"] = state.timeout
        elif isinstance(state, Mapping) and isinstance(state.get("name"), str):
            unknown = set(state) - {"name", "timeout", *_STATE_CALLBACK_KEYS}
            if unknown:
                raise DefinitionError(
                    f"state {state['name']!r}: unknown keys {sorted(unknown)}", where
                )
            out = dict(state)
        else:
            raise DefinitionError(
                f"a state is a name, a State or a dict with 'name', not {state!r}", where
            )
        if not out["name"] or ":" in out["name"] or out["name"] == "*":
            raise DefinitionError(
                f"state name {out['name']!r} must be non-empty, without ':'", where
            )
        return out

    def _require_state(self, state: Any, role: str, where: str) -> None:
        if state not in self.state_names:
            raise DefinitionError(
                f"flow {self.name!r}: {role} state {state!r} is not one of its states "
                f"{list(self.state_names)}",
                where,
            )

    def _transition_def(
        self, spec: Sequence[Any] | Mapping[str, Any], where: str
    ) -> dict[str, Any]:
        if isinstance(spec, Mapping):
            out = dict(spec)
        elif isinstance(spec, list | tuple) and len(spec) in (3, 4):
            out = {"trigger": spec[0], "source": spec[1], "dest": spec[2]}
            if len(spec) == 4:
                if not isinstance(spec[3], Mapping):
                    raise DefinitionError(
                        f"the 4th item of {spec!r} must be a dict of options", where
                    )
                out.update(spec[3])
        else:
            raise DefinitionError(
                f"a transition is (trigger, source, dest) or a dict, not {spec!r}", where
            )
        unknown = set(out) - {"trigger", "source", "dest", *_CALLBACK_KEYS}
        if unknown:
            raise DefinitionError(
                f"transition {out.get('trigger')!r}: unknown keys {sorted(unknown)}", where
            )
        trigger = out.get("trigger")
        if not isinstance(trigger, str) or not trigger.isidentifier() or trigger.startswith("_"):
            raise DefinitionError(f"trigger {trigger!r} must be a name like 'pick_size'", where)
        if trigger in _RESERVED:
            raise DefinitionError(f"trigger {trigger!r} clashes with a flow control method", where)
        if "source" not in out or "dest" not in out:
            raise DefinitionError(f"transition {trigger!r} needs 'source' and 'dest'", where)
        sources = out["source"]
        if sources != "*":
            for source in _listify(sources):
                self._require_state(source, f"transition {trigger!r}: source", where)
        if out["dest"] is not None:
            self._require_state(out["dest"], f"transition {trigger!r}: dest", where)
        return out

    def _machine_state(self, definition: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": definition["name"]}
        for key in _STATE_CALLBACK_KEYS:
            callbacks = _listify(definition.get(key))
            if callbacks:
                out[key] = [
                    _adapt(cb, where, f"{key} of {definition['name']!r}") for cb in callbacks
                ]
        return out

    def _machine_transition(self, definition: dict[str, Any], where: str) -> dict[str, Any]:
        out = {k: definition[k] for k in ("trigger", "source", "dest")}
        for key in _CALLBACK_KEYS:
            callbacks = _listify(definition.get(key))
            if callbacks:
                what = f"{key} of transition {definition['trigger']!r}"
                out[key] = [_adapt(cb, where, what) for cb in callbacks]
        return out

    def _state_keys(self, state: Any, where: str) -> tuple[str, ...]:
        if state is ANY:
            return (flow_wide_key(self.name),)
        if state is None:
            raise DefinitionError(
                f"state=None means 'in no flow'; register that handler on a Router or the Bot, "
                f"not on flow {self.name!r}",
                where,
            )
        values = [state] if isinstance(state, str) else list(state)
        for value in values:
            self._require_state(value, "handler", where)
        return tuple(f"{self.name}:{value}" for value in values)

    # -- running -------------------------------------------------------------

    @property
    def held_between_turns(self) -> int:
        """What the flow's one shared machine holds for users: 0 (nothing outlives a turn)."""
        return len(self._machine.models) + len(self._machine.async_tasks)

    def allowed_triggers(self, state: str) -> tuple[str, ...]:
        """The triggers that can fire from ``state``."""
        return self._allowed.get(state, ())

    def timeout_for(self, state: str) -> float | None:
        """The inactivity timeout in ``state``: its own, else the flow's (None: none)."""
        return self._timeouts.get(state, self.timeout)

    def expired(self, last_active: float | None, now: float, state: str | None = None) -> bool:
        """True when the inactivity timeout (of ``state``) has passed since ``last_active``."""
        timeout = self.timeout if state is None else self.timeout_for(state)
        return timeout is not None and last_active is not None and now - last_active > timeout

    def model(self, state: str, ctx: Any) -> FlowModel:
        """A model at ``state`` whose callbacks receive ``ctx``: one user, one turn."""
        return FlowModel(self, state, ctx)

    async def start(self, ctx: Any, state: str | None = None) -> None:
        """Put the user in this flow at ``state`` (default: the initial one).

        The same as ``await ctx.flow.start(flow, state)``.
        """
        await ctx.flow.start(self, state)


_RESERVED = frozenset(
    {"trigger", "start", "finish", "name", "state", "active", "allowed", "triggers"}
)
