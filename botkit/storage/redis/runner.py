"""The batched script runner: the script calls of one event-loop step go out together.

Under load many turns call BEGIN or COMMIT at once: sending them as one
pipeline (one write, one connection, replies read in order) costs far less
client CPU than one command each. Each script stays atomic on its own; the
pipeline is not a transaction. :class:`ScriptRunner` also bounds the commands
in flight (:meth:`ScriptRunner.guard`) and names Redis failures as the
store's errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as rerr
from redis.asyncio.connection import AbstractConnection

from botkit.storage import _resp
from botkit.storage.base import StorageError, StorageUnavailable
from botkit.storage.redis.connection import mask, named_error
from botkit.storage.redis.scripts import Script


async def done(value: Any) -> Any:
    """Await a redis-py command (typed as maybe-awaitable, for its sync twin's sake)."""
    return await cast(Awaitable[Any], value)


@dataclass(slots=True)
class _Call:
    """A script call waiting for the next pipeline."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    result: asyncio.Future[Any]


class ScriptRunner:
    """Runs the store's scripts in per-step batches on a bounded number of connections.

    ``client`` is set by the store when it opens. At most ``max_connections``
    commands (batches or plain commands) are in flight at once; a caller that
    waits longer than ``socket_timeout`` for a slot gets
    :class:`StorageUnavailable`.
    """

    def __init__(
        self, *, url: str, prefix: str, socket_timeout: float, max_connections: int
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.client: aioredis.Redis | None = None
        self.url = url
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.max_connections = max_connections
        # Commands in flight, at most one per pooled connection: a burst of
        # turns queues here instead of failing with "Too many connections".
        self.slots = asyncio.Semaphore(max_connections)
        self._batch: list[_Call] = []
        self._background: set[asyncio.Task[Any]] = set()
        # The connections script batches go out on (see ``_exchange``).
        self._connections: set[AbstractConnection] = set()
        self._idle: list[AbstractConnection] = []

    @property
    def idle_connections(self) -> int:
        """Batch connections open and not in use right now."""
        return len(self._idle)

    def guard(self, doing: str) -> Guard:
        """``async with runner.guard(doing)``: a connection slot, and Redis errors named."""
        return Guard(self, doing)

    def named_error(self, doing: str, exc: BaseException) -> StorageError:
        """The store's named error for a Redis failure while ``doing``."""
        return named_error(self.url, self.prefix, doing, exc)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script; calls made in the same event-loop step share one pipeline."""
        assert self.client is not None, "open() the store first"
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._batch.append(call)
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        try:
            return await call.result
        except rerr.NoScriptError:
            # The server restarted or flushed its scripts: load it again, once.
            client = self.client
            await done(client.script_load(script.source))
            return await done(client.evalsha(script.sha, len(keys), *keys, *args))

    async def close(self) -> None:
        """Stop the batches in flight and close the batch connections."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task
        connections, self._connections, self._idle = self._connections, set(), []
        for connection in connections:
            with suppress(Exception):
                await connection.disconnect()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.ensure_future(self._run_batch(batch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_batch(self, batch: list[_Call]) -> None:
        try:
            payload = b"".join(_resp.pack_evalsha(c.script.sha, c.keys, c.args) for c in batch)
            results = await self._exchange(payload, len(batch))
        except BaseException as exc:
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(batch, results, strict=True):
            if call.result.done():
                continue
            if isinstance(result, BaseException):
                call.result.set_exception(result)
            else:
                call.result.set_result(result)

    async def _exchange(self, payload: bytes, count: int) -> list[Any]:
        """Send a packed batch on a connection of the runner's own and read its replies.

        The batch connections come from the client's pool settings but are
        kept here, idle ones on a stack: taking one costs a list pop, not the
        pool's lock. At most ``max_connections`` are busy at once (``guard``).
        """
        client = self.client
        if client is None:
            raise StorageUnavailable("the store is closed")
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._connections.add(connection)
        try:
            if not connection.is_connected or _resp.stale(connection):
                # Never connected, failed, or closed by the server while idle (a restart).
                await connection.disconnect(nowait=True)
                await connection.connect()  # type: ignore[no-untyped-call]
            results, reusable = await _resp.exchange(
                connection, payload, count, self.socket_timeout
            )
            if not reusable:
                await connection.disconnect(nowait=True)
        except BaseException:
            # A reply may still be on its way: this connection cannot be trusted again.
            with suppress(Exception):
                await connection.disconnect(nowait=True)
            raise
        finally:
            if connection in self._connections:  # not closed meanwhile
                self._idle.append(connection)
        return results


class Guard:
    """``async with runner.guard(doing)``: a connection slot, and Redis errors named.

    A class rather than a generator-based context manager: it is entered
    twice per turn, and this costs a fraction of what a generator does.
    """

    __slots__ = ("_doing", "_runner")

    def __init__(self, runner: ScriptRunner, doing: str) -> None:
        self._runner, self._doing = runner, doing

    async def __aenter__(self) -> None:
        runner = self._runner
        slots = runner.slots
        if not slots.locked():  # the usual case: nothing to wait for
            await slots.acquire()
            return
        try:
            async with asyncio.timeout(runner.socket_timeout):
                await slots.acquire()
        except TimeoutError:
            raise StorageUnavailable(
                f"could not {self._doing}: all {runner.max_connections} Redis connections of "
                f"this store stayed busy for {runner.socket_timeout:g}s. Redis at "
                f"{mask(runner.url)} is slow or hung, or max_connections is too small for the load"
            ) from None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        self._runner.slots.release()
        if isinstance(exc, rerr.RedisError):
            raise self._runner.named_error(self._doing, exc) from exc
