"""Plugins: packages that add handlers to a bot through an entry point.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."botkit.plugins"]
    optout = "my_package:plugin"

where ``plugin`` is a :class:`Plugin`, a :class:`~botkit.Router`, or a function
returning either (preferred: each bot then gets its own router). A bot enables
plugins by name: ``Bot(plugins=["optout"])`` or ``BOTKIT_PLUGINS=optout,other``.
Plugin handlers run before the bot's own, so a plugin such as opt-out sees
every message first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from botkit._errors import BotkitError
from botkit._router import Router

GROUP = "botkit.plugins"


class UnknownPlugin(BotkitError, LookupError):
    """A plugin name that no installed package provides."""


class InvalidPlugin(BotkitError, TypeError):
    """An entry point that does not lead to a Plugin or a Router."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """A plugin: a router plus optional start-up and shutdown hooks."""

    router: Router
    on_startup: Callable[[], Awaitable[Any]] | None = None
    on_shutdown: Callable[[], Awaitable[Any]] | None = None
    name: str = ""


def installed() -> dict[str, EntryPoint]:
    """The installed plugins, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_plugin(name: str) -> Plugin:
    """Load the plugin called ``name``; :class:`UnknownPlugin` lists the installed ones."""
    available = installed()
    entry = available.get(name)
    if entry is None:
        names = ", ".join(sorted(available)) or "none"
        raise UnknownPlugin(
            f"no botkit plugin named {name!r} is installed (installed: {names}); "
            f"install the package that provides it or fix the name in Bot(plugins=...) "
            f"or BOTKIT_PLUGINS"
        )
    target = entry.load()
    if callable(target) and not isinstance(target, Router | Plugin):
        target = target()
    if isinstance(target, Router):
        return Plugin(router=target, name=name)
    if isinstance(target, Plugin):
        return Plugin(target.router, target.on_startup, target.on_shutdown, name)
    raise InvalidPlugin(
        f"plugin {name!r} ({entry.value}) gives {type(target).__name__}; "
        "it must be a botkit.Plugin, a botkit.Router, or a function returning one"
    )


def resolve_plugins(names: Iterable[str]) -> list[Plugin]:
    """Load each named plugin once, in order (duplicates and blanks ignored)."""
    seen: dict[str, Plugin] = {}
    for raw in names:
        name = raw.strip()
        if name and name not in seen:
            seen[name] = load_plugin(name)
    return list(seen.values())
