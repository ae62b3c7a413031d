"""The web service's HTTP contract, served for real under uvicorn.

Each test runs a bot through :class:`botkit.testing.LiveBot` (the app under
uvicorn on a free port, the provider emulator over HTTP) and speaks to it
as the provider and as another system would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from botkit import Bot, Context, DeliveryStatus, RetryPolicy, StoreConfig
from botkit.delivery import OutboxWorkerConfig
from botkit.devtools.emulator import AcceptedMessage
from botkit.storage.memory import MemoryStore
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import (
    API_TOKEN,
    PROVIDER_INCOMING_EXAMPLE,
    PROVIDER_STATUS_EXAMPLE,
    incoming,
    wait_for,
)

ANNA = "79031234567"
BORIS = "491791112233"
FAST = OutboxWorkerConfig(
    retry=RetryPolicy(attempts=None, base_delay=0.02, max_delay=0.2),
    block=0.2,
    housekeeping_every=0.05,
)


class Stack:
    """A LiveBot plus an HTTP client on its base URL."""

    def __init__(self, live: LiveBot, http: httpx.AsyncClient) -> None:
        self.live = live
        self.http = http
        self.incoming = f"/whatsapp/incoming/{live.token}"
        self.status = f"/whatsapp/status/{live.token}"

    def replies(self, user: str | None = None) -> list[str]:
        return [
            m.received.get("text", "")
            for m in self.live.emulator.messages
            if user is None or m.message.to == user
        ]

    async def settled(self) -> None:
        """Wait until the outbox is empty (every committed reply reached the provider)."""
        store = self.live.service.store

        async def empty() -> bool:
            return await store.outbox_size() == 0

        await wait_for(empty, what="the outbox to empty")

    async def callbacks_acknowledged(self) -> None:
        """Wait until every accepted message's last status callback was answered 2xx."""
        final = {DeliveryStatus.READ, DeliveryStatus.FAILED}

        def acknowledged(m: AcceptedMessage) -> bool:
            return m.status in final and any(
                c.status == m.status and c.delivered for c in m.callbacks
            )

        await self.live.emulator.wait_until(
            lambda: all(acknowledged(m) for m in self.live.emulator.messages),
            what="every status callback acknowledged",
        )


@contextlib.asynccontextmanager
async def serve(bot: Bot, **settings: Any) -> AsyncIterator[Stack]:
    """The bot served; on a clean exit, every status callback was acknowledged first."""
    live = LiveBot(bot, sender_config=FAST, **settings)
    async with live, httpx.AsyncClient(base_url=live.url) as http:
        stack = Stack(live, http)
        yield stack
        await stack.callbacks_acknowledged()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The echo bot, with the send API enabled."""
    async with serve(echo.bot, api_token=API_TOKEN) as s:
        yield s


# -- incoming messages -------------------------------------------------------


async def test_a_message_runs_a_turn_and_the_webhook_answers_200_empty(stack: Stack) -> None:
    answer = await stack.http.post(stack.incoming, json=incoming(ANNA, "hi"))
    assert (answer.status_code, answer.content) == (200, b"")
    # The token may come as ?token= instead of in the path.
    answer = await stack.http.post(
        "/whatsapp/incoming", params={"token": stack.live.token}, json=incoming(ANNA, "again")
    )
    assert (answer.status_code, answer.content) == (200, b"")
    await stack.live.replies(2)
    assert stack.replies(ANNA) == ["echo #1: hi", "echo #2: again"]


async def test_the_turn_is_committed_before_the_webhook_answers(stack: Stack) -> None:
    answer = await stack.http.post(stack.incoming, json=incoming(ANNA, "hi"))
    assert answer.status_code == 200
    conversation = await stack.live.service.store.load(ANNA)
    assert conversation.data == {"n": 1}
    assert conversation.last_inbound is not None


async def test_an_array_runs_each_message_each_users_in_order(stack: Stack) -> None:
    body = [
        incoming(ANNA, "a1"),
        incoming(BORIS, "b1"),
        incoming(ANNA, "a2"),
        incoming(ANNA, "a3"),
        incoming(BORIS, "b2"),
    ]
    answer = await stack.http.post(stack.incoming, json=body)
    assert (answer.status_code, answer.content) == (200, b"")
    await stack.live.replies(5)
    assert stack.replies(ANNA) == ["echo #1: a1", "echo #2: a2", "echo #3: a3"]
    assert stack.replies(BORIS) == ["echo #1: b1", "echo #2: b2"]


async def test_a_duplicate_is_answered_200_and_not_run_again(stack: Stack) -> None:
    message = incoming(ANNA, "once")
    first = await stack.http.post(stack.incoming, json=message)
    again = await stack.http.post(stack.incoming, json=message)
    in_array = await stack.http.post(stack.incoming, json=[message, incoming(ANNA, "next")])
    assert [a.status_code for a in (first, again, in_array)] == [200, 200, 200]
    assert again.content == b""
    await stack.live.replies(2)
    await stack.settled()
    assert stack.replies(ANNA) == ["echo #1: once", "echo #2: next"]


async def test_every_kind_of_message(stack: Stack) -> None:
    body = [
        incoming(ANNA, contentUrl="https://cdn.example/a.ogg", contentType="audio/ogg"),
        incoming(ANNA, whatsAppContacts=[{"phones": [{"phone": "+79030000000"}]}]),
        incoming(ANNA, whatsAppGeoLocation={"latitude": 1.5, "longitude": 2.5}),
        incoming(ANNA, "text"),
    ]
    assert (await stack.http.post(stack.incoming, json=body)).status_code == 200
    await stack.live.replies(4)
    assert stack.replies(ANNA) == [
        "#1: got media audio/ogg",
        "#2: got contacts 1",
        "#3: got location",
        "echo #4: text",
    ]


async def test_the_providers_example_is_accepted(stack: Stack) -> None:
    answer = await stack.http.post(stack.incoming, json=PROVIDER_INCOMING_EXAMPLE)
    assert (answer.status_code, answer.content) == (200, b"")
    # "from": "str" is no phone number: the turn ran all the same.
    conversation = await stack.live.service.store.load("str")
    assert conversation.data == {"n": 1}


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["incoming", "status"])
async def test_a_wrong_or_missing_token_is_401_and_runs_nothing(stack: Stack, kind: str) -> None:
    token = stack.live.token
    body = incoming(ANNA, "hi")
    answers = [
        await stack.http.post(f"/whatsapp/{kind}/wrong-token", json=body),
        await stack.http.post(f"/whatsapp/{kind}/{token[:-1]}", json=body),
        await stack.http.post(f"/whatsapp/{kind}/{token}x", json=body),
        await stack.http.post(f"/whatsapp/{kind}", json=body),
        await stack.http.post(f"/whatsapp/{kind}", params={"token": "nope"}, json=body),
        # The path's token wins over the query's.
        await stack.http.post(f"/whatsapp/{kind}/nope", params={"token": token}, json=body),
    ]
    assert [a.status_code for a in answers] == [401] * len(answers)
    assert answers[0].json()["error"] == "unauthorized"
    assert (await stack.live.service.store.load(ANNA)).data == {}


@pytest.mark.parametrize("kind", ["incoming", "status"])
@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"hello", b"\xff\xfe\x00garbage", b'{"a": 1}}', b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "truncated", "word", "binary", "trailing", "deeply-nested"],
)
async def test_a_body_that_is_not_json_is_400(stack: Stack, kind: str, body: bytes) -> None:
    answer = await stack.http.post(
        f"/whatsapp/{kind}/{stack.live.token}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_json"


async def test_json_of_the_wrong_shape_is_422_naming_the_fields(stack: Stack) -> None:
    answer = await stack.http.post(stack.incoming, json={"text": "hi"})
    assert answer.status_code == 422
    # A single object's fields are named as its own; in an array, by position.
    assert {e["loc"] for e in answer.json()["errors"]} >= {"incomingMessageId", "from", "to"}

    answer = await stack.http.post(stack.incoming, json=[incoming(ANNA, "ok"), {"to": "x"}])
    assert answer.status_code == 422
    assert "1.from" in {e["loc"] for e in answer.json()["errors"]}

    for body in ([], 42, "text", None, [1, 2]):
        answer = await stack.http.post(stack.incoming, content=json.dumps(body))
        assert answer.status_code == 422, body
        assert answer.json()["errors"]

    answer = await stack.http.post(stack.status, json=[{"status": "sent"}])
    assert answer.status_code == 422
    assert "0.messageId" in {e["loc"] for e in answer.json()["errors"]}

    await stack.settled()
    assert stack.replies() == [], "nothing of a rejected body ran, not even its valid part"


async def _raw_request(url: str, head: str, body_parts: list[bytes]) -> bytes:
    """Send a request's head and the given body parts over a raw socket; return the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode())
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()


async def test_a_body_over_the_limit_is_413_without_reading_it_all() -> None:
    async with serve(echo.bot, max_body_bytes=64 * 1024) as stack:
        # Declared too large: refused on the headers, the body never sent.
        head = (
            f"POST {stack.incoming} HTTP/1.1\r\nHost: botkit\r\n"
            "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
        )
        answer = await _raw_request(stack.live.url, head, [b"[" * 1024])
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"body_too_large" in answer

        # Streamed without a length: refused once past the limit, the stream never ended.
        head = (
            f"POST {stack.status} HTTP/1.1\r\nHost: botkit\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 16 * 1024
        chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 5
        answer = await _raw_request(stack.live.url, head, chunks)
        assert answer.startswith(b"HTTP/1.1 413 ")

        # Up to the limit is fine.
        fits = json.dumps(incoming(ANNA, "fits")).ljust(64 * 1024).encode()
        answer_ok = await stack.http.post(stack.incoming, content=fits)
        assert answer_ok.status_code == 200
        too_big = await stack.http.post(stack.incoming, content=fits + b" ")
        assert too_big.status_code == 413


async def test_the_default_limit_is_one_mebibyte(stack: Stack) -> None:
    fits = json.dumps(incoming(ANNA, "fits")).ljust(1024 * 1024).encode()
    assert (await stack.http.post(stack.incoming, content=fits)).status_code == 200
    assert (await stack.http.post(stack.incoming, content=fits + b" ")).status_code == 413


# -- failures -------------------------------------------------------------------


def _fragile_bot(*, with_error_handler: bool) -> Bot:
    bot = Bot("fragile")

    @bot.text("boom")
    async def boom(ctx: Context) -> None:
        ctx.data["touched"] = True
        await ctx.reply("this reply is dropped with the failed turn")
        raise RuntimeError("a bug in the handler")

    @bot.text()
    async def fine(ctx: Context) -> None:
        await ctx.reply(f"fine, data={sorted(ctx.data)}")

    if with_error_handler:

        @bot.error(RuntimeError)
        async def sorry(ctx: Context, exc: BaseException) -> None:
            await ctx.reply(f"sorry: {exc}")

    return bot


async def test_a_bug_in_a_handler_goes_to_the_error_handlers_and_the_webhook_answers_200() -> None:
    async with serve(_fragile_bot(with_error_handler=True)) as stack:
        boom = incoming(ANNA, "boom")
        answer = await stack.http.post(stack.incoming, json=boom)
        assert (answer.status_code, answer.content) == (200, b"")
        # A poison message is done: the provider's retry does not run it again.
        assert (await stack.http.post(stack.incoming, json=boom)).status_code == 200
        assert (await stack.http.post(stack.incoming, json=incoming(ANNA, "hi"))).status_code == 200
        await stack.live.replies(2)
        await stack.settled()
        assert stack.replies(ANNA) == ["sorry: a bug in the handler", "fine, data=[]"]


async def test_a_bug_with_no_error_handler_is_logged_and_answered_200(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(_fragile_bot(with_error_handler=False)) as stack:
        answer = await stack.http.post(stack.incoming, json=incoming(ANNA, "boom"))
        assert (answer.status_code, answer.content) == (200, b"")
        assert any("a bug in the handler" in r.getMessage() for r in caplog.records)
        await stack.settled()
        assert stack.replies(ANNA) == []


async def test_a_user_busy_past_the_timeout_is_503_and_nothing_is_marked_done() -> None:
    store = MemoryStore(StoreConfig(acquire_timeout=0.2))
    async with serve(echo.bot, store=store) as stack:
        await stack.http.post(stack.incoming, json=incoming(ANNA, "first"))
        held = await store.begin_turn(ANNA, None)  # another turn of Anna, somewhere
        message = incoming(ANNA, "second")
        answer = await stack.http.post(stack.incoming, json=message)
        assert answer.status_code == 503
        assert answer.json()["error"] == "unavailable"
        assert int(answer.headers["retry-after"]) > 0
        # Another user is not held up meanwhile.
        other = await stack.http.post(stack.incoming, json=incoming(BORIS, "hi"))
        assert other.status_code == 200

        await store.abort_turn(held)
        retry = await stack.http.post(stack.incoming, json=message)
        assert retry.status_code == 200
        await stack.live.replies(3)
        assert stack.replies(ANNA) == ["echo #1: first", "echo #2: second"]


# -- status callbacks -----------------------------------------------------------


async def test_status_callbacks_are_acknowledged_200_empty(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    [reply] = await stack.live.replies(1)
    emulator = stack.live.emulator
    await emulator.wait_for_callbacks(3)
    assert [(c.status.wire, c.http_status) for c in emulator.callbacks] == [
        ("SENT", 200),
        ("DELIVERED", 200),
        ("READ", 200),
    ]
    # The provider's example shape (all nine keys, numbers as numbers), for our message.
    report = {
        **PROVIDER_STATUS_EXAMPLE[0],
        "messageId": int(reply.message_id),
        "options": reply.received["callbackData"],
    }
    for body in (report, [report], [report, {**report, "status": "read"}]):
        answer = await stack.http.post(stack.status, json=body)
        assert (answer.status_code, answer.content) == (200, b"")


async def test_the_providers_status_example_parses_but_carries_no_signature(stack: Stack) -> None:
    answer = await stack.http.post(stack.status, json=PROVIDER_STATUS_EXAMPLE)
    # Not a shape problem (400/422): its "options" is not botkit's signed
    # reference, so it is ignored, and acknowledged so the provider stops.
    assert (answer.status_code, answer.content) == (200, b"")
    metrics = (await stack.http.get("/metrics")).text
    assert 'botkit_callbacks_refused_total{reason="signature"}' in metrics


# -- the send API -----------------------------------------------------------------


def _bearer(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_send_api_is_404_without_an_api_token() -> None:
    async with serve(echo.bot) as stack:
        answer = await stack.http.post("/api/send", json={"to": ANNA, "text": "hi"})
        assert answer.status_code == 404
        answer = await stack.http.post(
            "/api/send", json={"to": ANNA, "text": "hi"}, headers=_bearer()
        )
        assert answer.status_code == 404


async def test_send_api_inside_the_window_queues_text(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    answer = await stack.http.post(
        "/api/send", json={"to": "+7 (903) 123-45-67", "text": "your order is ready"}
    )
    assert answer.status_code == 401
    answer = await stack.http.post(
        "/api/send",
        json={"to": "+7 (903) 123-45-67", "text": "your order is ready"},
        headers=_bearer(),
    )
    assert answer.status_code == 202
    assert answer.json()["status"] == "queued" and answer.json()["mode"] == "text"
    await stack.live.replies(2)
    assert stack.replies(ANNA) == ["echo #1: hi", "your order is ready"]


async def test_send_api_outside_the_window(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    await stack.live.replies(1)
    stack.live.clock.advance(hours=25)

    answer = await stack.http.post(
        "/api/send", json={"to": ANNA, "text": "still there?"}, headers=_bearer()
    )
    assert answer.status_code == 409
    refusal = answer.json()
    assert refusal["error"] == "outside_session_window"
    assert "template" in refusal["message"]

    answer = await stack.http.post(
        "/api/send",
        json={
            "to": ANNA,
            "text": "still there?",
            "template": {"id": "come_back", "params": {"1": "Anna"}, "language": "en"},
        },
        headers=_bearer(),
    )
    assert answer.status_code == 202
    assert answer.json()["mode"] == "template"
    messages = await stack.live.replies(2)
    sent = messages[1].received
    assert (sent["templateId"], sent["templateParams"], sent["languageCode"]) == (
        "come_back",
        {"1": "Anna"},
        "en",
    )
    assert "text" not in sent
    await stack.settled()
    assert len(stack.live.emulator.messages) == 2, "the refused text was never sent"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": API_TOKEN},
        {"Authorization": f"Bearer {API_TOKEN}x"},
    ],
    ids=["missing", "wrong", "scheme", "bare", "longer"],
)
async def test_send_api_bad_token_is_401(stack: Stack, headers: dict[str, str]) -> None:
    answer = await stack.http.post("/api/send", json={"to": ANNA, "text": "hi"}, headers=headers)
    assert answer.status_code == 401
    await stack.settled()
    assert stack.replies() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"to": "12", "text": "hi"}, 422),
        ({"to": "not a number", "text": "hi"}, 422),
        ({"to": "+0 903 123", "text": "hi"}, 422),
        ({"text": "hi"}, 422),
        ({"to": ANNA}, 422),
        ({"to": ANNA, "text": ""}, 422),
        ({"to": ANNA, "text": "hi", "colour": "red"}, 422),
        ({"to": ANNA, "template": {"params": {"1": "x"}}}, 422),
        ({"to": ANNA, "media": {"url": "ftp://x/y.pdf", "type": "application/pdf"}}, 422),
        ({"to": 79031234567, "text": "hi"}, 422),
        ([{"to": ANNA, "text": "hi"}], 422),
        ("hi", 422),
    ],
)
async def test_send_api_invalid_number_or_body_is_422(
    stack: Stack, body: object, status: int
) -> None:
    answer = await stack.http.post("/api/send", json=body, headers=_bearer())
    assert answer.status_code == status
    assert answer.json()["error"] in {"invalid_body", "invalid_phone"}


async def test_send_api_names_the_fields_at_fault(stack: Stack) -> None:
    answer = await stack.http.post(
        "/api/send", json={"to": ANNA, "template": {"id": ""}}, headers=_bearer()
    )
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["errors"]] == ["template.id"]


async def test_send_api_media(stack: Stack) -> None:
    await stack.live.say(ANNA, "hi")
    answer = await stack.http.post(
        "/api/send",
        json={
            "to": ANNA,
            "text": "the menu",
            "media": {"url": "https://cdn.example/menu.pdf", "type": "application/pdf"},
        },
        headers=_bearer(),
    )
    assert answer.status_code == 202
    messages = await stack.live.replies(2)
    assert messages[1].received["contentUrl"] == "https://cdn.example/menu.pdf"


# -- health, readiness, metrics ---------------------------------------------------


async def test_health_readiness_and_metrics(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).status_code == 200
    assert (await stack.http.get("/readyz")).status_code == 200
    await stack.live.say(ANNA, "hi")
    await stack.http.post(stack.incoming, json={"nope": 1})
    metrics = await stack.http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'botkit_turns_total{kind="text",outcome="handled"}' in text
    assert 'botkit_webhook_requests_total{endpoint="incoming",status="422"}' in text
    assert "botkit_turn_duration_seconds_bucket" in text


async def test_a_store_down_at_start_up_makes_the_service_unready_not_dead() -> None:
    from botkit.storage.redis import RedisStore
    from tests.helpers import free_port

    nowhere = RedisStore(f"redis://127.0.0.1:{free_port()}/0", bot="echo", socket_timeout=0.3)
    async with (
        LiveBot(echo.bot, store=nowhere) as live,
        httpx.AsyncClient(base_url=live.url) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        answer = await http.post(
            f"/whatsapp/incoming/{live.token}",
            json={"incomingMessageId": 1, "from": "79031234567", "to": "79000000000", "text": "hi"},
        )
        assert answer.status_code == 503
        assert "127.0.0.1" not in answer.text, "the caller is not told where the store is"
