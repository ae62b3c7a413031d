"""A message whose text is not valid Unicode never blocks the webhook or other users.

JSON can carry half a UTF-16 surrogate pair (``"\\ud800"``): valid JSON, but
text with no UTF-8 form, which can be neither stored in Redis nor sent. The
service repairs it (U+FFFD) when it reads the body, so the message is answered
once, like any other, instead of failing with 503 and being retried by the
provider for hours. The real service: ``botkit run`` under uvicorn, a real
Redis and the provider emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.service._harness import WEBHOOK_TOKEN, BotProcess, incoming
from tests.service.conftest import Provider
from tests.service.test_echo_e2e import replies_to, service_env, start_service

__all__ = ["service_env"]  # the fixture, used by name

POISON_USER = "79035550000"


def raw(payload: object) -> bytes:
    """JSON as the provider sends it: non-ASCII escaped, so a lone surrogate stays ``\\udXXX``."""
    return json.dumps(payload, ensure_ascii=True).encode()


async def test_one_lone_surrogate_among_60_messages_is_answered_once_and_blocks_nobody(
    provider: Provider,
    service_env: dict[str, str],
    processes: list[BotProcess],
    tmp_path: Path,
) -> None:
    _, url = await start_service(processes, provider, service_env, tmp_path)
    webhook = f"{url}/whatsapp/incoming/{WEBHOOK_TOKEN}"
    users = [f"7903{n:07d}" for n in range(60)]
    bodies = [incoming(user, f"hello {n}") for n, user in enumerate(users)]
    poison = incoming(POISON_USER, "broken \ud800 text")
    assert b"\\ud800" in raw(poison)
    bodies.insert(30, poison)
    headers = {"content-type": "application/json"}

    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(webhook, content=raw(body), headers=headers) for body in bodies)
        )
        assert [(a.status_code, a.content) for a in answers] == [(200, b"")] * 61

        await provider.emulator.wait_for_messages(61, within=30)
        for n, user in enumerate(users):
            assert replies_to(provider, user) == [f"echo #1: hello {n}"]
        assert replies_to(provider, POISON_USER) == ["echo #1: broken \ufffd text"]

        # The provider retries the same message (it cannot know it was fine):
        # a duplicate, answered 200 and not handled again.
        again = await http.post(webhook, content=raw(poison), headers=headers)
        assert (again.status_code, again.content) == (200, b"")

        # In a batch body the poison message does not hold back the others.
        batch = [incoming(users[0], "second"), incoming(POISON_USER, "\udfff"), incoming(users[1])]
        batch[2]["text"] = "third"
        answer = await http.post(webhook, content=raw(batch), headers=headers)
        assert (answer.status_code, answer.content) == (200, b"")
        await provider.emulator.wait_for_messages(64, within=30)
    assert replies_to(provider, users[0])[-1] == "echo #2: second"
    assert replies_to(provider, users[1])[-1] == "echo #2: third"
    assert replies_to(provider, POISON_USER) == ["echo #1: broken \ufffd text", "echo #2: \ufffd"]
    assert len(provider.emulator.messages) == 64
