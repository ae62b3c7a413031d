"""Reason keys, status error codes and the exceptions a user can hit."""

from __future__ import annotations

import pytest

from botkit.devino import (
    DevinoAuthError,
    DevinoResponseError,
    ReasonKey,
    StatusAction,
    StatusErrorCode,
    status_error,
)
from botkit.devino.errors import REASON_TABLE, describe_reason

PAGE_STATUS_CODES = {
    *range(2000, 2013),
    2017,
    *range(2300, 2306),
    *range(2307, 2314),
}


def test_reason_table_is_the_pages() -> None:
    assert len(REASON_TABLE) == 21
    assert {row.key for row in REASON_TABLE} == set(ReasonKey)
    assert all(row.description for row in REASON_TABLE)


def test_a_concrete_ref_finds_its_row() -> None:
    assert describe_reason("length.too.long", "messages[12].text") == (
        "The maximum message text length has been exceeded"
    )
    assert describe_reason("billing.error") == "Payment is required"
    assert describe_reason("something.new", "messages[0].to") is None


def test_every_status_code_of_the_page_is_a_member() -> None:
    assert {int(code) for code in StatusErrorCode} == PAGE_STATUS_CODES
    assert all(code.meaning for code in StatusErrorCode)


def test_status_codes_say_what_to_do() -> None:
    assert StatusErrorCode(2301).action is StatusAction.RETRY_LATER
    assert StatusErrorCode(2312).action is StatusAction.RESEND_AS_TEMPLATE
    assert StatusErrorCode(2305).action is StatusAction.NOT_ON_WHATSAPP
    others = PAGE_STATUS_CODES - {2301, 2312, 2305}
    assert {StatusErrorCode(code).action for code in others} == {StatusAction.FAIL}
    assert [code for code in StatusErrorCode if code.retryable] == [2301]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (2312, StatusErrorCode.OUTSIDE_SESSION_WINDOW),
        ("2305", StatusErrorCode.NOT_ON_WHATSAPP),
        (" 2301 ", StatusErrorCode.TOO_MANY_MESSAGES),
        (0, None),
        (9999, None),
        ("E1", None),
        (None, None),
        (True, None),
        (23.12, None),
        ([2312], None),
    ],
)
def test_status_error_lookup_never_raises(raw: object, expected: object) -> None:
    assert status_error(raw) is expected


def test_auth_error_says_what_to_check() -> None:
    assert "BOTKIT_DEVINO_API_KEY" in str(DevinoAuthError(401))


def test_response_error_keeps_status_and_a_truncated_body() -> None:
    error = DevinoResponseError("not JSON", status_code=502, body=b"x" * 5000)
    assert error.status_code == 502
    assert error.body.startswith("x" * 500) and len(error.body) < 510
    assert "502" in str(error)
