"""Local validation: the same reasons from the client (no round trip) and the emulator."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from botkit.devino import (
    MEDIA_TYPES,
    DevinoClient,
    InvalidPhoneNumber,
    MediaKind,
    OutgoingMessage,
    Reason,
    ReasonKey,
    max_bytes,
    media_kind,
    normalize_phone,
    validate_message,
)
from botkit.devino.errors import REASON_TABLE
from botkit.devino.validation import batch_reasons
from botkit.devtools.emulator import Emulator

from .conftest import API_KEY, SENDER

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("79034567890", "79034567890"),
        ("+7 (903) 456-78-90", "79034567890"),
        ("+49.179.111.22.33", "491791112233"),
        ("1234567", "1234567"),
        ("123456789012345", "123456789012345"),
    ],
)
def test_normalize_phone(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "  ", "+", "123456", "0903456789", "1234567890123456", "7903abc4567", "٧٩٠٣٤٥٦٧٨٩٠"]
)
def test_normalize_phone_rejects_with_a_helpful_message(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="international format"):
        normalize_phone(raw)
    assert issubclass(InvalidPhoneNumber, ValueError)


def test_media_table_has_the_corrections_of_the_notes() -> None:
    assert "audio/aac" in MEDIA_TYPES and "audio/acc" not in MEDIA_TYPES
    assert MEDIA_TYPES["image/jpeg"].max_bytes == 5 * MB
    assert MEDIA_TYPES["video/mp4"].max_bytes == 5 * MB
    assert MEDIA_TYPES["audio/mpeg"].max_bytes == 16 * MB
    assert MEDIA_TYPES["application/pdf"].max_bytes == 100 * MB
    documents = [mime for mime, media in MEDIA_TYPES.items() if media.kind == "document"]
    assert "text/plain" in documents and len(documents) >= 11


@pytest.mark.parametrize(
    ("mime", "kind"),
    [
        ("audio/ogg; codecs=opus", MediaKind.VOICE),
        ('AUDIO/OGG;codecs="opus"', MediaKind.VOICE),
        ("audio/ogg", MediaKind.AUDIO),
        ("image/PNG", MediaKind.IMAGE),
        ("image/webp", MediaKind.STICKER),
        ("video/3gpp", MediaKind.VIDEO),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "document"),
        ("image/gif", None),
        ("", None),
        ("nonsense", None),
    ],
)
def test_media_kind(mime: str, kind: str | None) -> None:
    assert media_kind(mime) == kind


def test_max_bytes() -> None:
    assert max_bytes("image") == 5 * MB
    assert max_bytes("sticker") == 500 * 1024
    assert max_bytes("hologram") is None


GOOD: dict[str, Any] = {"from": SENDER, "to": "79031112233", "text": "hello"}


def _with(**fields: Any) -> dict[str, Any]:
    message = {**GOOD, **fields}
    return {key: value for key, value in message.items() if value is not None}


# One row of the provider's reason table per case, each message breaking one rule.
TABLE_CASES: list[tuple[dict[str, Any], str, str]] = [
    (_with(to="12345"), "invalid", "to"),
    (_with(to="0903456789"), "invalid", "to"),
    (_with(to="+7 903 abc"), "invalid", "to"),
    (_with(validity=0, templateId="t"), "invalid", "validity"),
    (_with(validity=3), "invalid", "validity"),  # validity needs a template
    (_with(callbackUrl="ftp://example.com/cb"), "invalid", "callbackUrl"),
    (_with(callbackUrl="https://"), "invalid", "callbackUrl"),
    (_with(contentUrl="file:///etc/passwd"), "invalid", "contentUrl"),
    (
        _with(contentUrl="https://x.example/a.png", contentType="image/gif"),
        "invalid",
        "contentType",
    ),
    (_with(languageCode="e!"), "invalid", "languageCode"),
    (_with(to="1234567890123456"), "length.too.long", "to"),
    (_with(text="x" * 1001), "length.too.long", "text"),
    (_with(languageCode="en_US_POSIX"), "length.too.long", "languageCode"),
    (
        _with(contentUrl="https://x.example/a.pdf", contentName=""),
        "length.too.short",
        "contentName",
    ),
    (_with(languageCode="e"), "length.too.short", "languageCode"),
    (_with(to=None), "must.be.not.null", "to"),
    (_with(to=""), "must.be.not.null", "to"),
    (_with(**{"from": None}), "must.be.not.null", "from"),
    (_with(text=None), "must.be.not.null", ""),
    (_with(text="   "), "must.be.not.null", ""),
]


def _ref(field: str, index: int) -> str:
    return f"messages[{index}].{field}" if field else f"messages[{index}]"


def test_the_cases_cover_every_locally_checkable_row() -> None:
    covered = {(key, _ref(field, 0).replace("[0]", "[i]")) for _, key, field in TABLE_CASES}
    # Checked elsewhere: the two request-level rows (test_request_level_rows) and
    # not.available (the emulator's configured senders). Only the provider knows
    # billing, prohibitions, unknown errors and which sender names are wrong.
    elsewhere = {
        ("must.be.not.null", "messages"),
        ("too.many.messages", "messages"),
        ("not.available", "messages[i].from"),
    }
    provider_only = {("billing.error", None), ("forbidden", None), ("unknown", None)}
    provider_only.add(("invalid", "messages[i].from"))
    table = {(row.key.value, row.ref) for row in REASON_TABLE}
    assert table == covered | elsewhere | provider_only


@pytest.mark.parametrize(("message", "key", "field"), TABLE_CASES)
async def test_client_and_emulator_reject_alike(
    message: dict[str, Any],
    key: str,
    field: str,
    client: DevinoClient,
    emulator_url: str,
    emulator: Emulator,
) -> None:
    expected = [Reason(key=key, ref=_ref(field, 1))]
    batch = [GOOD, message]

    assert validate_message(OutgoingMessage.model_validate(message), 1) == expected

    good, rejected = await client.send([OutgoingMessage.model_validate(m) for m in batch])
    assert good.ok
    assert rejected.local and not rejected.ok and rejected.reasons == expected
    assert emulator.requests[-1].messages == 1  # the rejected one never left

    async with httpx.AsyncClient(headers={"Authorization": f"Key {API_KEY}"}) as http:
        answer = await http.post(f"{emulator_url}/whatsapp/messages", json={"messages": batch})
    results = answer.json()["result"]
    assert results[0]["code"] == "OK"
    assert results[1]["code"] == "REJECTED"
    assert [Reason.model_validate(reason) for reason in results[1]["reasons"]] == expected


def test_valid_messages_have_no_reasons() -> None:
    valid = [
        OutgoingMessage.model_validate(GOOD),
        OutgoingMessage(sender=SENDER, to="+7 903 111-22-33", template_id="welcome", validity=1),
        OutgoingMessage(
            sender=SENDER,
            to="79031112233",
            content_url="https://files.example/voice.ogg",
            content_type="audio/ogg; codecs=opus",
            content_name="v" * 100,
            callback_url="http://127.0.0.1:8000/whatsapp/status/t",
            language_code="pt_BR",
        ),
        OutgoingMessage(sender=SENDER, to="79031112233", text="x" * 1000, language_code="zh_Hant"),
    ]
    assert [validate_message(message, 0) for message in valid] == [[], [], [], []]


def test_several_problems_give_several_reasons() -> None:
    message = OutgoingMessage(to="1", text="x" * 1001, callback_url="mailto:a@b")
    assert [(r.key, r.ref) for r in validate_message(message, 4)] == [
        (ReasonKey.INVALID, "messages[4].to"),
        (ReasonKey.MUST_BE_NOT_NULL, "messages[4].from"),
        (ReasonKey.LENGTH_TOO_LONG, "messages[4].text"),
        (ReasonKey.INVALID, "messages[4].callbackUrl"),
    ]


def test_request_level_rows() -> None:
    assert batch_reasons(0) == [Reason(key="must.be.not.null", ref="messages")]
    assert batch_reasons(101) == [Reason(key="too.many.messages", ref="messages")]
    assert batch_reasons(11, batch_cap=10) == [Reason(key="too.many.messages", ref="messages")]
    assert batch_reasons(100) == []
