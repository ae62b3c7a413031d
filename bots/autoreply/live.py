"""The rules in force, re-read without a restart.

A running service re-reads its rules file when the file changes (checked
every ``poll`` seconds: its modification time, size and inode, so an editor's
save and a Kubernetes ConfigMap update are both seen) and on SIGHUP. Each
worker process does so on its own, so every worker follows the file.

A file that does not check keeps the rules in force: each problem is one log
line (the file, the line, what is wrong) and nothing else changes::

    live = LiveRules.from_file("/etc/botkit/autoreply.toml")   # raises on a bad file
    live.rules                                                  # what answers now
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from bots.autoreply.rules import Rules, RulesError, counted, load_rules

__all__ = ["POLL_SECONDS", "LiveRules"]

log = logging.getLogger("bots.autoreply")

POLL_SECONDS = 2.0
"""How often a running service looks at its rules file."""

_Signature = tuple[int, int, int] | None


class LiveRules:
    """:class:`Rules` that follow their file: on change and on SIGHUP, while started."""

    def __init__(self, rules: Rules, path: str | Path | None = None, *, poll: float = POLL_SECONDS):
        self.rules = rules
        self.path = Path(path) if path is not None else None
        self.poll = poll
        self._seen = self._signature()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_file(cls, path: str | Path, *, poll: float = POLL_SECONDS) -> LiveRules:
        """Load ``path`` (:class:`RulesError` when it does not check) and follow it."""
        return cls(load_rules(path), path, poll=poll)

    def _signature(self) -> _Signature:
        if self.path is None:
            return None
        try:
            found = os.stat(self.path)  # follows symlinks: a ConfigMap swaps its target
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    def reload(self, why: str) -> bool:
        """Re-read the file now; True when new rules are in force.

        On a problem the rules in force stay, and each problem is one ERROR line.
        """
        if self.path is None:
            return False
        self._seen = self._signature()
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            for problem in str(exc).splitlines():
                log.error("rules not reloaded (%s), the previous ones stay: %s", why, problem)
            return False
        self.rules = rules
        log.info(
            "rules reloaded from %s (%s): %s", self.path, why, counted(len(rules.rules), "rule")
        )
        return True

    def check(self) -> bool:
        """Reload if the file changed since it was last read; True when it was reloaded."""
        if self.path is None or self._signature() == self._seen:
            return False
        return self.reload("the file changed")

    async def start(self) -> None:
        """Follow the file: a poll task, and a SIGHUP handler where signals can be had."""
        if self.path is None or self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._watch(), name="autoreply-rules-watch")
        # Only the main thread of a process can take signals (not a test's
        # thread, not Windows); the file watch still works there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            self._loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

    async def stop(self) -> None:
        """Stop following the file."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._loop is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
                self._loop.remove_signal_handler(signal.SIGHUP)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                self.check()
            except Exception:  # a watch that dies would silently freeze the rules
                log.exception("checking the rules file failed; trying again")
