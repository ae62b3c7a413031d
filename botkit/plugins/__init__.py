"""Plugins: packages that add handlers to a bot through an entry point.

Discovery lives in :mod:`botkit._plugins`; the plugins botkit ships live here:

- :mod:`botkit.plugins.optout`: "STOP" unsubscribes a user, "START" brings them
  back (``Bot(plugins=["optout"])``).
"""

from botkit._plugins import GROUP, InvalidPlugin, Plugin, UnknownPlugin, installed

__all__ = ["GROUP", "InvalidPlugin", "Plugin", "UnknownPlugin", "installed"]
