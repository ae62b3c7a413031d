"""Helpers the project's tests share: a free port, and polling for a condition with a deadline.

Tests wait for a condition, never for a fixed time: :func:`wait_for` (async)
and :func:`poll` (sync) re-check it until it holds and fail, naming what
did not happen, after ``within`` seconds. Long work whose pace depends on the
machine's load waits with :func:`while_progressing`: it fails only when the
work stops advancing, not after a fixed total.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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


async def while_progressing(
    work: Awaitable[T], progress: Callable[[], int], *, idle: float, what: str
) -> T:
    """Await ``work`` as long as ``progress()`` keeps growing; fail after ``idle`` s without growth.

    For work measured in thousands of steps on a shared machine: a loaded run
    takes longer but keeps moving, a stuck one stops moving and fails, naming
    ``what`` and how far it got.
    """
    task = asyncio.ensure_future(work)
    seen, since = progress(), time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            now = progress()
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > idle:
                raise AssertionError(f"{what}: stuck at {seen}, no progress for {idle}s")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
