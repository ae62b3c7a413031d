"""A separate OS process for the Redis store tests: ``python -m tests.storage._redis_worker JSON``.

Modes (``mode`` in the JSON):

- ``turns``: run a bot whose text handler counts messages in ``ctx.data`` and
  flags overlapping handlers (INCR/DECR of a shared ``active`` key). It waits
  for the go signal (``BLPOP go``) so both workers start together, runs all
  ``ids`` as concurrent turns of ``user``, and prints the outcomes as JSON.
- ``hold``: begin a turn of ``user``/``key``, print ``began`` and wait to be
  killed (a process that dies mid-turn).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from botkit import Bot, Context, Runtime, StoreConfig, TextMessage
from botkit.storage.base import StorageError
from botkit.storage.redis import RedisStore


def keys(prefix: str) -> dict[str, str]:
    """The probe keys the workers and the test share."""
    return {
        "active": f"{prefix}:probe:active",
        "overlaps": f"{prefix}:probe:overlaps",
        "ready": f"{prefix}:probe:ready",
        "go": f"{prefix}:probe:go",
    }


async def turns(cfg: dict[str, Any]) -> dict[str, Any]:
    probe_keys = keys(cfg["prefix"])
    probe = aioredis.Redis.from_url(cfg["url"], decode_responses=True)
    store = RedisStore(
        cfg["url"],
        bot="race",
        prefix=cfg["prefix"],
        config=StoreConfig(lock_ttl=10.0, acquire_timeout=40.0),
    )
    bot = Bot("race")

    @bot.text()
    async def count(ctx: Context) -> None:
        if await probe.incr(probe_keys["active"]) != 1:
            await probe.incr(probe_keys["overlaps"])
        ctx.data["count"] = ctx.data.get("count", 0) + 1
        ctx.data.setdefault("by", {}).setdefault(str(os.getpid()), 0)
        ctx.data["by"][str(os.getpid())] += 1
        await asyncio.sleep(0)
        await probe.decr(probe_keys["active"])

    runtime = Runtime(bot, store)
    await runtime.start()
    await probe.rpush(probe_keys["ready"], os.getpid())
    # The go comes once every worker is ready, however slow the others start;
    # without it (the test gave up) the worker fails rather than run alone.
    if not await probe.blpop([probe_keys["go"]], timeout=600):
        raise SystemExit("no go signal from the test")

    async def one(message_id: str) -> str:
        message = TextMessage(id=message_id, user=cfg["user"], text="+1", timestamp=time.time())
        try:
            return (await runtime.handle_message(message)).outcome
        except StorageError as exc:
            errors.append(str(exc))
            return type(exc).__name__

    errors: list[str] = []
    outcomes = await asyncio.gather(*(one(i) for i in cfg["ids"]))
    result = {
        "outcomes": dict(collections.Counter(outcomes)),
        "waiting_users": store.waiting_users,
        "errors": errors[:5],
    }
    await runtime.stop()
    await probe.aclose()
    return result


async def hold(cfg: dict[str, Any]) -> None:
    store = RedisStore(
        cfg["url"],
        bot="race",
        prefix=cfg["prefix"],
        config=StoreConfig(lock_ttl=cfg["lock_ttl"], acquire_timeout=1.0),
    )
    await store.open()
    await store.begin_turn(cfg["user"], cfg["key"], inbound_at=time.time())
    print("began", flush=True)
    await asyncio.sleep(3600)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg["mode"] == "turns":
        print(json.dumps(asyncio.run(turns(cfg))), flush=True)
    elif cfg["mode"] == "hold":
        asyncio.run(hold(cfg))
    else:
        raise SystemExit(f"unknown mode {cfg['mode']!r}")


if __name__ == "__main__":
    main()
