"""Private ``redis-server`` processes: one a test can stop, freeze and restart.

:class:`RedisServer` listens on a free port, keeps its data in an append-only
file fsynced on every write (so a restart brings back everything that was
acknowledged), and is killed when the test ends. :class:`RedisProcess` is
the process itself, which the private cluster and Sentinel group are made of.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import free_port

# A server answers PING within this.
_CLIENT_TIMEOUT = 1.0
# A probe tries once: redis-py's default retries (3, with backoff) made each
# probe of a server that is down take over 3 s instead of failing at once.
PROBE_ONCE = Retry(NoBackoff(), 0)


def redis_server_binary() -> str:
    """The ``redis-server`` path; skip (fail when ``CI=true``) when there is none."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    message = "no redis-server binary: install redis-server to run the restart tests"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true, where Redis is required)", pytrace=False)
    pytest.skip(message)


class RedisProcess:
    """One ``redis-server`` process on ``port`` in ``workdir``: nothing saved unless
    ``args`` (options after the port, bind, dir and log file) say so.

    ``config`` is a config file given before the options (a sentinel's, which
    it rewrites). The private cluster and Sentinel group of
    ``_redis_topologies.py`` are made of these too.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        args: Sequence[str] = (),
        *,
        config: Path | None = None,
    ) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.port = free_port() if port is None else port
        self.args = list(args)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def launch(self, *extra: str) -> None:
        """Start the process (without waiting for it to answer)."""
        self.process = subprocess.Popen(
            [
                self.binary,
                *([str(self.config)] if self.config else []),  # a config file comes first
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                *self.args,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )

    def answers(self) -> bool:
        client = redis.Redis(
            port=self.port,
            socket_timeout=_CLIENT_TIMEOUT,
            socket_connect_timeout=_CLIENT_TIMEOUT,
            retry=PROBE_ONCE,
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_answers(self, within: float = 10.0) -> None:
        """Wait until it answers PING; fail with its log if it exits or takes too long."""
        deadline = time.monotonic() + within
        while not self.answers():
            if not self.alive or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{self.log()}")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the clients."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class RedisServer(RedisProcess):
    """A standalone server whose data survives a restart: an append-only file
    fsynced on every write (``extra`` options may change that)."""

    def __init__(self, workdir: Path, *, extra: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, args=("--appendonly", "yes", "--appendfsync", "always", *extra))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server and wait until it answers."""
        self.launch()
        self.wait_answers(timeout)

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test's own checks."""
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.alive:
            self.thaw()
            self.kill()
