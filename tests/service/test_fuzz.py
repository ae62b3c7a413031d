"""Fuzzing the webhooks (and the send API): any body gets a 2xx or 4xx, never a bug of ours.

The app runs in-process (``httpx.ASGITransport``) with the echo bot, on the
memory store and on Redis, its service started; replies go to the emulator over HTTP.
Bodies are arbitrary JSON, JSON shaped like the provider's payloads with
arbitrary values, and raw bytes. No answer may be a 5xx (with a store that
answers, not even 503), and no "unexpected error" may be logged.
"""

from __future__ import annotations

import json
import logging
import os
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botkit.delivery import CallbackSigner
from botkit.service import create_app, load_settings
from bots import echo
from tests.conftest import delete_prefix, require_redis
from tests.service._harness import (
    API_KEY,
    API_TOKEN,
    PROVIDER_INCOMING_EXAMPLE,
    PROVIDER_STATUS_EXAMPLE,
    WEBHOOK_TOKEN,
)
from tests.service.conftest import Provider

CALLBACK_SECRET = "fuzz-callback-secret-0123456789abcdef"
SIGNER = CallbackSigner(CALLBACK_SECRET)
INCOMING = f"/whatsapp/incoming/{WEBHOOK_TOKEN}"
STATUS = f"/whatsapp/status/{WEBHOOK_TOKEN}"

FUZZ = settings(
    # FUZZ_EXAMPLES=2000 digs deeper, e.g. before a release.
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=12,
)
phones = st.from_regex(r"\+?[1-9][0-9]{6,14}", fullmatch=True)
loose = phones | scalars | json_values

text = st.text(max_size=40)


def wire_object(typed: dict[str, st.SearchStrategy[Any]], *, anything: bool) -> Any:
    """An object with any subset of ``typed``'s keys: values of the documented type, or anything."""
    return st.fixed_dictionaries(
        {}, optional={k: (v | loose) if anything else v for k, v in typed.items()}
    )


def geo(anything: bool) -> st.SearchStrategy[Any]:
    coordinate = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-180, 180)
    fields = {
        "latitude": coordinate,
        "longitude": coordinate,
        "address": text,
        "addressName": text,
        "addressurl": text,
    }
    return wire_object(fields, anything=anything)


def contact(anything: bool) -> st.SearchStrategy[Any]:
    def items(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
        return st.lists(wire_object(fields, anything=anything), max_size=2)

    fields = {
        "contactName": items({"formattedName": text, "firstName": text, "lastName": text}),
        "phones": items({"phone": text | phones, "waId": text, "type": text}),
        "emails": items({"email": text, "type": text}),
        "contactCompany": items({"company": text, "department": text, "title": text}),
        "addresses": items({"street": text, "city": text, "countryCode": text}),
        "urls": items({"url": text, "type": text}),
        "birthday": text,
    }
    return wire_object(fields, anything=anything)


def message_fields(anything: bool) -> dict[str, st.SearchStrategy[Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "text": st.text(max_size=1500),
        "contentUrl": st.sampled_from(["https://cdn.example/a.jpg", "ftp://x", ""]) | text,
        "contentType": st.sampled_from(["image/jpeg", "audio/ogg; codecs=opus", ""]) | text,
        "contentName": text,
        "profileName": text,
        "ts": st.integers(min_value=0, max_value=2**53),
        "whatsAppGeoLocation": geo(anything),
        "whatsAppContacts": st.lists(contact(anything), max_size=3),
    }
    if anything:
        fields = {k: v | loose for k, v in fields.items()}
    return fields


# Shaped like an incoming message, every value of the documented type.
valid_messages = st.fixed_dictionaries(
    {
        "incomingMessageId": st.integers(min_value=0, max_value=2**63) | text.filter(str.strip),
        "to": phones,
        "from": phones,
    },
    optional=message_fields(anything=False),
)
# Shaped like one, with anything at all in any field.
any_messages = st.fixed_dictionaries(
    {},
    optional={
        "incomingMessageId": loose,
        "to": loose,
        "from": loose,
        **message_fields(anything=True),
    },
)

signed = st.builds(
    SIGNER.sign,
    phones.map(lambda p: p.lstrip("+")),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20),
)
status_fields: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.integers(min_value=0, max_value=2**53),
    "status": st.sampled_from(
        ["sent", "DELIVERED", "read", "FAILED", "undelivered", "vp_expired", "visited", "?"]
    )
    | text.filter(str.strip),
    "errorCode": st.sampled_from([0, 2301, 2305, 2312, "2312"]) | st.integers(0, 9999),
    "ip": text,
    "browser": text,
    "os": text,
    "userAgent": text,
}
valid_statuses = st.fixed_dictionaries(
    {
        "messageId": st.integers(min_value=0, max_value=2**63) | text.filter(str.strip),
        "status": status_fields["status"],
        "options": signed,
    },
    optional={k: v for k, v in status_fields.items() if k != "status"},
)
any_statuses = st.fixed_dictionaries(
    {},
    optional={
        "messageId": loose,
        "options": signed | loose,
        **{k: v | loose for k, v in status_fields.items()},
    },
)


def bodies(valid: st.SearchStrategy[Any], shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One object or an array, valid or shaped, or any JSON at all."""
    one = valid | shaped
    return one | st.lists(one, max_size=4) | json_values


# -- the app -------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def http(
    request: pytest.FixtureRequest, provider: Provider
) -> AsyncIterator[httpx.AsyncClient]:
    """The echo bot's app on the memory store, then on Redis."""
    store: dict[str, str] = {}
    if request.param == "redis":
        store = {"redis_url": require_redis(), "key_prefix": f"botkit-fuzz-{uuid.uuid4().hex[:12]}"}
    app = create_app(
        echo.bot,
        load_settings(
            devino_url=provider.url,
            devino_api_key=API_KEY,
            webhook_token=WEBHOOK_TOKEN,
            callback_secret=CALLBACK_SECRET,
            api_token=API_TOKEN,
            sender="FuzzCo",
            **store,
        ),
    )
    service = app.state.service
    await service.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://botkit") as client:
            yield client
    finally:
        await service.stop()
        if store:
            delete_prefix(store["redis_url"], store["key_prefix"])


def no_bug_logged(caplog: pytest.LogCaptureFixture) -> None:
    bugs = [
        r.getMessage()
        for r in caplog.records
        if r.name == "botkit.app" and r.levelno >= logging.ERROR
    ]
    assert not bugs, bugs


async def post(http: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return await http.post(path, content=content, headers={"content-type": "application/json"})


# -- the tests -----------------------------------------------------------------


@FUZZ
@given(body=bodies(valid_messages, any_messages))
async def test_incoming_webhook_never_answers_5xx(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    answer = await post(http, INCOMING, body)
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code == 200:
        assert answer.content == b""
    else:
        assert answer.json()["error"]
    no_bug_logged(caplog)


@FUZZ
@given(body=valid_messages | st.lists(valid_messages, min_size=1, max_size=4))
async def test_incoming_messages_of_the_providers_shape_are_accepted(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    # The required fields are right: whatever else there is, the message is taken.
    answer = await post(http, INCOMING, body)
    assert (answer.status_code, answer.content) == (200, b""), answer.text
    no_bug_logged(caplog)


@FUZZ
@given(body=bodies(valid_statuses, any_statuses))
async def test_status_webhook_never_answers_5xx(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    answer = await post(http, STATUS, body)
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code == 200:
        assert answer.content == b""
    no_bug_logged(caplog)


@FUZZ
@given(body=valid_statuses | st.lists(valid_statuses, min_size=1, max_size=4))
async def test_signed_status_reports_of_any_content_are_acknowledged(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    answer = await post(http, STATUS, body)
    assert (answer.status_code, answer.content) == (200, b""), answer.text
    no_bug_logged(caplog)


@FUZZ
@given(body=st.binary(max_size=300), path=st.sampled_from([INCOMING, STATUS, "/api/send"]))
async def test_raw_bytes_never_answer_5xx(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: bytes, path: str
) -> None:
    headers = {"authorization": f"Bearer {API_TOKEN}"}
    answer = await http.post(path, content=body, headers=headers)
    assert answer.status_code < 500, answer.text
    no_bug_logged(caplog)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "to": phones | loose,
            "text": st.text(max_size=1500) | loose,
            "media": st.fixed_dictionaries(
                {}, optional={"url": loose, "type": loose, "name": loose}
            )
            | loose,
            "template": st.fixed_dictionaries(
                {},
                optional={
                    "id": st.text(max_size=10) | loose,
                    "params": st.dictionaries(st.text(max_size=3), st.text(max_size=10)) | loose,
                    "language": loose,
                    "validity": loose,
                },
            )
            | loose,
        },
    )
    | json_values
)
async def test_send_api_never_answers_5xx(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, body: Any
) -> None:
    answer = await http.post(
        "/api/send",
        content=json.dumps(body, allow_nan=True).encode(),
        headers={"authorization": f"Bearer {API_TOKEN}"},
    )
    assert answer.status_code in (202, 400, 409, 422), answer.text
    no_bug_logged(caplog)


async def test_the_providers_examples_are_taken(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await post(http, INCOMING, PROVIDER_INCOMING_EXAMPLE)
    assert (answer.status_code, answer.content) == (200, b"")
    signed_example = [{**PROVIDER_STATUS_EXAMPLE[0], "options": SIGNER.sign("79031234567", "r1")}]
    answer = await post(http, STATUS, signed_example)
    assert (answer.status_code, answer.content) == (200, b"")
    no_bug_logged(caplog)


async def test_an_id_of_non_ascii_digits_is_taken(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    message = {"incomingMessageId": "²", "to": "79000000000", "from": "79031234567", "text": "x"}
    answer = await http.post(INCOMING, content=json.dumps(message).encode())
    assert (answer.status_code, answer.content) == (200, b"")
    no_bug_logged(caplog)
