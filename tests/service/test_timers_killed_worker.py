"""1,000 timers over two ``botkit run`` processes, one killed by SIGKILL mid-way.

Both serve the same bot on the same Redis; the provider emulator records every
message that arrives. Every timer fires, and fires once: once everything has
settled (no timer pending, nothing left in the outbox), the emulator's raw
record holds exactly one copy of each timer's reply, whichever process ran
it. The survivor takes the killed process's shards once its heartbeat lapses,
and with them the users it had claimed.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from botkit.storage import RedisStore
from tests.service._harness import BotProcess, free_port, run_env, wait_for
from tests.service.conftest import Provider

USERS = 100
TIMERS_PER_USER = 10


async def test_a_thousand_timers_fire_once_across_a_sigkill(
    provider: Provider,
    redis_url: str,
    redis_prefix: str,
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    env = run_env(
        provider.url,
        BOTKIT_REDIS_URL=redis_url,
        BOTKIT_KEY_PREFIX=redis_prefix,
        BOTKIT_TIMER_LEASE="3",
    )
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    # Messages carry a signed reference and ask for status callbacks, which
    # reach the survivor's URL: the public URL a load balancer in front of
    # both gives, which routes to the live one. A callback is the receipt that
    # keeps the survivor from resending what the killed one had sent.
    env["BOTKIT_PUBLIC_URL"] = urls[1]
    for name, port in zip(("doomed", "survivor"), ports, strict=True):
        args = ["run", "tests.service.timerbot:bot", "--host", "127.0.0.1", "--port", str(port)]
        process = BotProcess(args, env, tmp_path / f"{name}.log")
        process.start()
        processes.append(process)
    doomed, survivor = processes
    await doomed.wait_healthy(urls[0], within=60)
    await survivor.wait_healthy(urls[1], within=60)

    users = [f"7900{n:07d}" for n in range(USERS)]
    # The users write through the provider (their windows open there), half of
    # them to each process, as a load balancer would spread them.
    for half, url in enumerate(urls):
        provider.emulator.webhook_url = f"{url}/whatsapp/incoming/{env['BOTKIT_WEBHOOK_TOKEN']}"
        results = await asyncio.gather(
            *(
                provider.emulator.inject(user, f"schedule {TIMERS_PER_USER} 4 0.5")
                for user in users[half::2]
            )
        )
        assert all(r.status_code == 200 for r in results), results

    total = USERS * TIMERS_PER_USER

    def fired() -> Counter[tuple[str, str]]:
        """(user, text): how many copies of each "fired" message the provider received."""
        return Counter(
            (m.message.to, m.received.get("text", ""))
            for m in provider.emulator.messages
            if m.received.get("text", "").startswith("fired ")
        )

    await wait_for(lambda: sum(fired().values()) >= total // 3, within=120, what="a third fired")
    doomed.signal(signal.SIGKILL)
    await doomed.wait_exit()

    await wait_for(lambda: len(fired()) == total, within=120, what="every timer fired")
    # Then let everything settle: no timer left, nothing in the outbox that
    # could still reach the provider (a copy sent twice would come then).
    store = RedisStore(redis_url, bot="timerbot", prefix=redis_prefix)
    try:

        async def settled() -> bool:
            return await store.timers_pending() == 0 and await store.outbox_size() == 0

        await wait_for(settled, within=120, what="no timer pending, an empty outbox", every=0.25)
    finally:
        await store.close()
    copies = fired()
    expected = {(u, f"fired {k}") for u in users for k in range(TIMERS_PER_USER)}
    assert set(copies) == expected, "every timer fired"
    # The message references of the copies say whether a timer fired twice (two
    # references: a timers bug) or one reply was sent twice (one reference).
    references: dict[tuple[str, str], list[str]] = {}
    for m in provider.emulator.messages:
        key = (m.message.to, m.received.get("text", ""))
        if copies.get(key, 0) > 1:
            references.setdefault(key, []).append(m.received["callbackData"].split(".")[1])
    fired_twice = {key: refs for key, refs in references.items() if len(set(refs)) > 1}
    assert not fired_twice, f"{len(fired_twice)} timers fired twice: {list(fired_twice)[:5]}"
    assert not references, (
        f"{len(references)} of {total} replies reached the provider twice, each with one "
        f"reference (the outbox sent them again after the SIGKILL): {list(references)[:3]}"
    )
