"""Helpers the project's tests share: a free port, and polling for a condition with a deadline.

Tests wait for a condition, never for a fixed time: :func:`wait_for` (async)
and :func:`poll` (sync) re-check it until it holds and fail, naming what
did not happen, after ``within`` seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 10.0,
    what: str = "the condition",
    every: float = 0.02,
) -> None:
    """Re-check ``condition`` (sync or async) until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within}s")
        await asyncio.sleep(every)


def poll(
    condition: Callable[[], bool], what: str, within: float = 60.0, every: float = 0.05
) -> None:
    """:func:`wait_for` for code outside an event loop (processes, servers started by a test)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within}s")
        time.sleep(every)
