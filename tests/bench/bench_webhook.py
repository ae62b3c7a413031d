"""Webhook throughput and latency: the echo bot under ``botkit run`` against a hand-written app.

In one run, against the same Redis and the same provider emulator:

* **botkit**: ``botkit run bots.echo:bot --workers 2`` with ``BOTKIT_REDIS_URL``;
* **baseline**: ``tests/bench/baseline_app.py`` (Starlette + redis-py doing the
  echo bot's essential work: dedupe, read and write a counter, post the
  reply; see its docstring) under uvicorn with 2 workers.

The provider emulator runs in its own process (``botkit emulator``) and
receives every reply. The load generator is this process: ``--connections``
keep-alive HTTP/1.1 connections over loopback, each posting one incoming
message at a time (a closed loop) from ``--users`` distinct users, written
with bare asyncio streams so it costs both servers the same little CPU.
Each round warms up, then measures for ``--seconds``; the apps alternate
for ``--rounds`` rounds and the best round of each is reported (the
machine is shared: the best round is the least disturbed one). After each
round the replies are counted at the emulator. Run::

    python tests/bench/bench_webhook.py [--seconds 10] [--connections 32] [--rounds 4]
        [--quiet | --both-log-levels] [--against CHECKOUT]

``--quiet`` runs botkit at ``BOTKIT_LOG_LEVEL=WARNING`` (no line per turn, as
the baseline writes none); ``--both-log-levels`` runs it both ways in each
round, so the cost of the turn line shows against the same baseline.
``--against CHECKOUT`` also runs botkit from another checkout in every round
(``git worktree add ../before <commit>``): a change's effect, measured in the
same run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-key"
TOKEN = "bench-webhook-token-0123456789"
BUSINESS = "79000000000"


# -- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(root: Path = ROOT, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTKIT_", "BASELINE_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONPATH"] = str(root)
    env.update(extra)
    return env


class Server:
    """A server process; its output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        port: int,
        *,
        quiet: bool = False,
        root: Path = ROOT,
    ) -> None:
        self.name = name
        self.port = port
        self.quiet = quiet
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, workers: int, within: float = 30.0) -> None:
        """Until every worker logged its start-up, or (logs off) ``/healthz`` answers."""
        deadline = time.monotonic() + within
        while self.output().count("Application startup complete") < workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start:\n{self.output()[-3000:]}")
            if self.quiet and self.healthy():
                return  # the warm-up gives a worker still starting its time
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.unlink(missing_ok=True)


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "botkit",
            "emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if " listening on " not in line:
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return process, line.split(" listening on ")[1].split()[0]


def start_botkit(
    redis_url: str, prefix: str, emulator_url: str, quiet: bool, root: Path = ROOT
) -> Server:
    """``botkit run`` of the checkout at ``root`` (this one by default)."""
    port = free_port()
    env = clean_env(
        root,
        BOTKIT_WEBHOOK_TOKEN=TOKEN,
        BOTKIT_DEVINO_URL=emulator_url,
        BOTKIT_DEVINO_API_KEY=API_KEY,
        BOTKIT_SENDER="EchoCo",
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=prefix,
        BOTKIT_LOG_LEVEL="WARNING" if quiet else "INFO",
    )
    argv = [sys.executable, "-m", "botkit", "run", "bots.echo:bot"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    return Server("botkit", argv, env, port, quiet=quiet, root=root)


def start_baseline(redis_url: str, prefix: str, emulator_url: str) -> Server:
    port = free_port()
    env = clean_env(
        BASELINE_REDIS_URL=redis_url,
        BASELINE_PREFIX=prefix,
        BASELINE_DEVINO_URL=emulator_url,
        BASELINE_API_KEY=API_KEY,
        BASELINE_TOKEN=TOKEN,
    )
    argv = [sys.executable, "-m", "uvicorn", "tests.bench.baseline_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    argv += ["--log-level", "info", "--no-access-log"]
    return Server("baseline", argv, env, port)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


def pids_named(name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def children(pid: int) -> list[int]:
    """The worker processes of a server (its direct children)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


# -- the load generator -----------------------------------------------------------


@dataclass
class Load:
    """What one measured run saw."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_us: dict[str, float] = field(default_factory=dict)
    """CPU microseconds per answered message, by process group."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


_ids = itertools.count(int(time.time() * 1000) * 1000)
_first_error: list[str] = []


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head % len(body) + body)
    status_line = await reader.readuntil(b"\r\n")
    headers = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    status = int(status_line.split()[1])
    if status != 200 and not _first_error:
        _first_error.append(body.decode(errors="replace"))
    return status


async def generate(port: int, users: list[str], connections: int, seconds: float) -> Load:
    """Post incoming messages for ``seconds`` over ``connections`` connections."""
    head = (
        f"POST /whatsapp/incoming/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    load = Load()
    started = time.perf_counter()
    stop_at = started + seconds

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pick = random.Random(index)
        try:
            while time.perf_counter() < stop_at:
                message_id = next(_ids)
                body = json.dumps(
                    {
                        "incomingMessageId": message_id,
                        "to": BUSINESS,
                        "from": pick.choice(users),
                        "text": f"hello {message_id}",
                        "ts": int(time.time()),
                    }
                ).encode()
                sent = time.perf_counter()
                status = await _post(reader, writer, head, body)
                if status == 200:
                    load.latencies.append(time.perf_counter() - sent)
                else:
                    load.errors[str(status)] = load.errors.get(str(status), 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    load.seconds = time.perf_counter() - started
    return load


async def replies_at_emulator(emulator_url: str) -> int:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60) as http:
        requests = (await http.get("/_emulator/requests")).json()
    return sum(r["messages"] for r in requests if r["httpStatus"] == 200)


async def reset_emulator(emulator_url: str) -> None:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60) as http:
        await http.delete("/_emulator/messages")


async def wait_for_replies(emulator_url: str, expected: int, within: float = 60.0) -> float:
    """Seconds until the emulator received ``expected`` replies (after the load stopped)."""
    started = time.perf_counter()
    while True:
        got = await replies_at_emulator(emulator_url)
        if got >= expected:
            return time.perf_counter() - started
        if time.perf_counter() - started > within:
            raise SystemExit(f"only {got} of {expected} replies reached the emulator")
        await asyncio.sleep(0.2)


# -- a round ----------------------------------------------------------------------------


async def measure(
    name: str,
    server: Server,
    emulator: subprocess.Popen[str],
    emulator_url: str,
    args: argparse.Namespace,
    users: list[str],
) -> Load:
    try:
        server.wait_started(workers=2)
        await generate(server.port, users, args.connections, args.warmup)
        warm = await replies_at_emulator(emulator_url)
        groups = {
            "server": [server.process.pid, *children(server.process.pid)],
            "emulator": [emulator.pid],
            "redis": pids_named("redis-server"),
        }
        before = {group: cpu_seconds(pids) for group, pids in groups.items()}
        own = time.process_time()
        load = await generate(server.port, users, args.connections, args.seconds)
        answered = max(len(load.latencies), 1)
        load.cpu_us = {
            group: (cpu_seconds(pids) - before[group]) / answered * 1e6
            for group, pids in groups.items()
        }
        load.cpu_us["load generator"] = (time.process_time() - own) / answered * 1e6
        # Count this round's replies: those of the warm-up, plus one per 200 now.
        drain = await wait_for_replies(emulator_url, warm + len(load.latencies))
    finally:
        server.stop()
    await reset_emulator(emulator_url)
    cpu = ", ".join(f"{group} {us:,.0f}" for group, us in load.cpu_us.items())
    print(
        f"  {name:20} {load.rate:8,.0f} msgs/s  p50 {load.percentile(50):6.1f} ms  "
        f"p99 {load.percentile(99):6.1f} ms  errors {load.errors or 0}  "
        f"replies drained in {drain:.2f}s\n"
        f"            CPU us per message: {cpu}",
        flush=True,
    )
    if _first_error:
        print(f"  first error: {_first_error.pop()[:300]}")
    return load


def best(loads: list[Load]) -> Load:
    return max(loads, key=lambda load: load.rate)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per round")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--users", type=int, default=1000, help="distinct users")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per app (alternating)")
    parser.add_argument(
        "--quiet", action="store_true", help="botkit at BOTKIT_LOG_LEVEL=WARNING (no turn lines)"
    )
    parser.add_argument(
        "--both-log-levels",
        action="store_true",
        help="each round runs botkit at INFO (a line per turn) and at WARNING (none)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="CHECKOUT",
        help="also run botkit from another checkout (say, a worktree of an earlier commit) "
        "in every round, at the same log level(s): a before/after on the same machine",
    )
    parser.add_argument(
        "--redis", default=os.environ.get("BOTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    client.ping()
    rng = random.Random(7)
    users = [f"7903{rng.randrange(10**7):07d}" for _ in range(args.users)]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    emulator, emulator_url = start_emulator()
    # botkit's runs: (name, quiet, checkout); the first is the one the ratio line names "botkit".
    runs = [("botkit", args.quiet, ROOT)]
    if args.both_log_levels:
        runs = [("botkit", False, ROOT), ("botkit-quiet", True, ROOT)]
    if args.against is not None:
        runs += [(f"{name}-against", quiet, args.against.resolve()) for name, quiet, _ in runs]
    results: dict[str, list[Load]] = {name: [] for name, _, _ in runs}
    results["baseline"] = []
    levels = ", ".join(f"{name} at {'WARNING' if quiet else 'INFO'}" for name, quiet, _ in runs)
    print(
        f"cores {os.cpu_count()}, {args.connections} connections, {args.users} users, "
        f"{args.seconds:g}s per round after {args.warmup:g}s warm-up, {args.rounds} rounds; "
        f"log levels: {levels}",
        flush=True,
    )
    try:
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}", flush=True)
            for name, quiet, root in runs:
                key_prefix = f"{prefix}-{name}{round_}"
                server = start_botkit(args.redis, key_prefix, emulator_url, quiet, root)
                results[name].append(
                    await measure(name, server, emulator, emulator_url, args, users)
                )
            server = start_baseline(args.redis, f"{prefix}-h{round_}", emulator_url)
            results["baseline"].append(
                await measure("baseline", server, emulator, emulator_url, args, users)
            )
    finally:
        emulator.terminate()
        emulator.wait(10)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()

    print("best rounds:")
    for name, loads in results.items():
        load = best(loads)
        print(
            f"  {name:20} {load.rate:8,.0f} msgs/s  p50 {load.percentile(50):6.1f} ms  "
            f"p99 {load.percentile(99):6.1f} ms"
        )
    print("medians:")
    for name, loads in results.items():
        cpu = {
            group: statistics.median(load.cpu_us[group] for load in loads)
            for group in ("server", "redis")
        }
        print(
            f"  {name:20} {statistics.median(load.rate for load in loads):8,.0f} msgs/s  "
            f"p99 {statistics.median(load.percentile(99) for load in loads):6.1f} ms  "
            f"CPU us per message: server {cpu['server']:,.0f}, redis {cpu['redis']:,.0f}"
        )
    rates = {k: statistics.median(load.rate for load in v) for k, v in results.items()}
    theirs = best(results["baseline"])
    for name, _, _ in runs:
        print(
            f"ratio {name} / baseline: {best(results[name]).rate / theirs.rate:.2f} best rounds, "
            f"{rates[name] / rates['baseline']:.2f} medians (target: at least 0.80)"
        )


if __name__ == "__main__":
    asyncio.run(main())
