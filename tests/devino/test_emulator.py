"""The emulator: WhatsApp's rules, status callbacks, injection and its control API."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import httpx
import pytest

from botkit import DeliveryStatus
from botkit.devino import (
    DevinoClient,
    DevinoConfigError,
    OutgoingMessage,
    StatusErrorCode,
    parse_incoming,
    parse_statuses,
)
from botkit.devtools.emulator import Emulator, RateLimit, main

from .conftest import API_KEY, SENDER, Receiver

USER = "79031112233"
DAY = 86_400


def free_text(callback_url: str, to: str = USER, data: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        sender=SENDER, to=to, text="hello", callback_url=callback_url, callback_data=data
    )


def template(callback_url: str, to: str = USER) -> OutgoingMessage:
    return OutgoingMessage(
        sender=SENDER,
        to=to,
        template_id="welcome",
        template_params=["Ann"],
        callback_url=callback_url,
    )


async def statuses_of(receiver: Receiver, count: int) -> list[tuple[str, int | None]]:
    bodies = await receiver.wait_for(count, "/status")
    reports = [report for body in bodies for report in parse_statuses(body)]
    return [(report.to_wire()["status"], report.error_code) for report in reports]


async def test_a_message_is_sent_delivered_and_read(
    client: DevinoClient, emulator: Emulator, receiver: Receiver
) -> None:
    await emulator.inject(USER, "hi bot")
    [result] = await client.send([free_text(f"{receiver.url}/status", data="turn-42")])

    bodies = await receiver.wait_for(3, "/status")
    assert all(isinstance(body, list) and len(body) == 1 for body in bodies)
    assert [body[0]["status"] for body in bodies] == ["SENT", "DELIVERED", "READ"]
    assert {body[0]["messageId"] for body in bodies} == {int(result.message_id or 0)}
    assert {body[0]["options"] for body in bodies} == {"turn-42"}
    assert set(bodies[0][0]) == {
        "messageId", "ts", "status", "errorCode", "ip", "browser", "os", "userAgent", "options"
    }  # fmt: skip
    record = emulator.message(result.message_id or "")
    assert record is not None and record.status is DeliveryStatus.READ


async def test_free_text_outside_the_window_fails_with_2312(
    client: DevinoClient, emulator: Emulator, receiver: Receiver
) -> None:
    callback = f"{receiver.url}/status"
    await emulator.inject(USER, "hi")
    emulator.advance_clock(DAY + 1)
    assert not emulator.window_open(USER)

    assert (await client.send_one(free_text(callback))).ok  # accepted: the failure comes later
    assert await statuses_of(receiver, 1) == [("FAILED", 2312)]

    await client.send_one(template(callback))  # templates are fine outside the window
    assert (await statuses_of(receiver, 4))[1:] == [("SENT", 0), ("DELIVERED", 0), ("READ", 0)]
    assert StatusErrorCode(2312).action == "resend_as_template"


async def test_a_user_who_never_wrote_gets_only_templates(
    client: DevinoClient, receiver: Receiver
) -> None:
    await client.send_one(free_text(f"{receiver.url}/status"))
    assert await statuses_of(receiver, 1) == [("FAILED", 2312)]


async def test_each_inbound_message_resets_the_window_and_replies_never_do(
    client: DevinoClient, emulator: Emulator, receiver: Receiver
) -> None:
    await emulator.inject(USER, "first")
    emulator.advance_clock(20 * 3600)
    await emulator.inject(USER, "second")
    emulator.advance_clock(20 * 3600)
    assert emulator.window_open(USER)  # 20 h after the second message

    await client.send_one(free_text(f"{receiver.url}/status"))  # a reply: no extension
    emulator.advance_clock(5 * 3600)
    assert not emulator.window_open(USER)


async def test_too_many_messages_to_one_user_fail_with_2301(
    emulator_url: str, emulator: Emulator, receiver: Receiver
) -> None:
    emulator.rate_limit = RateLimit(messages=3, per=60.0)
    callback = f"{receiver.url}/status"
    async with DevinoClient(emulator_url, api_key=API_KEY, concurrency=1, batch_cap=1) as devino:
        await devino.send([template(callback) for _ in range(4)])
        await devino.send_one(template(callback, to="79035550000"))  # someone else: fine
    await emulator.wait_until(
        lambda: all(m.status and m.status.is_final for m in emulator.messages)
    )
    outcomes = [(m.message.to, m.status, m.statuses[-1].error_code) for m in emulator.messages]
    assert outcomes == [
        (USER, DeliveryStatus.READ, 0),
        (USER, DeliveryStatus.READ, 0),
        (USER, DeliveryStatus.READ, 0),
        (USER, DeliveryStatus.FAILED, 2301),
        ("79035550000", DeliveryStatus.READ, 0),
    ]

    emulator.advance_clock(61)  # the rate window slid past
    await devino_send(emulator_url, template(callback))
    await emulator.wait_until(lambda: emulator.messages[-1].status is DeliveryStatus.READ)


async def devino_send(url: str, message: OutgoingMessage) -> None:
    async with DevinoClient(url, api_key=API_KEY) as devino:
        assert (await devino.send_one(message)).ok


async def test_numbers_not_on_whatsapp_fail_with_2305(receiver: Receiver) -> None:
    emulator = Emulator(not_on_whatsapp=["+7 903 000-00-00"])
    async with emulator.serve() as url:
        await devino_send(url, template(f"{receiver.url}/status", to="79030000000"))
        assert await statuses_of(receiver, 1) == [("FAILED", 2305)]


async def test_a_failing_callback_is_retried(
    client: DevinoClient, emulator: Emulator, receiver: Receiver
) -> None:
    receiver.failures = 2
    await client.send_one(free_text(f"{receiver.url}/status"))  # FAILED 2312, one status
    attempts = await emulator.wait_for_callbacks(1)
    assert [attempt.http_status for attempt in emulator.callbacks] == [500, 500, 200]
    assert attempts[0].attempt == 3
    assert len(receiver.bodies("/status")) == 3  # the same callback, three times


async def test_inject_posts_the_providers_shape_to_the_webhook(
    emulator_url: str, emulator: Emulator, receiver: Receiver
) -> None:
    emulator.webhook_url = f"{receiver.url}/incoming"
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{emulator_url}/_emulator/incoming",
            json={"from": "+7 903 111-22-33", "text": "hello", "profileName": "Ann"},
        )
    assert answer.status_code == 200
    assert answer.json()["webhookStatus"] == 200 and answer.json()["webhookBody"] == ""

    [posted] = await receiver.wait_for(1, "/incoming")
    assert isinstance(posted, dict)  # one object, as on the provider's page
    assert isinstance(posted["incomingMessageId"], int) and isinstance(posted["ts"], int)
    assert set(posted) == {"incomingMessageId", "to", "from", "text", "profileName", "ts"}
    [message] = parse_incoming(posted)
    assert (message.sender, message.text, message.to) == (USER, "hello", emulator.business_number)
    assert message.ts == int(emulator.now()) or message.ts == int(emulator.now()) - 1
    assert emulator.window_open(USER)


async def test_inject_many_posts_one_array_and_opens_every_window(receiver: Receiver) -> None:
    emulator = Emulator(webhook_url=f"{receiver.url}/incoming")
    users = ["79031110001", "79031110002", "79031110003"]
    results = await emulator.inject_many([{"from": user, "text": f"hi {user}"} for user in users])
    await emulator.aclose()
    [posted] = await receiver.wait_for(1, "/incoming")  # one request for all three
    assert isinstance(posted, list)
    messages = parse_incoming(posted)
    assert [(m.sender, m.text) for m in messages] == [(u, f"hi {u}") for u in users]
    assert len({m.incoming_message_id for m in messages}) == 3
    assert [r.status_code for r in results] == [200, 200, 200]
    assert [r.incoming for r in results] == posted
    assert all(emulator.window_open(user) for user in users)


async def test_incoming_and_outgoing_messages_never_share_an_id(
    client: DevinoClient, emulator: Emulator, receiver: Receiver
) -> None:
    # A bot that keys anything by message id (dedupe, logs) must not mix them up.
    emulator.webhook_url = f"{receiver.url}/incoming"
    outgoing: list[str] = []
    for _ in range(3):
        await emulator.inject(USER, "hi")
        [result] = await client.send([free_text(f"{receiver.url}/status")])
        outgoing.append(str(result.message_id))
    incoming = [str(body["incomingMessageId"]) for body in receiver.bodies("/incoming")]
    assert len(incoming) == 3 and len(set(outgoing)) == 3
    assert not set(incoming) & set(outgoing)


async def test_inject_carries_media_location_and_contacts(receiver: Receiver) -> None:
    emulator = Emulator(webhook_url=f"{receiver.url}/incoming")
    result = await emulator.inject(
        USER,
        content_url="https://files.example/p.jpg",
        content_type="image/jpeg",
        geo_location={"latitude": 55.7, "longitude": 37.6, "addressurl": "https://maps"},
        contacts=[{"contactName": [{"formattedName": "Ann"}], "phones": [{"phone": "1"}]}],
    )
    await emulator.aclose()
    assert result.status_code == 200
    [message] = parse_incoming(result.incoming)
    assert message.geo_location is not None and message.geo_location.latitude == 55.7
    assert message.contacts is not None and message.content_type == "image/jpeg"


async def test_inject_without_webhook_still_opens_the_window() -> None:
    emulator = Emulator()
    result = await emulator.inject(USER, "hi")
    assert result.status_code is None and result.error and "--webhook" in result.error
    assert emulator.window_open(USER)


async def test_missing_or_wrong_auth_gets_a_json_401(emulator_url: str) -> None:
    body = {"messages": [{"from": SENDER, "to": USER, "text": "x"}]}
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        for headers in ({}, {"Authorization": "Key nope"}, {"Authorization": "Bearer x"}):
            answer = await http.post("/whatsapp/messages", json=body, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


async def test_any_key_is_accepted_when_none_is_configured() -> None:
    emulator = Emulator()
    async with emulator.serve() as url:
        async with DevinoClient(url, api_key="whatever") as devino:
            assert (await devino.send_one(template("http://127.0.0.1:9/cb"))).ok
        async with DevinoClient(url, login="any", password="thing") as devino:
            assert (await devino.send_one(template("http://127.0.0.1:9/cb"))).ok


async def test_a_body_that_is_not_json_gets_a_json_400(emulator_url: str) -> None:
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        answer = await http.post(
            "/whatsapp/messages", content=b"{nope", headers={"Authorization": f"Key {API_KEY}"}
        )
    assert answer.status_code == 400 and "messages" in answer.json()["description"]


async def post_messages(url: str, messages: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(headers={"Authorization": f"Key {API_KEY}"}) as http:
        answer = await http.post(f"{url}/whatsapp/messages", json={"messages": messages})
    result: list[dict[str, Any]] = answer.json()["result"]
    return result


async def test_request_level_rejections(emulator_url: str, emulator: Emulator) -> None:
    too_many = [{"from": SENDER, "to": USER, "text": "x"}] * 101
    results = await post_messages(emulator_url, too_many)
    assert len(results) == 101
    assert all(
        r["code"] == "REJECTED"
        and r["reasons"] == [{"key": "too.many.messages", "ref": "messages"}]
        for r in results
    )
    [empty] = await post_messages(emulator_url, [])
    assert empty["reasons"] == [{"key": "must.be.not.null", "ref": "messages"}]
    assert emulator.messages == []


async def test_fields_of_the_wrong_type_are_rejected_as_invalid(emulator_url: str) -> None:
    results = await post_messages(
        emulator_url,
        [{"from": SENDER, "to": USER, "templateId": "t", "validity": "soon"}, "not an object"],
    )
    assert [r["reasons"] for r in results] == [
        [{"key": "invalid", "ref": "messages[0].validity"}],
        [{"key": "invalid", "ref": "messages[1]"}],
    ]


async def test_the_control_api(emulator_url: str, emulator: Emulator, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        config = await http.post(
            "/_emulator/config",
            json={"notOnWhatsApp": ["+7 903 999 00 00"], "rateLimit": {"messages": 5, "per": 1}},
        )
        assert config.json()["notOnWhatsApp"] == ["79039990000"]
        assert emulator.rate_limit == RateLimit(5, 1.0)

        assert (await http.post("/_emulator/faults", json={"count": 1, "status": 502})).is_success
        message = {"from": SENDER, "to": USER, "templateId": "t"}
        faulted = await http.post(
            "/whatsapp/messages",
            json={"messages": [message]},
            headers={"Authorization": f"Key {API_KEY}"},
        )
        assert faulted.status_code == 502
        await post_messages(emulator_url, [message])
        requests = (await http.get("/_emulator/requests")).json()
        assert [r["httpStatus"] for r in requests] == [502, 200]

        [listed] = (await http.get("/_emulator/messages")).json()
        assert listed["message"] == {"from": SENDER, "to": USER, "templateId": "t"}
        assert listed["messageId"] == emulator.messages[0].message_id

        before = (await http.get("/_emulator/clock")).json()["now"]
        after = (await http.post("/_emulator/clock", json={"advance": 3600})).json()["now"]
        assert after - before >= 3600

        assert (await http.delete("/_emulator/messages")).status_code == 204
        assert (await http.get("/_emulator/messages")).json() == []
        assert (await http.post("/_emulator/faults", json={"nonsense": 1})).status_code == 400


async def test_a_given_clock_is_not_the_emulators_to_move() -> None:
    now = [1_700_000_000.0]
    emulator = Emulator(clock=lambda: now[0])
    with pytest.raises(DevinoConfigError, match="advance that clock"):
        emulator.advance_clock(10)
    await emulator.inject(USER, "hi")
    now[0] += DAY
    assert not emulator.window_open(USER)


async def test_events_stream_what_happens(client: DevinoClient, emulator: Emulator) -> None:
    queue = emulator.subscribe()
    await emulator.inject(USER, "hi")
    await client.send_one(OutgoingMessage(sender=SENDER, to=USER, template_id="t"))
    kinds = []
    async with asyncio.timeout(5):
        while len(kinds) < 5:
            kinds.append((await queue.get()).kind)
    emulator.unsubscribe(queue)
    assert kinds == ["incoming", "message", "status", "status", "status"]


async def test_waiting_gives_up_with_a_clear_error(emulator: Emulator) -> None:
    with pytest.raises(TimeoutError, match="1 message"):
        await emulator.wait_for_messages(1, within=0.05)


def test_the_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--webhook" in out and "BOTKIT_DEVINO_API_KEY" in out
    assert main(["--port", "not-a-number"]) == 2


async def test_the_command_serves_until_interrupted() -> None:
    env = {**os.environ, "BOTKIT_DEVINO_API_KEY": API_KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botkit.devtools.emulator", "--port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert API_KEY not in line
        base_url = line.split(" listening on ")[1].split()[0]
        async with DevinoClient(base_url, api_key=API_KEY) as devino:
            assert (await devino.send_one(template("http://127.0.0.1:9/cb"))).ok
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_response_delay_answers_late_and_accepts_even_when_the_client_gave_up(
    emulator_url: str, emulator: Emulator
) -> None:
    # Long enough for the steps below on a loaded machine, short enough to see the end
    # of (an hour's delay left the held request to the server's 5 s shutdown instead).
    delay = 3.0
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        config = await http.post("/_emulator/config", json={"responseDelay": delay})
        assert config.json()["responseDelay"] == delay
    message = {"from": SENDER, "to": USER, "templateId": "t"}
    sending = asyncio.create_task(post_messages(emulator_url, [message]))
    await emulator.wait_until(lambda: emulator.in_flight == 1, what="the request held")
    assert emulator.messages == []  # taken, not answered, not yet handled
    sending.cancel()  # the client gives up, as a sender killed with -9 would
    emulator.response_delay = 0.0
    # The next request is answered at once; the held one is still handled later,
    # when its delay is up, as the provider handles a request it received whole.
    await post_messages(emulator_url, [message])
    assert len(emulator.messages) == 1 and emulator.in_flight == 1
    await emulator.wait_until(
        lambda: emulator.in_flight == 0, within=30, what="the held request handled"
    )
    assert len(emulator.messages) == 2
