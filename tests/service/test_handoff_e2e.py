"""Human handoff end to end: the pizza bot served for real (uvicorn), the provider emulator
over HTTP, a real Redis, the agent API over HTTP and a webhook receiver of our own.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from botkit import DeliveryStatus
from botkit.devtools.emulator import Emulator
from botkit.service import serve_app
from botkit.storage.base import StoreConfig
from botkit.storage.redis import RedisStore
from botkit.testing import LiveBot, ManualClock
from bots.pizza import CONNECTING, bot
from tests.conftest import delete_prefix, require_redis
from tests.service._harness import wait_for
from tests.service.test_app import FAST

AGENT_TOKEN = "agent-token-Jq3v9Lx27PwT"
HOOK_SECRET = "hook-secret-8KdZ2mQw5rTy"
ANNA = "79031112233"
MENU = "What would you like?"


@dataclass
class Receiver:
    """The helpdesk's side of the webhook: what it received, and whether it was signed."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    fail_next: int = 0

    def events(self, user: str | None = None) -> list[str]:
        return [p["event"] for p in self.posts if user is None or p["user"] == user]


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("x-botkit-signature", ""), expected):
            receiver.bad_signatures += 1
            return Response(status_code=401)
        if receiver.fail_next:
            receiver.fail_next -= 1
            return Response(status_code=503)
        receiver.posts.append(json.loads(body))
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_app(app) as url:
        receiver.url = f"{url}/hook"
        yield receiver


class Desk:
    """The agent API over HTTP, with the agent token."""

    def __init__(self, live: LiveBot) -> None:
        self.live = live
        self.http = httpx.AsyncClient(
            base_url=live.url, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, timeout=10
        )

    async def post(self, user: str, action: str, **body: Any) -> httpx.Response:
        return await self.http.post(f"/api/conversations/{user}/{action}", json=body)

    async def transcript(self, user: str, **params: Any) -> dict[str, Any]:
        answer = await self.http.get(f"/api/conversations/{user}", params=params)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


@pytest.fixture
def redis_prefix_url() -> AsyncIterator[tuple[str, str]]:
    url = require_redis()
    prefix = f"botkit-test-handoff-{uuid.uuid4().hex[:10]}"
    yield url, prefix
    delete_prefix(url, prefix)


@contextlib.asynccontextmanager
async def served(
    url: str,
    prefix: str,
    receiver: Receiver | None = None,
    *,
    emulator: Emulator | None = None,
    clock: ManualClock | None = None,
) -> AsyncIterator[tuple[LiveBot, Desk]]:
    store = RedisStore(url, bot="pizza", prefix=prefix, config=StoreConfig(), shards=16)
    settings: dict[str, Any] = {"agent_token": AGENT_TOKEN}
    if receiver is not None:
        settings |= {"agent_webhook_url": receiver.url, "agent_webhook_secret": HOOK_SECRET}
    live = LiveBot(bot, store=store, sender_config=FAST, emulator=emulator, clock=clock, **settings)
    async with live:
        desk = Desk(live)
        try:
            yield live, desk
        finally:
            await desk.http.aclose()


def texts_to(live: LiveBot, user: str) -> list[str]:
    return [m.received.get("text", "") for m in live.emulator.messages if m.message.to == user]


async def test_handoff_claim_reply_release_through_the_real_service(
    redis_prefix_url: tuple[str, str],
) -> None:
    async with webhook_receiver() as receiver, served(*redis_prefix_url, receiver) as (live, desk):
        await live.say(ANNA, "hi")
        await live.say(ANNA, "1")
        receiver.fail_next = 2  # the helpdesk is down for two tries: retried with backoff
        await live.say(ANNA, "agent")
        await live.replies(3)
        assert texts_to(live, ANNA)[-1] == CONNECTING

        for text in ("hello?", "is anyone there", "L"):
            await live.say(ANNA, text)

        async def heard_three() -> bool:
            return receiver.events(ANNA).count("message.received") == 3

        await wait_for(heard_three, what="three message.received webhook posts")
        assert receiver.events(ANNA)[0] == "handoff.started"
        assert [
            p["message"]["text"] for p in receiver.posts if p["event"] == "message.received"
        ] == [
            "hello?",
            "is anyone there",
            "L",
        ]
        assert receiver.bad_signatures == 0 and receiver.fail_next == 0
        assert len(texts_to(live, ANNA)) == 3, "the bot answered a handed-off user"

        listed = (await desk.http.get("/api/handoffs")).json()
        [item] = listed["handoffs"]
        assert (item["user"], item["status"], item["reason"]) == (
            ANNA,
            "waiting",
            "asked for a person",
        )
        assert item["last_message"]["text"] == "L"
        assert listed["total"] == 1

        page = await desk.transcript(ANNA)
        ins = [e["text"] for e in page["entries"] if e["kind"] == "in"]
        assert ins == ["hi", "1", "agent", "hello?", "is anyone there", "L"]
        assert page["handoff"]["status"] == "waiting" and page["window"]["open"]

        claimed = await desk.post(ANNA, "claim", agent="alice")
        assert claimed.status_code == 200, claimed.text
        second = await desk.post(ANNA, "claim", agent="bob")
        assert second.status_code == 409 and second.json()["error"] == "claimed_by_another"

        answer = await desk.post(ANNA, "reply", agent="alice", text="Hi, Alice here. Large it is!")
        assert answer.status_code == 202, answer.text
        await live.replies(4)
        assert texts_to(live, ANNA)[-1] == "Hi, Alice here. Large it is!"

        released = await desk.post(ANNA, "release", agent="alice")
        assert released.status_code == 200, released.text
        [*_, back] = await live.replies(5)
        assert back.received["text"].startswith("You are back with the pizza bot.")
        await live.say(ANNA, "L")  # the order goes on where it was
        [*_, asked] = await live.replies(6)
        assert asked.received["text"].startswith("What is the delivery address?")

        async def ended() -> bool:
            return "handoff.ended" in receiver.events(ANNA)

        await wait_for(ended, what="the handoff.ended webhook post")
        assert (await desk.http.get("/api/handoffs")).json() == {"total": 0, "handoffs": []}
        again = await desk.post(ANNA, "release", agent="alice")
        assert again.status_code == 409


async def test_the_agent_api_needs_its_own_token(redis_prefix_url: tuple[str, str]) -> None:
    async with served(*redis_prefix_url) as (live, desk):
        async with httpx.AsyncClient(base_url=live.url) as anonymous:
            assert (await anonymous.get("/api/handoffs")).status_code == 401
            wrong = {"Authorization": "Bearer not-the-agent-token-000"}
            assert (await anonymous.get("/api/handoffs", headers=wrong)).status_code == 401
        assert (await desk.http.get("/api/conversations/not-a-number")).status_code == 422
        assert (await desk.post(ANNA, "claim", agent="")).status_code == 422


async def test_an_operator_takes_over_and_a_handoff_times_out(
    redis_prefix_url: tuple[str, str],
) -> None:
    async with served(*redis_prefix_url) as (live, desk):
        await live.say(ANNA, "hi")
        await live.replies(1)
        taken = await desk.post(ANNA, "handoff", reason="vip customer", note="call back")
        assert taken.status_code == 200, taken.text
        assert (await desk.post(ANNA, "handoff")).status_code == 409
        await live.say(ANNA, "1")
        live.clock.advance(minutes=29)
        await live.say(ANNA, "anyone?")
        assert len(texts_to(live, ANNA)) == 1  # still handed off: no bot answers
        live.clock.advance(minutes=2)  # 31 minutes without an agent message
        [_, back] = await live.replies(2, within=20)
        assert back.received["text"] == (
            "You are back with the pizza bot.\n\n" + back.received["text"].split("\n\n", 1)[1]
        )
        assert MENU in back.received["text"]  # back at the menu, where the user was
        page = await desk.transcript(ANNA)
        events = [e["event"] for e in page["entries"] if e["kind"] == "handoff"]
        assert events == ["started", "timed_out"]


async def test_a_handed_off_users_opt_out_is_honoured(redis_prefix_url: tuple[str, str]) -> None:
    async with served(*redis_prefix_url) as (live, desk):
        await live.say(ANNA, "agent")
        await live.say(ANNA, "STOP")
        [_, stopped] = await live.replies(2)
        assert stopped.received["text"].startswith("You have unsubscribed")
        refused = await desk.post(ANNA, "reply", agent="alice", text="wait!")
        assert (refused.status_code, refused.json()["error"]) == (409, "opted_out")


async def test_an_agent_reply_outside_the_window_needs_a_template(
    redis_prefix_url: tuple[str, str],
) -> None:
    async with served(*redis_prefix_url) as (live, desk):
        await live.say(ANNA, "agent")
        await live.replies(1)
        await desk.post(ANNA, "claim", agent="alice")
        for _ in range(50):  # the agent keeps the handoff alive past the window
            live.clock.advance(minutes=29)
            if not (await desk.transcript(ANNA))["window"]["open"]:
                break
            answer = await desk.post(ANNA, "reply", agent="alice", text="still checking")
            assert answer.status_code == 202
        refused = await desk.post(ANNA, "reply", agent="alice", text="are you there?")
        assert (refused.status_code, refused.json()["error"]) == (409, "outside_session_window")
        sent = await desk.post(
            ANNA, "reply", agent="alice", template={"id": "follow_up", "params": ["Anna"]}
        )
        assert sent.status_code == 202 and sent.json()["mode"] == "template"


async def test_the_transcript_survives_a_restart_and_matches_the_emulator(
    redis_prefix_url: tuple[str, str],
) -> None:
    emulator = Emulator(api_key="live-test", clock=(clock := ManualClock()).now)
    async with served(*redis_prefix_url, emulator=emulator, clock=clock) as (live, desk):
        for text in ("hi", "2", "agent", "my pizza is cold"):
            await live.say(ANNA, text)
        await live.replies(3)
        await desk.post(ANNA, "reply", agent="alice", text="Sorry! A new one is on its way.")
        await desk.post(ANNA, "release", agent="alice")
        await live.say(ANNA, "M")
        await live.replies(6)

        async def all_read() -> bool:
            return all(m.status is DeliveryStatus.READ for m in emulator.messages)

        await wait_for(all_read, what="every message read")

    async with served(*redis_prefix_url, emulator=emulator, clock=clock) as (live, desk):
        page = await desk.transcript(ANNA)
    entries = page["entries"]
    assert [e["text"] for e in entries if e["kind"] == "in"] == [
        i.incoming["text"] for i in emulator.incoming
    ]
    out = [e for e in entries if e["kind"] == "out"]
    assert [e.get("text") for e in out] == [m.received.get("text") for m in emulator.messages]
    assert [e["status"] for e in out] == ["read"] * len(emulator.messages)
    assert [e.get("by") for e in out] == [None, None, None, "agent:alice", None, None]


async def test_an_agent_page_on_one_worker_hears_a_handoff_on_another(
    redis_prefix_url: tuple[str, str],
) -> None:
    """Two services on one Redis (as botkit run --workers 2): the event stream of one
    tells what happened in the other's turns."""
    import asyncio

    events: list[dict[str, Any]] = []
    opened = asyncio.Event()
    async with served(*redis_prefix_url) as (first, _), served(*redis_prefix_url) as (_, other):

        async def listen() -> None:
            async with other.http.stream("GET", "/api/agent/events") as response:
                async for line in response.aiter_lines():
                    if line == ": connected":  # from now on, every worker's notices come
                        opened.set()
                    if line.startswith("data: "):
                        events.append(json.loads(line.removeprefix("data: ")))

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(opened.wait(), 5)
        await first.say(ANNA, "agent")

        def heard() -> bool:
            return [e["event"] for e in events] == ["handoff.started"]

        try:
            await wait_for(heard, what="the other worker's handoff on this event stream")
        finally:
            listener.cancel()
    assert events[0]["user"] == ANNA and events[0]["handoff"]["reason"] == "asked for a person"


def test_a_webhook_without_a_key_to_sign_with_is_refused_at_start() -> None:
    from botkit.service import SettingsError, create_app, load_settings

    settings = load_settings(
        devino_api_key="k", webhook_token="t" * 24, agent_webhook_url="https://helpdesk.test/hook"
    )
    with pytest.raises(SettingsError, match="BOTKIT_AGENT_WEBHOOK_SECRET"):
        create_app(bot, settings)
    # botkit run says it with the other settings' problems, in one pass.
    assert any("BOTKIT_AGENT_WEBHOOK_SECRET" in line for line in settings.weak_secrets())
