"""Time sources: the system clock in production, a manual one in tests and dev mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as unix seconds."""

    def now(self) -> float:
        """Return the current time in unix seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to, for tests and the dev chat.

    It starts at the real time (or ``start``) and then follows the wall clock
    plus whatever offset ``advance`` added, unless ``frozen`` is set, in which
    case it stands still between calls to ``advance``::

        clock = ManualClock(frozen=True)
        clock.advance(hours=25)  # the user's 24-hour window is now closed

    Whatever waits on this clock's time (the memory store's locks) is told
    of each :meth:`advance` through :meth:`on_advance`.
    """

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        self._frozen = frozen
        self._base = time.time() if start is None else start
        self._origin = time.monotonic()
        self._offset = 0.0
        self._listeners: list[Callable[[], None]] = []

    def on_advance(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each :meth:`advance`; returns what stops that."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def now(self) -> float:
        """Return the clock's current time."""
        running = 0.0 if self._frozen else time.monotonic() - self._origin
        return self._base + running + self._offset

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0) -> float:
        """Move the clock forward and return the new time."""
        delta = seconds + 60.0 * minutes + 3600.0 * hours
        if delta < 0:
            raise ValueError("a clock only moves forward; pass a positive amount")
        self._offset += delta
        for callback in list(self._listeners):
            callback()
        return self.now()

    @property
    def offset(self) -> float:
        """How far the clock has been moved ahead of its natural course, in seconds."""
        return self._offset
