"""Logging: one structured line per turn, as JSON or for the console.

Users are masked to their last four digits in every line botkit writes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from botkit._turn import TurnOutcome

turn_log = logging.getLogger("botkit.turn")


def mask(user: str) -> str:
    """``79031234567`` -> ``...4567``."""
    return f"...{user[-4:]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS level logger message key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Send botkit's (and uvicorn's) logs to stderr in ``fmt`` (``console`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
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
    # One line per request to the provider would drown the one line per turn.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


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
