"""What a turn costs in the Redis store, against a naive command-by-command baseline.

In one run, on one Redis (a private ``redis-server`` the script starts, so
``INFO commandstats`` counts only this benchmark; ``--url`` uses another):

1. turns per second and p50/p99 latency of a turn (begin, a small data change,
   commit with one outbox message) for :class:`RedisStore` (two Lua scripts)
   and for a naive store doing the same reads and writes as separate commands
   (GET/SET dedupe, SET NX lock, HSET/PEXPIRE/HGETALL, GET lock, HMGET, HSET,
   SET done, XADD, DEL);
2. client round trips and Redis commands per turn, from ``INFO commandstats``;
3. the memory of this Python process while 100,000 distinct users go through
   turns (RSS), and 20,000 more under tracemalloc: it must not grow per user.

Run::

    python tests/bench/bench_store.py [--turns 20000] [--concurrency 32] [--users 100000]
        [--traced-users 20000] [--url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from botkit import OutboundMessage, SendMode  # noqa: E402
from botkit.storage.base import StoreConfig  # noqa: E402
from botkit.storage.redis import RedisStore  # noqa: E402

Turn = Callable[[str, str], Awaitable[None]]
FIELDS = ("state", "data", "version", "last_inbound", "last_active", "opted_out", "not_on_whatsapp")


# -- the two contenders ------------------------------------------------------------------


def reply(user: str, n: int) -> OutboundMessage:
    return OutboundMessage(user=user, mode=SendMode.TEXT, text=f"you said {n}", created_at=1.0)


def redis_store_turn(store: RedisStore) -> Turn:
    async def turn(user: str, key: str) -> None:
        lease = await store.begin_turn(user, key, inbound_at=time.time())
        conv = lease.conversation.copy()
        conv.data["n"] = conv.data.get("n", 0) + 1
        conv.last_active = time.time()
        await store.commit_turn(lease, conv, [reply(user, conv.data["n"])])

    return turn


class NaiveStore:
    """The same reads and writes as RedisStore, one command (one round trip) at a time."""

    def __init__(self, client: aioredis.Redis, base: str, config: StoreConfig) -> None:
        self.client, self.base = client, base
        self.lock_ms = int(config.lock_ttl * 1000)
        self.conv_ms = int(config.conversation_ttl * 1000)
        self.done_ms = int(config.done_ttl * 1000)

    async def turn(self, user: str, key: str) -> None:
        r, p = self.client, f"{self.base}:{{{user}}}"
        conv, lock, seen = f"{p}:conv", f"{p}:lock", f"{p}:seen:{key}"
        # begin
        if await r.get(seen):
            return
        token = secrets.token_hex(16)
        if not await r.set(lock, token, nx=True, px=self.lock_ms):
            raise RuntimeError("the benchmark never contends for a user")
        await r.set(seen, "in_progress", px=self.lock_ms)
        now = time.time()
        last = await r.hget(conv, "last_inbound")
        if last is None or now > float(last):
            await r.hset(conv, "last_inbound", repr(now))
        await r.pexpire(conv, self.conv_ms)
        fields = await r.hmget(conv, FIELDS)
        data = {} if fields[1] is None else _loads(fields[1])
        data["n"] = data.get("n", 0) + 1
        # commit
        if await r.get(lock) != token:
            raise RuntimeError("lock lost")
        version, inbound = await r.hmget(conv, ["version", "last_inbound"])
        await r.hset(
            conv,
            mapping={
                "version": int(version or 0) + 1,
                "data": _dumps(data),
                "last_inbound": inbound or repr(now),
                "last_active": repr(time.time()),
                "opted_out": "0",
                "not_on_whatsapp": "0",
            },
        )
        await r.pexpire(conv, self.conv_ms)
        await r.set(seen, "done", px=self.done_ms)
        await r.xadd(f"{self.base}:outbox", {"m": reply(user, data["n"]).to_json()})
        await r.delete(lock)
        if await r.delete(f"{p}:waiting"):
            await r.publish(f"{self.base}:unlock", user)


def _dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, separators=(",", ":"))


def _loads(raw: str) -> dict[str, Any]:
    import json

    return dict(json.loads(raw))


# -- measuring ---------------------------------------------------------------------------


async def drive(turn: Turn, turns: int, concurrency: int, users: int, tag: str) -> list[float]:
    """Run ``turns`` turns, ``concurrency`` at a time, never two of one user at once."""
    latencies: list[float] = []
    per_worker = turns // concurrency
    users = max(users // concurrency, 1) * concurrency  # worker w only sees users = w (mod C)

    async def worker(w: int) -> None:
        for i in range(per_worker):
            user = f"7900{(w + concurrency * i) % users:07d}"
            started = time.perf_counter()
            await turn(user, f"m:{tag}:{w}:{i}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies


def command_calls(info: redis.Redis) -> dict[str, int]:
    stats = info.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    ignored = {"info", "ping", "subscribe", "hello", "client|setinfo", "client"}
    return {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in ignored and after[k] - before.get(k, 0) > 0
    }


async def measure(
    name: str, turn: Turn, info: redis.Redis, args: argparse.Namespace, client_commands: set[str]
) -> dict[str, Any]:
    await drive(turn, 2_000, args.concurrency, 1_000, f"{name}-warm")
    gc.collect()
    before = command_calls(info)
    started = time.perf_counter()
    latencies = await drive(turn, args.turns, args.concurrency, 1_000, name)
    elapsed = time.perf_counter() - started
    used = delta(before, command_calls(info))
    turns = len(latencies)
    latencies.sort()
    total = sum(used.values())
    sent = sum(v for k, v in used.items() if k in client_commands)
    return {
        "name": name,
        "turns": turns,
        "rate": turns / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(turns * 0.99) - 1] * 1000,
        # Commands run inside scripts count in commandstats too.
        "commands": total / turns,
        "round_trips": sent / turns,
        "breakdown": {k: round(v / turns, 2) for k, v in sorted(used.items())},
    }


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def memory_run(
    store: RedisStore, users: int, traced_users: int, concurrency: int
) -> dict[str, Any]:
    """Turns of distinct users; memory after the first 10% of them and at the end.

    RSS is measured in a run of ``users`` users without tracemalloc (whose own
    bookkeeping grows RSS); Python allocations in a second run of
    ``traced_users`` users under tracemalloc.
    """
    turn = redis_store_turn(store)

    async def span(start: int, stop: int) -> None:
        async def worker(w: int) -> None:
            for u in range(start + w, stop, concurrency):
                await turn(f"7800{u:07d}", "m:mem")

        await asyncio.gather(*(worker(w) for w in range(concurrency)))

    async def checkpoints(start: int, count: int, probe: Callable[[], int]) -> tuple[int, int]:
        """Users start..start+count; ``probe()`` after the first tenth of them and at the end."""
        await span(start, start + count // 10)
        gc.collect()
        before = probe()
        await span(start + count // 10, start + count)
        gc.collect()
        return before, probe()

    rss = await checkpoints(0, users, rss_kib)
    tracemalloc.start()
    traced = await checkpoints(users, traced_users, lambda: tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    return {
        "users": users,
        "traced_users": traced_users,
        "rss_kib": rss,
        "rss_per_user": (rss[1] - rss[0]) * 1024 / (users - users // 10),
        "traced_kib": (traced[0] / 1024, traced[1] / 1024),
        "traced_per_user": (traced[1] - traced[0]) / (traced_users - traced_users // 10),
        "waiting_users": store.waiting_users,
    }


# -- the run -----------------------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir = tempfile.mkdtemp(prefix="botkit-bench-redis-")
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    process = subprocess.Popen(
        [binary, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                return process, url, workdir
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    process = None
    url = args.url
    if url is None:
        process, url, workdir = start_server()
    info = redis.Redis.from_url(url, decode_responses=True)
    config = StoreConfig()
    prefix = f"botkit-bench-{secrets.token_hex(4)}"
    store = RedisStore(url, bot="bench", prefix=prefix, config=config, max_connections=64)
    await store.open()
    naive_client = aioredis.Redis.from_url(url, decode_responses=True, max_connections=64)
    naive = NaiveStore(naive_client, f"{prefix}-naive:bench", config)
    try:
        version = info.info("server")["redis_version"]
        print(
            f"Redis {version} at {url} | Python {platform.python_version()} | "
            f"{os.cpu_count()} CPUs | {args.turns} turns, {args.concurrency} concurrent"
        )
        results = [
            await measure("RedisStore", redis_store_turn(store), info, args, {"evalsha"}),
            await measure(
                "naive",
                naive.turn,
                info,
                args,
                {"get", "set", "hget", "hset", "pexpire", "hmget", "xadd", "del", "publish"},
            ),
        ]
        print()
        header = ("store", "turns/s", "p50 ms", "p99 ms", "RTT/turn", "cmds/turn")
        print("{:<12}{:>10}{:>9}{:>9}{:>10}{:>11}".format(*header))
        for r in results:
            print(
                f"{r['name']:<12}{r['rate']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                f"{r['round_trips']:>10.1f}{r['commands']:>11.1f}"
            )
        fast, slow = results
        print(
            f"\nRedisStore vs naive: {fast['rate'] / slow['rate']:.2f}x turns/s, "
            f"p50 {slow['p50'] / fast['p50']:.2f}x lower, p99 {slow['p99'] / fast['p99']:.2f}x "
            f"lower, {slow['round_trips'] / fast['round_trips']:.1f}x fewer round trips"
        )
        for r in results:
            print(f"  {r['name']} commands per turn: {r['breakdown']}")

        if args.users:
            memory = await memory_run(store, args.users, args.traced_users, args.concurrency)
            r1, r2 = memory["rss_kib"]
            t1, t2 = memory["traced_kib"]
            print(
                f"\nmemory, after 10% -> 100% of the users:\n"
                f"  RSS over {memory['users']:,} distinct users: {r1:,} -> {r2:,} KiB "
                f"({memory['rss_per_user']:+.2f} B/user)\n"
                f"  tracemalloc over {memory['traced_users']:,} more distinct users: "
                f"{t1:,.0f} -> {t2:,.0f} KiB ({memory['traced_per_user']:+.2f} B/user)\n"
                f"  users with turns waiting in the process afterwards: {memory['waiting_users']}"
            )
    finally:
        await store.close()
        await naive_client.aclose()
        if process is not None:
            process.kill()
            process.wait()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for pattern in (f"{prefix}:*", f"{prefix}-naive:*"):
                keys = list(info.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 1000):
                    info.delete(*keys[i : i + 1000])
        info.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=100_000, help="0 skips the memory run")
    parser.add_argument("--traced-users", type=int, default=20_000)
    parser.add_argument("--url", help="use this Redis instead of starting a private one")
    asyncio.run(main(parser.parse_args()))
