"""A store outage in the log: one line when it starts, one when it ends.

While Redis is down every turn, status callback and sender round fails the
same way; a line (or a traceback) for each would bury everything else. An
:class:`OutageLog` writes one WARNING line when failures start, at most one
more per ``every`` seconds while they last (with how many there were), and
one INFO line when the store answers again::

    outage = outage_log(store)          # one per store, shared in the process
    try:
        await store.outbox_read(...)
    except StorageUnavailable as exc:
        outage.failed(exc)
    else:
        outage.recovered()
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

__all__ = ["OutageLog", "outage_log"]

log = logging.getLogger("botkit.store")


class OutageLog:
    """Log the failures of one dependency as an outage: start, reminders, end."""

    def __init__(
        self,
        what: str = "the conversation store",
        *,
        every: float = 30.0,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.every = every
        self.logger = logger
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self._last_line = 0.0
        self._unlogged = 0

    @property
    def ongoing(self) -> bool:
        """True between the first failure and the next success."""
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """Count a failure; write a line if it starts an outage or ``every`` seconds passed."""
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since = self._last_line = now
            self._unlogged = 0
            self.logger.warning(
                "%s is unavailable: %s; retrying (one line every %.0fs while it lasts)",
                self.what,
                exc,
                self.every,
            )
            return
        self._unlogged += 1
        if now - self._last_line >= self.every:
            self.logger.warning(
                "%s is still unavailable after %.0fs (%d failures since the last line): %s",
                self.what,
                now - self.since,
                self._unlogged,
                exc,
            )
            self._last_line = now
            self._unlogged = 0

    def recovered(self) -> None:
        """Note a success; write one line if it ends an outage."""
        if self.since is None:
            return
        self.logger.info(
            "%s answers again after %.1fs (%d failures)",
            self.what,
            self.clock() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0


_BY_STORE: weakref.WeakKeyDictionary[object, OutageLog] = weakref.WeakKeyDictionary()


def outage_log(store: object) -> OutageLog:
    """The :class:`OutageLog` of ``store``, shared by everything in the process that uses it."""
    found = _BY_STORE.get(store)
    if found is None:
        found = _BY_STORE[store] = OutageLog()
    return found
