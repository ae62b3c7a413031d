"""Every use of another package's private or undocumented API, fenced in one place.

Each section names the versions it was tested with; ``pyproject.toml`` bounds
the dependency below the next release that could change it. When a package
is upgraded, this file is what to read (and the tests that cover each part
are named below). Heavy packages are imported only where a part is used, so
``import botkit`` does not load uvicorn.

No other module of botkit touches a private name of another package
(``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Generator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from transitions.extensions.asyncio import (
    AsyncCondition,
    AsyncEventData,
    AsyncMachine,
    AsyncTransition,
)

if TYPE_CHECKING:
    import uvicorn
    from prometheus_client import Histogram


# -- argparse (the standard library) ------------------------------------------------

#: The type ``ArgumentParser.add_subparsers()`` returns, which argparse names privately.
SubParsers = argparse._SubParsersAction


# -- transitions: tested with 0.9.3 (pyproject: transitions<0.10) -------------------------
# tests/test_flow.py covers both overrides (conditions stop at the first no;
# async callbacks run one after another, in order).


class SequentialTransition(AsyncTransition):
    """Conditions are checked in order and stop at the first that says no, as in a sync Machine.

    Overrides ``AsyncTransition._eval_conditions`` (private), which gathers them.
    """

    async def _eval_conditions(self, event_data: AsyncEventData) -> bool:  # type: ignore[override]
        for condition in self.conditions:
            if not await cast(AsyncCondition, condition).check(event_data):
                return False
        return True


class SequentialMachine(AsyncMachine):
    """An AsyncMachine that runs a transition's callbacks one after another, in order.

    ``transitions`` gathers them concurrently (``AsyncMachine.await_all``,
    undocumented): two async ``after`` callbacks would interleave their
    replies, and when one raised the others would run on past the failed turn.
    """

    transition_cls = SequentialTransition

    @staticmethod
    async def await_all(
        callables: list[Callable[..., Coroutine[Any, Any, bool | None]]],
    ) -> list[bool | None]:
        return [await call() for call in callables]


# -- prometheus_client: tested with 0.26.0 (pyproject: prometheus-client<0.27) ------------
# A histogram's bucket bounds and values, to add many observations in one locked
# write each (botkit._metrics holds a turn's updates and flushes them four times a
# second). The public route, a custom collector, would not add up several
# workers' numbers in multiprocess mode, which reads the values' shared files.
# tests/service/test_metrics.py covers it.


def histogram_bounds(histogram: Histogram) -> list[float] | None:
    """The upper bounds of ``histogram``'s buckets, or None when its internals differ."""
    bounds: list[float] | None = getattr(histogram, "_upper_bounds", None)
    if bounds is None or not hasattr(histogram, "_buckets") or not hasattr(histogram, "_sum"):
        return None
    return bounds


def histogram_add(histogram: Histogram, total: float, per_bucket: Sequence[float]) -> None:
    """Add ``total`` to the histogram's sum and ``per_bucket[i]`` to bucket ``i``."""
    histogram._sum.inc(total)
    for bucket, n in zip(histogram._buckets, per_bucket, strict=True):
        if n:
            bucket.inc(n)


# -- uvicorn: tested with 0.54 (pyproject: uvicorn<0.55) ------------------------------------
# Embedding a server in a running event loop (tests, botkit dev) with a prompt
# stop: uvicorn's public ``Server.serve()`` checks for exit every 0.1 s and
# waits for connections in 0.1 s steps, which adds up when tests start and stop
# a server each. Overrides the undocumented ``main_loop``, ``shutdown`` and
# ``capture_signals``. tests/devino/test_serving.py and tests/service cover it.


def embedded_server(config: uvicorn.Config) -> tuple[uvicorn.Server, Callable[[], None]]:
    """A uvicorn server for embedding (no signal handling, a prompt stop), and its stop."""
    server = _embedded_server_class()(config)
    stop: Callable[[], None] = server.stop  # type: ignore[attr-defined]
    return server, stop


@cache
def _embedded_server_class() -> type[uvicorn.Server]:
    import uvicorn

    class _EmbeddedServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self._stopping = asyncio.Event()

        def stop(self) -> None:
            self.should_exit = True
            self._stopping.set()

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # pytest or the host command owns SIGINT/SIGTERM; uvicorn would take them over.
            yield

        async def main_loop(self) -> None:
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864_000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.1)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn's own steps (stop accepting, close idle connections, let the
            # requests in flight finish, then the lifespan's shutdown), polled faster.
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            state = self.server_state
            try:
                async with asyncio.timeout(self.config.timeout_graceful_shutdown or 5):
                    # uvicorn signals no event when its last connection closes: poll.
                    while state.connections or state.tasks:  # noqa: ASYNC110
                        await asyncio.sleep(0.002)
            except TimeoutError:
                for task in state.tasks:
                    task.cancel()
            for server in self.servers:
                await server.wait_closed()
            await self.lifespan.shutdown()

    return _EmbeddedServer
