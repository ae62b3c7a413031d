"""Logging: one structured line per turn, as JSON or for the console.

Users are masked to their last four digits in every line botkit writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any, TextIO

from botkit._turn import TurnOutcome

turn_log = logging.getLogger("botkit.turn")

THIRD_PARTY_LOGGERS = ("transitions", "httpx", "httpcore", "hpack", "multipart", "watchfiles")
"""Loggers held at WARNING unless botkit logs at DEBUG."""


def mask(user: str) -> str:
    """``79031234567`` -> ``...4567``."""
    return f"...{user[-4:]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid and the record's ``fields``.

    ``pid`` tells apart the lines of ``botkit run --workers N``'s processes.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


# C0 and C1 control characters (and the Unicode line separators) as escapes: a
# value from the outside (a messageId, a user's text) cannot start a fake log line
# or move the terminal's cursor.
_CONTROL = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def escape_controls(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``...)."""
    return text.translate(_CONTROL)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level logger message key=value ...`` for a terminal.

    One record is one line: control characters in the message and the fields
    are escaped. Only a traceback (logged at DEBUG) spans several lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # many lines a second under load: one strftime each
            self._second = second
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
        stamp = self._stamp
        text = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        # One pass over the message and the fields (their names are ours, no controls).
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {escape_controls(text)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LoopBatchedHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the turn lines of one event-loop step together.

    Under load a step finishes several turns: their lines (logger
    ``botkit.turn`` at INFO or below) go out in one write when the step's
    callbacks are done, not one write (and flush) each. Every other line is
    written at once, after the lines held before it, so start-up, shutdown,
    warnings and errors are never held. The turn lines of the step a process
    is killed in (SIGKILL) may be lost.
    """

    batched = frozenset({turn_log.name})
    """The loggers whose INFO lines wait for the end of the loop step."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        # The loop a flush is due on (a loop closed before running it is replaced).
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record; hold a turn line until the end of the loop step."""
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        loop = None
        if record.name in self.batched and record.levelno < logging.WARNING:
            with contextlib.suppress(RuntimeError):  # no running loop: written at once
                loop = asyncio.get_running_loop()
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._lines.append(line)
            if loop is not None:
                if self._flush_on is not loop:
                    self._flush_on = loop
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        """Write the held lines in one write, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            if not self._lines:
                return super().flush()
            text = "".join(self._lines)
            self._lines.clear()
            # As StreamHandler does, a failing stream must not take the service down.
            with contextlib.suppress(Exception):
                self.stream.write(text)
            super().flush()


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Send botkit's (and uvicorn's) logs to stderr in ``fmt`` (``console`` or ``json``).

    At INFO a turn is one line; a failed handler adds one ERROR line with the
    exception and where it was raised (its traceback at DEBUG); a store outage
    is a line when it starts and one when it ends. Third-party libraries log
    from WARNING unless ``level`` is DEBUG.
    """
    handler = LoopBatchedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    # Neither format shows a record's thread, process or task name: not looked
    # up for every record (the logging HOWTO's "Optimization"). The pid stays.
    logging.logThreads = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # No access lines: the turn line says what happened, and a webhook's path
    # carries the secret token.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    # Libraries' INFO lines (a request to the provider, a flow's state change)
    # would drown the one line per turn: they show from WARNING, or at DEBUG.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def log_turn(outcome: TurnOutcome) -> None:
    """Write the one line a turn leaves: user (masked), kind, handler, outcome, duration."""
    if not turn_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "user": mask(outcome.user),
        "kind": outcome.kind,
        "handler": outcome.handler,
        "outcome": outcome.outcome,
        "replies": len(outcome.replies),
        "state": outcome.state,
        "ms": round(outcome.duration * 1000, 2),
        "error": repr(outcome.error) if outcome.error else None,
    }
    # makeRecord + handle: the same record as turn_log.info() would make, without
    # the stack walk that finds the caller (a line per turn is on the hot path).
    record = turn_log.makeRecord(
        turn_log.name,
        logging.INFO,
        __file__,
        0,
        "turn %s",
        (outcome.outcome,),
        None,
        extra={"fields": fields},
    )
    turn_log.handle(record)
