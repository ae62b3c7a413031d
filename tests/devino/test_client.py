"""DevinoClient against the emulator over real HTTP."""

from __future__ import annotations

import socket

import httpx
import pytest

from botkit.devino import (
    DevinoAuthError,
    DevinoClient,
    DevinoConfigError,
    DevinoResponseError,
    DevinoTransportError,
    OutgoingMessage,
    Reason,
    RequestRecord,
    RetryPolicy,
)
from botkit.devtools.emulator import Emulator
from botkit.service import serve_app

from .conftest import API_KEY, FAST_RETRY, SENDER


def text_to(phone: str, text: str = "hi") -> OutgoingMessage:
    return OutgoingMessage(sender=SENDER, to=phone, text=text)


def many(count: int) -> list[OutgoingMessage]:
    return [text_to(f"7903{index:07d}", f"message {index}") for index in range(count)]


async def test_a_long_list_goes_out_in_batches_of_the_cap(
    client: DevinoClient, emulator: Emulator
) -> None:
    messages = many(250)
    results = await client.send(messages)

    assert sorted(request.messages for request in emulator.requests) == [50, 100, 100]
    assert client.requests_sent == 3
    assert all(result.ok for result in results)
    # One result per message, in order: each id is the one the emulator gave that message.
    by_id = {record.message_id: record.message for record in emulator.messages}
    assert [by_id[result.message_id].to for result in results if result.message_id] == [
        message.to for message in messages
    ]


async def test_the_batch_cap_is_configurable(emulator_url: str, emulator: Emulator) -> None:
    async with DevinoClient(emulator_url, api_key=API_KEY, batch_cap=10, concurrency=1) as devino:
        results = await devino.send(many(25))
    assert [request.messages for request in emulator.requests] == [10, 10, 5]
    assert len(results) == 25


async def test_mixed_results_come_back_in_order(emulator_url: str) -> None:
    emulator = Emulator(api_key=API_KEY, senders={SENDER})
    async with emulator.serve() as url, DevinoClient(url, api_key=API_KEY) as devino:
        results = await devino.send(
            [
                text_to("79031110001"),
                text_to("12"),  # rejected locally
                text_to("79031110003"),
                OutgoingMessage(sender="Unknown Sender", to="79031110004", text="x"),
            ]
        )
    assert [result.code for result in results] == ["OK", "REJECTED", "OK", "REJECTED"]
    assert [result.local for result in results] == [False, True, False, False]
    assert results[1].reasons == [Reason(key="invalid", ref="messages[1].to")]
    # The provider saw it at index 2 of its request; the ref names the caller's index.
    assert results[3].reasons == [Reason(key="not.available", ref="messages[3].from")]
    assert results[3].description == "Invalid sender address"


async def test_only_invalid_messages_make_no_request(client: DevinoClient) -> None:
    results = await client.send([text_to("1"), OutgoingMessage(sender=SENDER, to="79031112233")])
    assert [result.local for result in results] == [True, True]
    assert client.requests_sent == 0
    assert await client.send([]) == []


async def test_the_phone_number_is_sent_as_digits(client: DevinoClient, emulator: Emulator) -> None:
    await client.send_one(text_to("+7 (903) 111-22-33"))
    assert emulator.messages[0].received["to"] == "79031112233"


async def test_server_errors_are_retried(client: DevinoClient, emulator: Emulator) -> None:
    seen: list[RequestRecord] = []
    client.on_request = seen.append
    emulator.fail_next(2, status=500)

    result = await client.send_one(text_to("79031112233"))

    assert result.ok
    assert [request.http_status for request in emulator.requests] == [500, 500, 200]
    assert [(r.attempt, r.status_code, r.messages) for r in seen] == [
        (1, 500, 1),
        (2, 500, 1),
        (3, 200, 1),
    ]


async def test_retries_run_out(client: DevinoClient, emulator: Emulator) -> None:
    emulator.fail_next(3, status=503)
    with pytest.raises(DevinoTransportError) as caught:
        await client.send_one(text_to("79031112233"))
    assert caught.value.attempts == 3 and caught.value.status_code == 503
    assert len(emulator.requests) == 3 and emulator.messages == []


async def test_a_rejection_is_never_retried(emulator_url: str) -> None:
    emulator = Emulator(api_key=API_KEY, senders={"Other"})
    async with (
        emulator.serve() as url,
        DevinoClient(url, api_key=API_KEY, retry=FAST_RETRY) as devino,
    ):
        result = await devino.send_one(text_to("79031112233"))
    assert not result.ok and result.reasons[0].key == "not.available"
    # The emulator answers a request whose every message was rejected with HTTP 400.
    assert [request.http_status for request in emulator.requests] == [400]
    assert devino.requests_sent == 1


async def test_a_timeout_is_retried(emulator_url: str, emulator: Emulator) -> None:
    emulator.delay_next(1, seconds=0.6)
    timeout = httpx.Timeout(5.0, read=0.25)
    async with DevinoClient(
        emulator_url, api_key=API_KEY, timeout=timeout, retry=FAST_RETRY
    ) as devino:
        result = await devino.send_one(text_to("79031112233"))
    assert result.ok
    assert devino.requests_sent == 2
    # At least once: the request that timed out reached the provider too.
    await emulator.wait_for_messages(2)


async def test_a_connection_error_is_retried_then_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on that port now: every attempt is refused.
    async with DevinoClient(
        f"http://127.0.0.1:{port}", api_key=API_KEY, retry=FAST_RETRY
    ) as devino:
        with pytest.raises(DevinoTransportError) as caught:
            await devino.send_one(text_to("79031112233"))
    assert isinstance(caught.value.cause, httpx.ConnectError)
    assert caught.value.status_code is None and devino.requests_sent == 3


async def test_a_failed_request_of_a_split_batch_keeps_the_others_results(
    emulator_url: str, emulator: Emulator
) -> None:
    emulator.fail_next(1, status=500)
    no_retry = RetryPolicy(attempts=1)
    async with DevinoClient(emulator_url, api_key=API_KEY, retry=no_retry) as devino:
        with pytest.raises(DevinoTransportError) as caught:
            await devino.send(many(150))
    partial = caught.value.partial_results
    assert partial is not None and len(partial) == 150
    unknown = [result for result in partial if result is None]
    assert len(unknown) in (50, 100)
    assert all(result.ok for result in partial if result is not None)


async def test_key_and_basic_auth_are_both_accepted() -> None:
    emulator = Emulator(api_key=API_KEY, login="shop", password="s3cret")
    async with emulator.serve() as url:
        async with DevinoClient(url, api_key=API_KEY) as by_key:
            assert (await by_key.send_one(text_to("79031112233"))).ok
        async with DevinoClient(url, login="shop", password="s3cret") as by_login:
            assert (await by_login.send_one(text_to("79031112233"))).ok
        async with DevinoClient(url, login="shop", password="wrong") as wrong:
            with pytest.raises(DevinoAuthError):
                await wrong.send_one(text_to("79031112233"))


async def test_a_wrong_key_raises_auth_error_at_once(emulator_url: str) -> None:
    async with DevinoClient(emulator_url, api_key="wrong", retry=FAST_RETRY) as devino:
        with pytest.raises(DevinoAuthError, match="BOTKIT_DEVINO_API_KEY") as caught:
            await devino.send_one(text_to("79031112233"))
    assert caught.value.status_code == 401
    assert devino.requests_sent == 1


async def test_a_body_that_is_not_json_is_a_response_error(
    client: DevinoClient, emulator: Emulator
) -> None:
    emulator.garble_next(1)
    with pytest.raises(DevinoResponseError, match="not JSON") as caught:
        await client.send_one(text_to("79031112233"))
    assert caught.value.status_code == 200
    assert "Bad Gateway" in caught.value.body
    assert client.requests_sent == 1


async def test_a_long_malformed_body_is_truncated(client: DevinoClient, emulator: Emulator) -> None:
    emulator.fail_next(1, status=400, body="<html>" + "x" * 5000)
    with pytest.raises(DevinoResponseError) as caught:
        await client.send_one(text_to("79031112233"))
    assert caught.value.status_code == 400
    assert caught.value.body.startswith("<html>xxx") and len(caught.value.body) <= 503


@pytest.mark.parametrize(
    "body",
    ['{"result": []}', '{"result": "OK"}', '{"messages": []}', "[1, 2]"],
)
async def test_a_body_of_the_wrong_shape_is_a_response_error(
    client: DevinoClient, emulator: Emulator, body: str
) -> None:
    emulator.fail_next(1, status=200, body=body)
    with pytest.raises(DevinoResponseError) as caught:
        await client.send_one(text_to("79031112233"))
    assert caught.value.status_code == 200 and caught.value.body == body


async def test_a_server_error_with_a_valid_result_is_not_retried(
    client: DevinoClient, emulator: Emulator
) -> None:
    # The body says what happened to each message: retrying could send it twice.
    emulator.fail_next(1, status=500, body='{"result": [{"code": "OK", "messageId": "77"}]}')
    result = await client.send_one(text_to("79031112233"))
    assert result.ok and result.message_id == "77"
    assert client.requests_sent == 1


async def test_requests_run_at_most_concurrency_at_a_time(emulator: Emulator) -> None:
    in_flight = 0
    most = 0

    async def counting(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal in_flight, most
        if scope["type"] != "http":
            return await emulator.app(scope, receive, send)
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await emulator.app(scope, receive, send)
        finally:
            in_flight -= 1

    emulator.delay_next(6, seconds=0.05)
    async with (
        serve_app(counting) as url,
        DevinoClient(url, api_key=API_KEY, batch_cap=1, concurrency=2) as devino,
    ):
        results = await devino.send(many(6))
    assert all(result.ok for result in results)
    assert 1 <= most <= 2


def test_credentials_are_required_once() -> None:
    with pytest.raises(DevinoConfigError, match="BOTKIT_DEVINO_API_KEY"):
        DevinoClient()
    with pytest.raises(DevinoConfigError, match="not both"):
        DevinoClient(api_key="k", login="a", password="b")
    with pytest.raises(DevinoConfigError, match="both login and password"):
        DevinoClient(login="a")
    with pytest.raises(DevinoConfigError, match="BOTKIT_DEVINO_URL"):
        DevinoClient("api.devino.online", api_key="k")
