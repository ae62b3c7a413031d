"""``botkit run --workers N``: one listening socket, N uvicorn workers, signals passed on.

The process the operator started binds the address once and starts N worker
processes, each serving the bot with uvicorn's public API
(``uvicorn.Server(config).run(sockets=[sock])``) on that shared socket; the
kernel spreads the connections over them. The parent serves nothing itself:

- **SIGHUP** is passed on to every worker, which keeps running: a bot that
  re-reads something on SIGHUP (the auto-reply service's rules) does so in
  place, in every worker; other bots ignore it. (uvicorn's own supervisor
  would replace every worker instead.)
- **SIGTERM / SIGINT** stop every worker gracefully (a worker finishes its
  requests and turns and flushes its outbox); a second one hurries them as
  a second Ctrl-C does. Workers still running after twice the grace are killed.
- **A worker that dies** is replaced at once. A worker that fails before it
  serves stops the whole command with exit code 3 while no worker serves yet
  (a broken app or setting fails the same way every time); later, with the
  others serving, it is retried with a growing delay (up to 30 s).
- A worker whose parent disappears (``kill -9`` of the supervisor) stops
  gracefully on its own instead of serving on unattended.

Workers are started as ``python -m botkit.service._supervisor`` (the same
interpreter and working directory), so they read the same ``BOTKIT_*``
settings and import the bot as the parent did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

from botkit._retry import RetryPolicy

__all__ = ["STARTUP_FAILURE", "Supervisor"]

log = logging.getLogger("botkit.workers")

STARTUP_FAILURE = 3
"""A worker's (and then the command's) exit code when the app could not start (uvicorn's)."""

WORKER_RESTART = RetryPolicy(attempts=None, base_delay=0.5, max_delay=30.0, jitter=0.0)
"""The wait before another try at a worker that keeps failing to start (0.5 s doubling to 30 s)."""

_READY = b"ready\n"


@dataclass
class _Worker:
    """One worker slot: its process, once started, and how it has fared."""

    slot: int
    process: subprocess.Popen[bytes] | None = None
    ready_pipe: int | None = None
    ready: bool = False
    failures: int = 0
    start_at: float = 0.0
    buffer: bytes = field(default=b"", repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Run ``workers`` uvicorn workers of ``app`` on one socket bound from ``options``.

    ``app`` is an import string (``"module:factory"``), ``options`` the
    keyword arguments of ``uvicorn.Config`` (JSON values: they are handed to
    each worker on its command line). :meth:`run` returns the exit code.
    """

    def __init__(self, app: str, options: dict[str, Any], workers: int, *, grace: float = 15.0):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.app = app
        self.options = options
        self.grace = grace
        self.workers = [_Worker(slot) for slot in range(workers)]
        self._signals: deque[int] = deque()
        self._stopping = False
        self._served = False
        self._code = 0
        self._deadline = float("inf")

    # -- the parent's loop ----------------------------------------------------

    def run(self) -> int:
        """Bind, start the workers, supervise them until a stop signal; the exit code."""
        config = uvicorn.Config(self.app, **self.options)
        sock = config.bind_socket()
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        log.info(
            "Started parent process [%d]: %d workers; SIGHUP is passed on to each (no restart)",
            os.getpid(),
            len(self.workers),
        )
        try:
            for worker in self.workers:
                self._start(worker, sock)
            while not (self._stopping and not any(w.alive for w in self.workers)):
                self._wait(wake_read, timeout=0.5)
                self._handle_signals()
                self._read_ready()
                self._reap(sock)
                self._hurry_stragglers()
        finally:
            for signum, before in previous.items():
                signal.signal(signum, before)
            signal.set_wakeup_fd(previous_wakeup)
            wake_read.close()
            wake_write.close()
            for worker in self.workers:
                self._forget(worker)
            sock.close()
        log.info("Stopped parent process [%d]", os.getpid())
        return self._code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:  # a child's end only wakes the loop (set_wakeup_fd)
            self._signals.append(signum)

    def _wait(self, wake: socket.socket, timeout: float) -> None:
        waits = [wake.fileno()]
        waits += [w.ready_pipe for w in self.workers if w.ready_pipe is not None]
        readable, _, _ = select.select(waits, [], [], timeout)
        if wake.fileno() in readable:
            try:
                while wake.recv(512):
                    pass
            except BlockingIOError:
                pass

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum == signal.SIGHUP:
                if self._stopping:
                    continue
                pids = self._send(signal.SIGHUP)
                log.info("Received SIGHUP: passed on to workers %s", pids)
            elif not self._stopping:
                log.info(
                    "Received %s: stopping workers %s",
                    signal.Signals(signum).name,
                    [w.pid for w in self.workers if w.alive],
                )
                self._stop()
            else:
                # A second Ctrl-C hurries them (uvicorn then closes connections at once).
                log.info("Received %s again: hurrying the workers", signal.Signals(signum).name)
                self._send(signal.SIGINT)

    def _stop(self, code: int = 0) -> None:
        self._stopping = True
        self._code = self._code or code
        # uvicorn waits up to the grace for requests, then the app stops (the outbox flush).
        self._deadline = time.monotonic() + 2 * self.grace
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> list[int]:
        sent = []
        for worker in self.workers:
            if worker.alive:
                assert worker.process is not None
                worker.process.send_signal(signum)
                sent.append(worker.process.pid)
        return sent

    def _hurry_stragglers(self) -> None:
        if self._stopping and time.monotonic() > self._deadline:
            for worker in self.workers:
                if worker.alive:
                    assert worker.process is not None
                    log.warning("Worker [%d] still running after the grace: killed", worker.pid)
                    worker.process.kill()
            self._deadline = float("inf")

    # -- the workers ------------------------------------------------------------

    def _start(self, worker: _Worker, sock: socket.socket) -> None:
        ready_read, ready_write = os.pipe()
        spec = json.dumps({"app": self.app, "options": self.options, "parent": os.getpid()})
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(sock.fileno()), str(ready_write), spec],
                stdin=subprocess.DEVNULL,
                pass_fds=(sock.fileno(), ready_write),
            )
        finally:
            os.close(ready_write)
        os.set_blocking(ready_read, False)
        worker.ready_pipe = ready_read
        worker.ready = False
        worker.buffer = b""

    def _read_ready(self) -> None:
        for worker in self.workers:
            if worker.ready_pipe is None:
                continue
            try:
                chunk = os.read(worker.ready_pipe, 64)
            except BlockingIOError:
                continue
            worker.buffer += chunk
            if _READY in worker.buffer:
                worker.ready = True
                worker.failures = 0
                self._served = True
                self._forget_pipe(worker)
                if all(w.ready for w in self.workers):
                    log.info("Workers ready: %s", [w.pid for w in self.workers])
            elif not chunk:  # closed without a word: the worker is ending
                self._forget_pipe(worker)

    def _reap(self, sock: socket.socket) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                self._ended(worker)
            if worker.process is None and not self._stopping and now >= worker.start_at:
                self._start(worker, sock)

    def _ended(self, worker: _Worker) -> None:
        assert worker.process is not None
        pid, code = worker.process.pid, worker.process.returncode
        was_ready = worker.ready
        self._forget(worker)
        _metrics_gone(pid)
        if self._stopping:
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if was_ready:
            log.warning("Worker [%d] ended (%s): starting another", pid, how)
            worker.start_at = 0.0
            return
        if not self._served:
            log.error(
                "Worker [%d] could not start (%s): stopping; its log above says why", pid, how
            )
            self._stop(STARTUP_FAILURE)
            return
        delay = WORKER_RESTART.delay(worker.failures)
        worker.failures += 1
        worker.start_at = time.monotonic() + delay
        log.error(
            "Worker [%d] could not start (%s): trying again in %.1f s, the others serve meanwhile",
            pid,
            how,
            delay,
        )

    def _forget_pipe(self, worker: _Worker) -> None:
        if worker.ready_pipe is not None:
            os.close(worker.ready_pipe)
            worker.ready_pipe = None

    def _forget(self, worker: _Worker) -> None:
        self._forget_pipe(worker)
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        worker.process = None
        worker.ready = False


def _metrics_gone(pid: int) -> None:
    """Tell the shared metrics files that ``pid`` is gone (prometheus' multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# -- a worker ------------------------------------------------------------------


def _watch(server: uvicorn.Server, ready_fd: int, parent: int) -> None:
    """Say when the server is ready; stop it gracefully if the parent goes away."""
    told = False
    with os.fdopen(ready_fd, "wb", buffering=0) as ready:
        while True:
            if not told and server.started:
                with contextlib.suppress(OSError):  # a parent gone already: handled below
                    ready.write(_READY)
                told = True
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05 if not told else 1.0)


def worker_main(argv: list[str]) -> int:
    """A worker: serve the app on the inherited socket until told to stop."""
    fd, ready_fd, spec = int(argv[0]), int(argv[1]), json.loads(argv[2])
    # Until the app takes SIGHUP (or if it never does) it must not end the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = uvicorn.Config(spec["app"], **spec["options"])
    server = uvicorn.Server(config)
    threading.Thread(
        target=_watch, args=(server, ready_fd, spec["parent"]), name="botkit-worker", daemon=True
    ).start()
    server.run(sockets=[socket.socket(fileno=fd)])
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
