"""A sender that reads outbox entries and then hangs on a provider that never answers.

Run by test_claim.py, which kills it with SIGKILL once it has read:
``python -m tests.delivery._dying_sender REDIS_URL PREFIX PROVIDER_URL [HEARTBEAT_TTL]``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

from botkit.delivery import CallbackSigner, OutboxWorker, OutboxWorkerConfig
from botkit.devino.client import DevinoClient, RetryPolicy
from botkit.storage import OutboxItem, RedisStore


async def main(url: str, prefix: str, provider: str, heartbeat_ttl: str = "6") -> None:
    store = RedisStore(url, bot="claim", prefix=prefix, consumer="doomed")
    await store.open()
    read = store.outbox_read

    async def reporting_read(
        consumer: str, count: int, block: float, **shards: Any
    ) -> list[OutboxItem]:
        items = await read(consumer, count, block, **shards)
        if items:
            print(f"READ {len(items)}", flush=True)
        return items

    store.outbox_read = reporting_read  # type: ignore[method-assign]
    client = DevinoClient(
        provider, api_key="k", timeout=httpx.Timeout(3600.0), retry=RetryPolicy(attempts=1)
    )
    sender = OutboxWorker(
        store,
        client,
        sender_name="Claim",
        signer=CallbackSigner("claim-test-secret-0123456789abcdef0123"),
        consumer="doomed",
        config=OutboxWorkerConfig(linger=0.05, heartbeat_ttl=float(heartbeat_ttl)),
    )
    sender.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
