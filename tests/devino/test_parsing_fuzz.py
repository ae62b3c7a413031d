"""Whatever arrives at a webhook, the parsers raise PayloadError or return models."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botkit.devino import (
    IncomingMessage,
    PayloadError,
    StatusReport,
    parse_incoming,
    parse_statuses,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
FIELD_NAMES = [
    "incomingMessageId", "from", "to", "text", "contentUrl", "contentType", "contentName",
    "profileName", "ts", "whatsAppGeoLocation", "whatsAppContacts", "messageId", "status",
    "errorCode", "ip", "browser", "os", "userAgent", "options", "latitude", "longitude",
    "addressurl", "addressUrl", "addresses", "emails", "contactName", "contactCompany",
    "phones", "urls", "birthday", "waId", "sender", "__class__", "model_config",
]  # fmt: skip
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=25,
)
contact = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.lists(st.dictionaries(keys, json_values, max_size=4), max_size=2)
        for name in ("addresses", "emails", "contactName", "contactCompany", "phones", "urls")
    },
)
near_incoming = st.fixed_dictionaries(
    {
        "incomingMessageId": st.integers() | st.text(max_size=5) | json_values,
        "from": st.from_regex(r"\+?[0-9]{7,15}", fullmatch=True) | json_values,
        "to": st.text(max_size=6) | json_values,
    },
    optional={
        "text": json_values,
        "ts": st.integers() | json_values,
        "whatsAppGeoLocation": st.dictionaries(keys, json_values, max_size=5) | json_values,
        "whatsAppContacts": st.lists(contact, max_size=2) | contact | json_values,
    },
)
near_status = st.fixed_dictionaries(
    {
        "messageId": st.integers() | st.text(max_size=5) | json_values,
        "status": st.sampled_from(["SENT", "read", "vp_expired", "???"]) | json_values,
    },
    optional={"errorCode": st.integers() | st.text(max_size=5) | json_values, "ts": json_values},
)
bodies = (
    json_values
    | near_incoming
    | near_status
    | st.lists(near_incoming | near_status | json_values, max_size=3)
)


def parses_or_refuses(parse: Any, body: object, model: type) -> None:
    try:
        parsed = parse(body)
    except PayloadError as error:
        json.dumps(error.errors)  # always fit for a 422 answer
        assert all(set(item) == {"loc", "msg"} for item in error.errors)
        return
    assert parsed and all(isinstance(item, model) for item in parsed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_json_into_parse_incoming(body: object) -> None:
    parses_or_refuses(parse_incoming, body, IncomingMessage)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_json_into_parse_statuses(body: object) -> None:
    parses_or_refuses(parse_statuses, body, StatusReport)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64) | bodies.map(lambda body: json.dumps(body).encode()))
def test_any_bytes_into_the_parsers(raw: bytes) -> None:
    parses_or_refuses(parse_incoming, raw, IncomingMessage)
    parses_or_refuses(parse_statuses, raw, StatusReport)


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    parses_or_refuses(parse_incoming, deep, IncomingMessage)
    parses_or_refuses(parse_statuses, deep, StatusReport)
