"""A private ``redis-server`` a test can stop, freeze and restart.

It listens on a free port, keeps its data in an append-only file fsynced on
every write (so a restart brings back everything that was acknowledged), and
is killed when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port


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


class RedisServer:
    """One ``redis-server`` process in ``workdir`` on a free port."""

    def __init__(self, workdir: Path, *, extra: tuple[str, ...] = ()) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server and wait until it answers."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.answers():
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
            time.sleep(0.02)

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test's own checks."""
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.kill()
