"""1,000 timers over two ``botkit run`` processes, one killed by SIGKILL mid-way.

Both serve the same bot on the same Redis; the provider emulator counts what
arrives. Every timer fires, and fires once: its turn commits one reply (one
message reference) whichever process ran it, and a user claimed by the killed
process is claimed again by the survivor after the lease.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import httpx

from tests.service._harness import BotProcess, free_port, incoming, run_env, wait_for
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
    urls = []
    for name in ("doomed", "survivor"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["run", "tests.service.timerbot:bot", "--host", "127.0.0.1", "--port", str(port)]
        own = {**env, "BOTKIT_PUBLIC_URL": url}  # messages carry a signed reference
        process = BotProcess(args, own, tmp_path / f"{name}.log")
        process.start()
        processes.append(process)
        urls.append(url)
    doomed, survivor = processes
    await doomed.wait_healthy(urls[0], within=60)
    await survivor.wait_healthy(urls[1], within=60)

    users = [f"7900{n:07d}" for n in range(USERS)]
    async with httpx.AsyncClient(timeout=30) as http:

        async def schedule(n: int, user: str) -> None:
            body = incoming(user, f"schedule {TIMERS_PER_USER} 4 0.5")
            answer = await http.post(
                f"{urls[n % 2]}/whatsapp/incoming/{env['BOTKIT_WEBHOOK_TOKEN']}", json=body
            )
            assert answer.status_code == 200, answer.text

        await asyncio.gather(*(schedule(n, u) for n, u in enumerate(users)))

    total = USERS * TIMERS_PER_USER

    def fired() -> list[tuple[str, str, str]]:
        """(user, text, message reference) of every "fired" message the provider accepted."""
        return [
            (m.message.to, m.received.get("text", ""), m.received["callbackData"].split(".")[1])
            for m in provider.emulator.messages
            if m.received.get("text", "").startswith("fired ")
        ]

    await wait_for(lambda: len(fired()) >= total // 3, within=120, what="a third fired")
    doomed.signal(signal.SIGKILL)
    await doomed.wait_exit()

    def distinct() -> set[tuple[str, str]]:
        return {(user, text) for user, text, _ in fired()}

    await wait_for(lambda: len(distinct()) == total, within=120, what="every timer fired")
    expected = {(u, f"fired {k}") for u in users for k in range(TIMERS_PER_USER)}
    assert distinct() == expected
    # One committed reply per timer: a timer that fired twice would show two references.
    references = Counter((user, text) for user, text, _ in set(fired()))
    assert max(references.values()) == 1, [k for k, v in references.items() if v > 1][:5]
