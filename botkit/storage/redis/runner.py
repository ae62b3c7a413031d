"""The batched script runner: the script calls of one event-loop step go out together.

Under load many turns call BEGIN or COMMIT at once: sending them as one
non-transactional redis-py pipeline (one write, one pooled connection, replies
read in order) costs far less client CPU than one command each. Each script
stays atomic on its own; the pipeline is not a transaction, and each call's
error is that call's alone: an argument that cannot be encoded, a script
error or a ``NOSCRIPT`` fails only its own call (``NOSCRIPT`` is answered by
loading the script and calling it once more).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from redis import exceptions as rerr
from redis.asyncio.cluster import RedisCluster

from botkit.storage.base import StorageError, StorageUnavailable
from botkit.storage.redis.connection import Client, closed_under_write, mask, named_error
from botkit.storage.redis.scripts import Script


async def done(value: Any) -> Any:
    """Await a redis-py command (typed as maybe-awaitable, for its sync twin's sake)."""
    return await cast(Awaitable[Any], value)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until each has ended (whatever it raised)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with suppress(BaseException):
            await task


@dataclass(slots=True)
class _Call:
    """A script call waiting for the next pipeline."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    result: asyncio.Future[Any]


def _encoded(values: Sequence[Any]) -> list[Any]:
    """Strings as UTF-8 bytes, now: a text that cannot be encoded fails its own call only."""
    return [v.encode() if type(v) is str else v for v in values]


class ScriptRunner:
    """Runs the store's scripts in per-step pipelines on the client's bounded pool.

    ``client`` is set by the store when it opens.
    """

    def __init__(
        self, *, url: str, prefix: str, socket_timeout: float, wait_replicas: int = 0
    ) -> None:
        self.client: Client | None = None
        self.url = url
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.wait_replicas = wait_replicas
        self._batch: list[_Call] = []
        self._restarted_at = -math.inf
        self._background: set[asyncio.Task[Any]] = set()

    def guard(self, doing: str) -> Guard:
        """``async with runner.guard(doing)``: Redis failures raised as the store's errors."""
        return Guard(self, doing)

    def named_error(self, doing: str, exc: BaseException) -> StorageError:
        """The store's named error for a Redis failure while ``doing``."""
        return named_error(self.url, self.prefix, doing, exc)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script; calls made in the same event-loop step share one pipeline."""
        if self.client is None:
            raise StorageUnavailable("the store is closed: open() it first")
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._batch.append(call)
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        try:
            return await call.result
        except rerr.NoScriptError:
            # The server restarted, flushed its scripts or failed over to a
            # replica with an empty script cache: load it again, once.
            client = self.client
            if client is None:
                raise
            await done(client.script_load(script.source))
            return await done(
                client.evalsha(script.sha, len(keys), *_encoded(keys), *_encoded(args))
            )

    async def run_all(
        self, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run a script once per (keys, args) call, all in the same pipeline as :meth:`run`
        would, without a task per call; the results in order, or the first call's error
        once every call has answered."""
        if self.client is None:
            raise StorageUnavailable("the store is closed: open() it first")
        loop = asyncio.get_running_loop()
        pending = [_Call(script, keys, args, loop.create_future()) for keys, args in calls]
        if pending and not self._batch:
            loop.call_soon(self._flush)
        self._batch += pending
        results: list[Any] = []
        failed: BaseException | None = None
        try:
            for call in pending:
                try:
                    try:
                        results.append(await call.result)
                    except rerr.NoScriptError:
                        results.append(await self._again(call))
                except Exception as exc:
                    failed = failed or exc
        except BaseException:
            for call in pending:  # cancelled: nobody waits for the others' answers
                call.result.cancel()
            raise
        if failed is not None:
            raise failed
        return results

    async def _again(self, call: _Call) -> Any:
        """A call the server answered ``NOSCRIPT``: load its script, call it once more."""
        client = self.client
        if client is None:
            raise StorageUnavailable("the store is closed: open() it first")
        await done(client.script_load(call.script.source))
        keys, args = call.keys, call.args
        return await done(
            client.evalsha(call.script.sha, len(keys), *_encoded(keys), *_encoded(args))
        )

    async def notice_lost_nodes(self, results: Sequence[Any] | BaseException) -> None:
        """After a pipeline on Redis Cluster: if a node did not answer, start afresh.

        redis-py's cluster pipeline keeps a node's connection failure in that
        command's result (or raises it) without marking its slot map stale,
        as a single command would: the calls for a failed-over primary's
        slots would keep going to the dead node. Closing the client is what
        redis-py's own pipeline retry does: the next command re-reads the
        slots from the seed nodes. At most once per ``socket_timeout``.
        """
        client = self.client
        if not isinstance(client, RedisCluster):
            return
        lost = (rerr.ConnectionError, rerr.TimeoutError, rerr.ClusterDownError)
        if isinstance(results, BaseException):
            failed = isinstance(results, lost)
        else:
            failed = any(isinstance(result, lost) for result in results)
        now = time.monotonic()
        if failed and now - self._restarted_at >= self.socket_timeout:
            self._restarted_at = now
            with suppress(Exception):
                await client.aclose()

    async def close(self) -> None:
        """Stop the batches in flight (their callers get CancelledError)."""
        await cancel_all(self._background)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.ensure_future(self._run_batch(batch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_batch(self, batch: list[_Call]) -> None:
        try:
            client = self.client
            if client is None:
                raise StorageUnavailable("the store is closed")
            try:
                # A cluster pipeline packs per node: one node's part may be sent
                # before another's fails to pack, so there each call is checked first.
                checked = isinstance(client, RedisCluster)
                sent, results = await self._execute(client, batch, check=checked)
            except UnicodeEncodeError:
                # Packing failed before anything was sent: find the calls whose
                # text has no UTF-8 form (lone surrogates), fail them alone.
                sent, results = await self._execute(client, batch, check=True)
        except BaseException as exc:
            await self.notice_lost_nodes(exc)
            # The connection failed (or the store closed): no call of the batch
            # knows whether it ran, each is told so.
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        await self.notice_lost_nodes(results)
        for call, result in zip(sent, results, strict=True):
            if call.result.done():
                continue
            if isinstance(result, BaseException):
                call.result.set_exception(result)
            else:
                call.result.set_result(result)

    async def _execute(
        self, client: Client, batch: list[_Call], *, check: bool
    ) -> tuple[list[_Call], list[Any]]:
        """One pipeline of the batch's EVALSHA calls; with ``check``, unencodable calls left out."""
        sent: list[_Call] = []
        async with client.pipeline(transaction=False) as pipe:
            for call in batch:
                keys, args = call.keys, call.args
                if check:
                    try:
                        keys, args = _encoded(keys), _encoded(args)
                    except UnicodeEncodeError as exc:
                        call.result.set_exception(
                            StorageError(
                                f"could not run {call.script.name}: an argument is not text "
                                f"Redis can store ({exc}); nothing was written"
                            )
                        )
                        continue
                # As a command: the cluster pipeline refuses its evalsha() method
                # but routes the command by its first key like any other.
                pipe.execute_command("EVALSHA", call.script.sha, len(keys), *keys, *args)
                sent.append(call)
            wait = bool(self.wait_replicas and sent) and not isinstance(client, RedisCluster)
            if wait:
                # The batch's writes on `wait_replicas` replicas, or the calls fail (see
                # RedisStore's wait_replicas); half the socket timeout, so it answers first.
                pipe.execute_command("WAIT", self.wait_replicas, _ms(self.socket_timeout / 2))
            results = await pipe.execute(raise_on_error=False) if sent else []
        if wait:
            *results, replicas = results
            if isinstance(replicas, BaseException) or int(replicas) < self.wait_replicas:
                lost = StorageUnavailable(
                    f"Redis at {mask(self.url)} did not confirm the write on "
                    f"{self.wait_replicas} replica(s) within {self.socket_timeout / 2:g}s "
                    f"(wait_replicas): it may be lost in a failover, so it is not reported "
                    f"as done ({replicas!r} replied). Check the replicas' link"
                )
                results = [r if isinstance(r, BaseException) else lost for r in results]
        return sent, results


class Guard:
    """``async with runner.guard(doing)``: Redis failures raised as the store's named errors.

    A class rather than a generator-based context manager: it is entered
    twice per turn, and this costs a fraction of what a generator does.
    """

    __slots__ = ("_doing", "_runner")

    def __init__(self, runner: ScriptRunner, doing: str) -> None:
        self._runner, self._doing = runner, doing

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        if isinstance(exc, rerr.RedisError | rerr.RedisClusterException) or (
            exc is not None and closed_under_write(exc)
        ):
            await self._runner.notice_lost_nodes(exc)
            raise self._runner.named_error(self._doing, exc) from exc
