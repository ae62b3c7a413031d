"""Turns per second on a local Redis Cluster against one standalone Redis, same run.

The script starts both on free ports (the cluster: 3 primaries with a replica
each, as the test fixture does; the standalone: one ``redis-server``), then
runs the same load through :class:`RedisStore` on each, alternating, for
several rounds: ``--turns`` turns (begin, a small data change, commit with
one reply) from ``--users`` users, ``--concurrency`` at a time. It prints
turns/s and p50/p99 per round, the medians, and the cluster/standalone ratio
per round and of the medians (the machine is shared: look at the spread).

Both share this machine's cores: the cluster's three primaries (three
Redis processes) can use more of them than one Redis can, while the client
splits each batch into one pipeline per node. So the ratio says what the
cluster code path costs or gains at equal hardware, not what a cluster of
separate machines would do.

Run::

    python tests/bench/bench_cluster.py [--rounds 4] [--turns 6000] [--users 2000]
        [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from botkit import OutboundMessage, SendMode  # noqa: E402
from botkit.storage.base import StoreConfig  # noqa: E402
from botkit.storage.redis import RedisStore  # noqa: E402
from tests.storage._redis_server import RedisServer  # noqa: E402
from tests.storage._redis_topologies import RedisClusterNodes  # noqa: E402


async def run_turns(
    url: str, turns: int, users: int, concurrency: int
) -> tuple[float, list[float]]:
    """Turns/s and each turn's latency (s) through a fresh store on ``url``."""
    store = RedisStore(
        url,
        bot="bench",
        prefix=f"bench-{uuid.uuid4().hex[:8]}",
        config=StoreConfig(lock_ttl=10.0, acquire_timeout=30.0),
    )
    await store.open()
    names = [f"7900{n:07d}" for n in range(users)]
    latencies: list[float] = []
    next_turn = iter(range(turns))

    async def worker() -> None:
        for n in next_turn:
            user = names[n % users]
            started = time.perf_counter()
            lease = await store.begin_turn(user, f"m:{n}", inbound_at=time.time())
            conv = lease.conversation.copy()
            conv.data["n"] = conv.data.get("n", 0) + 1
            reply = OutboundMessage(user=user, mode=SendMode.TEXT, text=f"you said {n}")
            await store.commit_turn(lease, conv, [reply])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await store.close()
    return turns / elapsed, latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        cluster = RedisClusterNodes(Path(work) / "cluster")
        standalone = RedisServer(Path(work) / "standalone", extra=("--appendonly", "no"))
        try:
            cluster.start()
            standalone.start()
            urls = {"standalone": standalone.url, "cluster": cluster.url}
            rates: dict[str, list[float]] = {"standalone": [], "cluster": []}
            for round_ in range(1, args.rounds + 1):
                for name, url in urls.items():
                    rate, latencies = await run_turns(url, args.turns, args.users, args.concurrency)
                    rates[name].append(rate)
                    print(
                        f"round {round_} {name:10s} {rate:8.0f} turns/s   "
                        f"p50 {percentile(latencies, 0.5) * 1000:6.1f} ms   "
                        f"p99 {percentile(latencies, 0.99) * 1000:6.1f} ms"
                    )
                print(
                    f"round {round_} cluster/standalone "
                    f"{rates['cluster'][-1] / rates['standalone'][-1]:.2f}"
                )
            medians = {name: statistics.median(values) for name, values in rates.items()}
            ratios = [c / s for c, s in zip(rates["cluster"], rates["standalone"], strict=True)]
            print(
                f"medians: standalone {medians['standalone']:.0f} turns/s, "
                f"cluster {medians['cluster']:.0f} turns/s, "
                f"ratio {medians['cluster'] / medians['standalone']:.2f} "
                f"(per round {min(ratios):.2f} to {max(ratios):.2f})"
            )
        finally:
            cluster.close()
            standalone.close()


if __name__ == "__main__":
    asyncio.run(main())
