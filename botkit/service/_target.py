"""Where a bot is: ``MODULE[:ATTR]``, loaded the way ``botkit run`` loads it."""

from __future__ import annotations

import importlib
import os
import sys

from botkit._bot import Bot
from botkit._errors import BotkitError


class BotLoadError(BotkitError):
    """``MODULE[:ATTR]`` does not lead to a Bot; the message says why."""


def load_bot(target: str) -> Bot:
    """Import ``MODULE[:ATTR]`` (ATTR defaults to ``bot``) and return the Bot there."""
    module_name, _, attr = target.partition(":")
    attr = attr or "bot"
    if not module_name:
        raise BotLoadError(f"{target!r} is not MODULE[:ATTR], e.g. bots.echo:bot")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise BotLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise BotLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    except Exception as exc:  # a bot built on first use (a module __getattr__) failed
        raise BotLoadError(
            f"cannot load {module_name}:{attr}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(found, Bot):
        raise BotLoadError(f"{module_name}:{attr} is a {type(found).__name__}, not a botkit.Bot")
    return found
