"""One retry policy: exponential backoff with jitter, bounded.

Every path of botkit that tries again after a failure asks a
:class:`RetryPolicy` how long to wait: the provider client, the outbox
worker (sends, acknowledgements, its loop), the 2301 retry of a throttled
message, the timer worker, the store's wake-up listener, the service's
start-up, the agent webhook, media downloads and ``botkit run`` restarting a
worker that failed to start. The service builds them all
from one set of settings (``BOTKIT_RETRY_BASE_DELAY``,
``BOTKIT_RETRY_MAX_DELAY``, ``BOTKIT_RETRY_JITTER``). Retries are never
nested: in the service the client tries each request once and the outbox
worker is the one that tries again.

Why not a retry library (tenacity, stamina): they drive one call to success
or give up. botkit's retrying paths are long-lived loops that must sleep
interruptibly (a stopping worker does not wait out a backoff), reset after a
success and pick the delay per failure (a refused credential waits the
longest, a batch settled by receipts not at all). A library would replace
only the delay formula below, at the cost of a dependency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from botkit._errors import BotkitError


class RetryPolicyError(BotkitError, ValueError):
    """A :class:`RetryPolicy` was given impossible values; the message says which."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before trying again, and how many times to try.

    Before retry *n* (0 for the first retry) the wait is a random time in
    ``[ceiling * (1 - jitter), ceiling]`` with
    ``ceiling = min(max_delay, base_delay * 2**n)``. ``jitter=1`` (the
    default) is "full jitter": processes that failed together do not retry
    together. ``jitter=0`` waits exactly the ceiling.

    ``attempts`` counts every try, the first included; None means until
    stopped (the outbox worker never drops a message it was given).

    >>> policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=3.0, jitter=0.0)
    >>> [policy.delay(n) for n in range(4)]
    [1.0, 2.0, 3.0, 3.0]
    >>> policy.gives_up(after=3)
    True
    """

    attempts: int | None = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise RetryPolicyError("RetryPolicy.attempts must be at least 1 (or None: no limit)")
        if self.base_delay < 0 or self.max_delay < 0:
            raise RetryPolicyError("RetryPolicy delays cannot be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise RetryPolicyError("RetryPolicy.jitter must be between 0 (none) and 1 (full)")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0 ** min(max(retry, 0), 32))

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        ceiling = self.ceiling(retry)
        return ceiling - random.uniform(0.0, ceiling * self.jitter)

    def gives_up(self, *, after: int) -> bool:
        """True when ``after`` failed tries use up the attempts (never without a limit)."""
        return self.attempts is not None and after >= self.attempts

    def longest_backoffs(self) -> float:
        """The most all the waits between attempts add up to (infinite without a limit)."""
        if self.attempts is None:
            return float("inf")
        return sum(self.ceiling(retry) for retry in range(self.attempts - 1))


__all__ = ["RetryPolicy", "RetryPolicyError"]
