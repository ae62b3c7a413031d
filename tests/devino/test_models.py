"""The wire models: the provider page's examples, aliases, and lenient parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from botkit import DeliveryStatus
from botkit.devino import (
    IncomingMessage,
    OutgoingMessage,
    PayloadError,
    StatusErrorCode,
    parse_incoming,
    parse_statuses,
)
from botkit.devino.models import SendRequest, SendResponse

# The examples exactly as the provider's page gives them.
PAGE_SEND_REQUEST = {"messages": [{"from": "MyCompany", "to": "79034567890", "text": "Code: 1234"}]}
PAGE_SEND_RESPONSE_OK = {"result": [{"code": "OK", "messageId": "3482512350952730368"}]}
PAGE_SEND_RESPONSE_GENERIC = {
    "result": [
        {"code": "CODE", "reasons": [{"key": "string", "ref": "string"}], "messageId": "string"}
    ]
}
PAGE_STATUS = [
    {
        "messageId": 1,
        "ts": 0,
        "status": "DELIVERED",
        "errorCode": 0,
        "ip": "127.0.0.1",
        "browser": "string",
        "os": "string",
        "userAgent": "string",
        "options": "string",
    }
]
PAGE_INCOMING = {
    "incomingMessageId": 0,
    "to": "str",
    "from": "str",
    "text": "str",
    "contentUrl": "str",
    "contentType": "str",
    "contentName": "str",
    "profileName": "str",
    "ts": 0,
}


def test_page_send_request_round_trips() -> None:
    request = SendRequest.model_validate(PAGE_SEND_REQUEST)
    assert request.messages[0].sender == "MyCompany"
    assert request.to_wire() == PAGE_SEND_REQUEST


@pytest.mark.parametrize("example", [PAGE_SEND_RESPONSE_OK, PAGE_SEND_RESPONSE_GENERIC])
def test_page_send_responses_round_trip(example: dict[str, Any]) -> None:
    assert SendResponse.model_validate(example).to_wire() == example


def test_page_send_responses_read_as_results() -> None:
    [ok] = SendResponse.model_validate(PAGE_SEND_RESPONSE_OK).result
    assert ok.ok and ok.message_id == "3482512350952730368" and ok.reasons == []
    [other] = SendResponse.model_validate(PAGE_SEND_RESPONSE_GENERIC).result
    assert not other.ok and other.code == "CODE"  # an unknown code is kept, not rejected
    assert other.reasons[0].key == "string" and other.reasons[0].known_key is None


def test_page_status_round_trips() -> None:
    [report] = parse_statuses(PAGE_STATUS)
    assert report.message_id == "1"
    assert report.status is DeliveryStatus.DELIVERED
    assert report.error_code == 0 and report.error is None
    assert report.options == "string"
    assert [report.to_wire()] == PAGE_STATUS


def test_page_incoming_round_trips() -> None:
    [message] = parse_incoming(PAGE_INCOMING)
    assert message.incoming_message_id == "0"
    assert (message.sender, message.to, message.profile_name) == ("str", "str", "str")
    assert message.to_wire() == PAGE_INCOMING


def test_outgoing_message_uses_wire_names_and_omits_unset_fields() -> None:
    message = OutgoingMessage(
        sender="Shop",
        to="79034567890",
        content_url="https://example.com/a.pdf",
        content_type="application/pdf",
        content_name="a.pdf",
        callback_url="https://bot.example.com/status",
        callback_data="ref-1",
        template_id="tpl",
        template_params={"1": "Ann"},
        language_code="en",
        validity=2,
    )
    assert message.to_wire() == {
        "from": "Shop",
        "to": "79034567890",
        "contentUrl": "https://example.com/a.pdf",
        "contentType": "application/pdf",
        "contentName": "a.pdf",
        "callbackUrl": "https://bot.example.com/status",
        "callbackData": "ref-1",
        "templateId": "tpl",
        "templateParams": {"1": "Ann"},
        "languageCode": "en",
        "validity": 2,
    }
    assert OutgoingMessage.model_validate(message.to_wire()) == message


def test_template_params_by_position() -> None:
    from_list = OutgoingMessage(template_id="t", template_params=["Ann", 42])  # type: ignore[arg-type]
    assert from_list.to_wire()["templateParams"] == {"1": "Ann", "2": "42"}
    from_int_keys = OutgoingMessage.model_validate({"templateParams": {1: "a", 2: "b"}})
    assert from_int_keys.template_params == {"1": "a", "2": "b"}


def test_business_rule_breaches_still_build() -> None:
    # Validation, not construction, turns these into the provider's reasons.
    message = OutgoingMessage(to="abc", text="x" * 5000, validity=-1, content_type="nope/x")
    assert message.text is not None and len(message.text) == 5000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("delivered", DeliveryStatus.DELIVERED),
        ("Read", DeliveryStatus.READ),
        ("SENT", DeliveryStatus.SENT),
        ("vp_expired", DeliveryStatus.EXPIRED),
        ("EXPIRED", DeliveryStatus.EXPIRED),
        ("enqueued", DeliveryStatus.ENQUEUED),
        ("undelivered", DeliveryStatus.UNDELIVERED),
        ("failed", DeliveryStatus.FAILED),
        ("cancelled", DeliveryStatus.CANCELLED),
        ("visited", DeliveryStatus.VISITED),
        ("REACTED", "REACTED"),  # unknown: kept as given, never rejected
    ],
)
def test_status_names_parse_case_insensitively(raw: str, expected: object) -> None:
    [report] = parse_statuses({"messageId": "5", "status": raw})
    assert report.status == expected
    assert (report.known_status is None) == (not isinstance(expected, DeliveryStatus))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(2312, 2312), ("2305", 2305), (None, None), ("", None), (0, 0), ("E42", "E42")],
)
def test_error_codes_normalise(raw: object, expected: object) -> None:
    [report] = parse_statuses([{"messageId": 7, "status": "failed", "errorCode": raw}])
    assert report.error_code == expected


def test_error_code_maps_to_its_action() -> None:
    [report] = parse_statuses({"messageId": 7, "status": "FAILED", "errorCode": "2312"})
    assert report.error is StatusErrorCode.OUTSIDE_SESSION_WINDOW


def test_statuses_only_move_forward_by_rank() -> None:
    order = [DeliveryStatus.ENQUEUED, DeliveryStatus.SENT, DeliveryStatus.DELIVERED]
    assert [status.rank for status in order] == sorted(status.rank for status in order)
    assert DeliveryStatus.READ.rank > DeliveryStatus.DELIVERED.rank
    assert DeliveryStatus.FAILED.is_final and DeliveryStatus.READ.is_final
    assert not DeliveryStatus.DELIVERED.is_final


def test_unknown_fields_are_kept() -> None:
    body = {"messageId": 9, "status": "SENT", "channel": "whatsapp", "extra": {"a": 1}}
    [report] = parse_statuses(body)
    assert report.to_wire() == body
    [message] = parse_incoming({**PAGE_INCOMING, "newField": [1, 2]})
    assert message.to_wire()["newField"] == [1, 2]


def test_incoming_accepts_an_array_bytes_and_string_ids() -> None:
    body = json.dumps(
        [
            {"incomingMessageId": "123", "from": "79031234567", "to": "MyCompany", "text": "hi"},
            {"incomingMessageId": 124, "from": 79031234567, "to": "MyCompany", "text": "again"},
        ]
    ).encode()
    first, second = parse_incoming(body)
    assert (first.incoming_message_id, second.incoming_message_id) == ("123", "124")
    assert second.sender == "79031234567"


def test_incoming_location_accepts_both_spellings_of_address_url() -> None:
    for key in ("addressurl", "addressUrl"):
        [message] = parse_incoming(
            {
                "incomingMessageId": 1,
                "from": "79031234567",
                "to": "x",
                "whatsAppGeoLocation": {"latitude": 55.75, "longitude": "37.61", key: "https://m"},
            }
        )
        assert message.geo_location is not None
        assert message.geo_location.address_url == "https://m"
        assert message.geo_location.longitude == pytest.approx(37.61)


FULL_CONTACT = {
    "addresses": [
        {
            "street": "Tverskaya 1",
            "city": "Moscow",
            "state": "Moscow",
            "zip": "125009",
            "country": "Russia",
            "countryCode": "RU",
            "type": "HOME",
        }
    ],
    "birthday": "1990-01-31",
    "emails": [{"email": "ann@example.com", "type": "WORK"}],
    "contactName": [
        {
            "firstName": "Ann",
            "middleName": "B",
            "lastName": "Smith",
            "formattedName": "Ann B Smith",
            "namePrefix": "Dr",
            "nameSuffix": "Jr",
        }
    ],
    "contactCompany": [{"company": "Acme", "department": "R&D", "title": "Engineer"}],
    "phones": [{"phone": "+7 903 123-45-67", "waId": "79031234567", "type": "CELL"}],
    "urls": [{"url": "https://acme.example", "type": "WORK"}],
}


def test_incoming_contacts_keep_every_documented_field() -> None:
    body = {
        "incomingMessageId": 1,
        "from": "79031234567",
        "to": "x",
        "whatsAppContacts": [FULL_CONTACT],
    }
    [message] = parse_incoming(body)
    assert message.contacts is not None
    [contact] = message.contacts
    assert (
        contact.contact_name is not None and contact.contact_name[0].formatted_name == "Ann B Smith"
    )
    assert contact.phones is not None and contact.phones[0].wa_id == "79031234567"
    assert contact.addresses is not None and contact.addresses[0].country_code == "RU"
    assert message.to_wire() == body


def test_contact_name_may_be_an_object() -> None:
    contact = {"contactName": {"firstName": "Ann"}, "phones": {"phone": "1"}}
    [message] = parse_incoming(
        {"incomingMessageId": 1, "from": "79031234567", "to": "x", "whatsAppContacts": [contact]}
    )
    assert message.contacts is not None
    assert message.contacts[0].contact_name is not None
    assert message.contacts[0].contact_name[0].first_name == "Ann"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"incomingMessageId": 1, "to": "x"}, "0.from"),
        ({"incomingMessageId": 1, "from": "", "to": "x"}, "0.from"),
        ({"incomingMessageId": 1, "from": "7", "to": ""}, "0.to"),
        ({"from": "7", "to": "x"}, "0.incomingMessageId"),
        ([{"incomingMessageId": 1, "from": "7", "to": "x"}, "nope"], "1"),
        ({"incomingMessageId": 1, "from": "7", "to": "x", "ts": "soon"}, "0.ts"),
    ],
)
def test_invalid_incoming_names_the_field(body: object, loc: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_incoming(body)
    assert loc in [error["loc"] for error in caught.value.errors]
    json.dumps(caught.value.errors)  # fit for a 422 body


@pytest.mark.parametrize("body", [[], b"", b"not json", "42", None, b"\xff\xfe"])
def test_empty_or_non_object_bodies_are_payload_errors(body: object) -> None:
    for parse in (parse_incoming, parse_statuses):
        with pytest.raises(PayloadError):
            parse(body)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


def test_incoming_python_names_work_too() -> None:
    message = IncomingMessage(incoming_message_id="1", sender="79031234567", to="Shop", text="hi")
    assert message.to_wire()["from"] == "79031234567"


def test_lone_surrogates_are_repaired_and_the_fields_named() -> None:
    from botkit.devino.models import repair_text

    raw = json.dumps([{"text": "a\ud800b", "from": "79031234567"}, {"text": "ok \U0001f600"}])
    body, repaired = repair_text(raw.encode(), json.loads(raw))
    assert body == [{"text": "a\ufffdb", "from": "79031234567"}, {"text": "ok \U0001f600"}]
    assert repaired == ["0.text"]
    # Parsing the raw body repairs it too: the text can be stored and sent.
    [message] = parse_incoming(
        json.dumps(
            {
                "incomingMessageId": 1,
                "from": "79031234567",
                "to": "79000000000",
                "ts": 1,
                "text": "\udfff",
            }
        )
    )
    assert message.text == "\ufffd"
    # A valid pair, escaped, is left alone.
    assert repair_text(b'"\\ud83d\\ude00"', "\U0001f600") == ("\U0001f600", [])


def test_one_status_enum_the_old_provider_name_warns_and_is_the_same_enum() -> None:
    import botkit.devino

    with pytest.warns(DeprecationWarning, match="DeliveryStatus"):
        old = botkit.devino.MessageStatus  # type: ignore[attr-defined]
    assert old is DeliveryStatus
    [report] = parse_statuses({"messageId": 3, "status": "vp_expired"})
    assert report.status is DeliveryStatus.EXPIRED
    # Back on the wire, the provider's own name.
    assert report.to_wire()["status"] == "VP_EXPIRED" == DeliveryStatus.EXPIRED.wire
