"""Where in the user's code something happened: a definition, an exception."""

from __future__ import annotations

import os
import sys
import traceback

from botkit._errors import BotkitError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_location() -> str:
    """``file:line`` of the first stack frame outside botkit (the bot's own code)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR) and "importlib" not in filename:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


def raised_at(exc: BaseException) -> str:
    """``file:line in function`` where ``exc`` was raised (paths relative to the cwd).

    The innermost frame of the traceback; ``<unknown>`` when it has none.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "<unknown>"
    frame = frames[-1]
    path = frame.filename
    here = os.getcwd() + os.sep
    if path.startswith(here):
        path = path[len(here) :]
    return f"{path}:{frame.lineno} in {frame.name}"


class DefinitionError(BotkitError, TypeError):
    """A bot, router or flow definition is wrong: raised where it is written, not at run time.

    The message ends with the file and line of the definition.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where or caller_location()
        super().__init__(f"{message} (at {self.where})")
