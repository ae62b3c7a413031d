"""Flow diagrams drawn from a flow's real definition (``botkit graph``).

The states and transitions a :class:`~botkit.Flow` was declared with are
handed to ``transitions``' own diagram support (a ``GraphMachine`` with no
callbacks: the diagram needs names, not behaviour), so the picture cannot
drift from the machine the bot runs::

    from botkit.devtools._graph import mermaid
    print(mermaid(order))          # Mermaid text, no extra dependency

    render(order, "svg")           # bytes; needs the ``[graph]`` extra
                                   # and the ``dot`` program (Debian: graphviz)

Edges are labelled with their triggers (and ``[condition]`` names), the
initial state has an arrow from ``[*]``, final states an arrow to ``[*]``
(Mermaid) or a double border (images).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal, cast

from transitions import State as _MachineState
from transitions.extensions.diagrams import GraphMachine

from botkit._bot import Bot
from botkit._dispatch import flows_of
from botkit._errors import BotkitError
from botkit._flow import Flow

__all__ = ["FORMATS", "GraphUnavailable", "bot_flows", "mermaid", "render"]

FORMATS = ("mermaid", "svg", "png")
"""The formats ``botkit graph`` writes."""


def _extra_hint() -> str:
    """How to add the ``[graph]`` extra to this installation of botkit."""
    # Imported from a checkout (an editable install, or the tests): pip
    # installs the extra from the checkout, not from the package index.
    if (Path(__file__).resolve().parents[2] / "pyproject.toml").is_file():
        return "pip install -e '.[graph]' in your botkit checkout"
    return "pip install 'botkit[graph]'"


GRAPHVIZ_HELP = (
    f"install Graphviz for svg/png: {_extra_hint()} and the dot program "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), "
    "or use --format mermaid, which needs neither"
)

# Mermaid state ids: no spaces, dashes, colons or braces, and not a keyword.
_MERMAID_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MERMAID_KEYWORDS = frozenset({"default", "state", "class", "classdef", "direction", "note", "end"})


class GraphUnavailable(BotkitError, RuntimeError):
    """Images need Graphviz (the Python package and the ``dot`` program); the message says how."""


class _LabelledState(_MachineState):
    """A machine state that carries its display label (the flow's own state name)."""

    def __init__(self, *args: Any, label: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label = label


_STYLES: dict[str, Any] = dict(GraphMachine.style_attributes)
_STYLES["node"] = {
    **cast(dict[str, Any], GraphMachine.style_attributes["node"]),
    "final": {"fillcolor": "#e8f5e9", "color": "black", "peripheries": "2"},
}


class _FlowGraphMachine(GraphMachine):
    state_cls = _LabelledState
    style_attributes = _STYLES


def bot_flows(bot: Bot) -> list[Flow]:
    """The flows of ``bot``: its own and those of the plugins it enables, by name order kept."""
    from botkit._plugins import UnknownPlugin, resolve_plugins

    flows: dict[str, Flow] = {}
    try:
        plugins = resolve_plugins(bot.plugins)
    except UnknownPlugin:
        plugins = []  # the bot's own flows can still be drawn
    for root in (*(p.router for p in plugins), bot):
        for flow in flows_of(root):
            flows.setdefault(flow.name, flow)
    return list(flows.values())


def _ids(flow: Flow) -> dict[str, str]:
    """A diagram-safe id for each state name (the name itself when it is safe)."""
    ids: dict[str, str] = {}
    for index, name in enumerate(flow.state_names):
        safe = _MERMAID_ID.match(name) and name.lower() not in _MERMAID_KEYWORDS
        ids[name] = name if safe else f"state_{index}"
    return ids


def _names(callbacks: Any) -> list[str]:
    if callbacks is None:
        return []
    items = callbacks if isinstance(callbacks, list | tuple) else [callbacks]
    return [getattr(c, "__name__", None) or type(c).__name__ for c in items]


Engine = Literal["mermaid", "graphviz"]


def _machine(flow: Flow, engine: Engine) -> tuple[GraphMachine, dict[str, str]]:
    ids = _ids(flow)
    states = [
        {"name": ids[name], "label": name, "final": name in flow.final} for name in flow.state_names
    ]
    transitions = []
    for definition in flow.transition_defs:
        source = definition["source"]
        sources = source if source == "*" else [ids[s] for s in _as_list(source)]
        transition: dict[str, Any] = {
            "trigger": definition["trigger"],
            "source": sources,
            "dest": ids[definition["dest"]] if definition["dest"] is not None else None,
        }
        # Names only: the diagram shows which conditions guard an edge, never runs them.
        for key in ("conditions", "unless"):
            names = _names(definition.get(key))
            if names:
                transition[key] = names
        transitions.append(transition)
    machine = _FlowGraphMachine(
        model=None,
        states=states,
        transitions=transitions,
        initial=ids[flow.initial],
        auto_transitions=False,
        show_conditions=True,
        graph_engine=engine,
        # Mermaid reads the title block as YAML front matter: give it a key.
        title=f"title: flow {flow.name}" if engine == "mermaid" else f"flow {flow.name}",
    )
    return machine, ids


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _graph(flow: Flow, engine: Engine) -> Any:
    machine, ids = _machine(flow, engine)
    graph = machine.graph_cls(machine)  # a fresh graph: no state highlighted as "active"
    for name in flow.final:
        graph.set_node_style(ids[name], "final")
    return graph.get_graph(), ids


def mermaid(flow: Flow) -> str:
    """The flow as a Mermaid ``stateDiagram-v2`` (paste it into Markdown in a mermaid block)."""
    diagram, ids = _graph(flow, "mermaid")
    lines: list[str] = diagram.source.rstrip("\n").splitlines()
    lines.extend(f"  {ids[name]} --> [*]" for name in flow.state_names if name in flow.final)
    return "\n".join(lines) + "\n"


def render(flow: Flow, fmt: str) -> bytes:
    """The flow drawn as an image (``"svg"`` or ``"png"``) by Graphviz's ``dot``.

    Raises :class:`GraphUnavailable` when the ``graphviz`` package or the
    ``dot`` program is missing.
    """
    if fmt not in ("svg", "png"):
        raise ValueError(f"render() draws svg or png, not {fmt!r}; use mermaid() for text")
    try:  # an optional extra (botkit[graph]), without type hints
        graphviz = importlib.import_module("graphviz")
    except ImportError:
        raise GraphUnavailable(
            f"the graphviz Python package is not installed: {GRAPHVIZ_HELP}"
        ) from None
    diagram, ids = _graph(flow, "graphviz")
    # The initial state's arrow, which transitions' graphviz backend leaves out.
    diagram.node(
        "__start__", label="", shape="point", width="0.15", style="filled", fillcolor="black"
    )
    diagram.edge("__start__", ids[flow.initial])
    try:
        data: bytes = diagram.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphUnavailable(f"the dot program was not found on PATH: {GRAPHVIZ_HELP}") from None
    return data
