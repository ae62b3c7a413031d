"""Redis memory per user and per message in the sharded store, at steady state.

A private ``redis-server`` (no persistence, so ``used_memory`` counts only
this run). ``--users`` users each send ``--rounds`` messages, as the echo bot
sees them: a turn (begin with the message's id, the conversation's counter
updated, one reply committed to the outbox), the reply read from the outbox
and acknowledged with its provider ``messageId`` (a sent record), then its
"read" status recorded. The outbox is drained every round, so what stays is
what the store keeps per user. Then a tail: ``--tail-users`` of them send
messages up to 40 each, past the per-user bounds (K = 32 dedupe ids, 32
sent records), then ``--tail-rounds`` more: the memory per extra message
must be about zero. Reported: bytes per user after each round, bytes per extra message in
the tail, and ``MEMORY USAGE`` of one user's keys. Run::

    python tests/bench/bench_memory.py [--users 100000] [--rounds 10]
        [--tail-users 2000] [--tail-rounds 20] [--url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from botkit import OutboundMessage, SendMode  # noqa: E402
from botkit.storage import SentRecord  # noqa: E402
from botkit.storage.redis import RedisStore  # noqa: E402
from botkit.storage.redis.keys import Keys  # noqa: E402
from tests.bench.bench_store import start_server  # noqa: E402

_ids = itertools.count(3_482_512_350_952_730_368)


def used_memory(check: redis.Redis) -> int:
    return int(check.info("memory")["used_memory"])


def redis_cpu(check: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system)."""
    info = check.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def message_round(store: RedisStore, users: list[str], n: int, width: int) -> None:
    """Each user sends message ``n``; every reply is sent, acknowledged and read."""
    now = time.time()

    async def turn(user: str) -> None:
        lease = await store.begin_turn(user, f"m:{next(_ids)}", inbound_at=now)
        conv = lease.conversation.copy()
        conv.data["n"] = n
        conv.last_active = now
        reply = OutboundMessage(
            user=user, mode=SendMode.TEXT, text=f"echo #{n}: hello there", created_at=now
        )
        await store.commit_turn(lease, conv, [reply])

    for start in range(0, len(users), width):
        await asyncio.gather(*(turn(user) for user in users[start : start + width]))
        while items := await store.outbox_read("bench", 1000, 0):
            sent = [
                SentRecord(message_id=str(next(_ids)), message=item.message, sent_at=now)
                for item in items
            ]
            await store.outbox_ack([item.id for item in items], sent, answered=items)
            await asyncio.gather(
                *(store.update_sent(dataclasses.replace(r, status="read")) for r in sent)
            )


async def main(args: argparse.Namespace) -> None:
    process = None
    url = args.url
    if url is None:
        process, url, workdir = start_server()
    check = redis.Redis.from_url(url, decode_responses=True)
    try:
        check.flushdb()
        store = RedisStore(url, bot="mem", prefix="bench", max_connections=32)
        await store.open()
        base = used_memory(check)
        print(
            f"{args.users} users, {args.rounds} messages each "
            f"({args.users * args.rounds:,} messages); empty store: {base:,} B"
        )
        users = [f"79{n:09d}" for n in range(args.users)]
        started = time.monotonic()
        cpu = redis_cpu(check)
        for n in range(1, args.rounds + 1):
            await message_round(store, users, n, args.width)
            total = used_memory(check) - base
            print(
                f"  after message {n:>2} each: {total / args.users:8.0f} B per user "
                f"({time.monotonic() - started:.0f}s)",
                flush=True,
            )
        steady = used_memory(check)
        cpu = redis_cpu(check) - cpu
        tail = users[: args.tail_users]
        rounds = args.rounds
        for n in range(rounds + 1, 41):  # past K = 32 of each
            await message_round(store, tail, n, args.width)
        filled = used_memory(check)
        for n in range(41, 41 + args.tail_rounds):
            await message_round(store, tail, n, args.width)
        per_extra = (used_memory(check) - filled) / (len(tail) * args.tail_rounds)
        rounds = 40 + args.tail_rounds
        keys = Keys("bench", "mem", len(store.outbox_shards()))
        sample = users[0]
        usage = {
            key.rsplit(":", 1)[-1]: int(check.memory_usage(key) or 0)
            for key in [*keys.turn(sample), keys.refs(sample)]
            if check.exists(key)
        }
        print(
            f"tail: {len(tail)} users went on to 40 messages each (past K = 32), then sent "
            f"{args.tail_rounds} more: {per_extra:+.1f} B per extra message"
        )
        print(f"one user's keys after {rounds} messages (MEMORY USAGE):")
        for kind, size in usage.items():
            print(f"  {kind:<8} {size:6d} B")
        print(f"  {'total':<8} {sum(usage.values()):6d} B")
        print(
            f"Redis CPU: {cpu / (args.users * args.rounds) * 1e6:.0f} us per message "
            "(turn, acknowledgement with its sent record, one status recorded)"
        )
        print(
            f"steady state after {args.rounds} messages each: "
            f"{(steady - base) / args.users:.0f} B per user (all keys, Redis overhead included)"
        )
        await store.close()
    finally:
        check.close()
        if process is not None:
            process.terminate()
            process.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10, help="messages per user")
    parser.add_argument("--tail-users", type=int, default=2000)
    parser.add_argument("--tail-rounds", type=int, default=20)
    parser.add_argument("--width", type=int, default=256, help="turns in flight at once")
    parser.add_argument("--url", default=None, help="an existing Redis (flushed!)")
    asyncio.run(main(parser.parse_args()))
