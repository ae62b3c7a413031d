"""What the provider can say went wrong, as named types.

Two vocabularies come back from Devino:

* a *reason* (`key` + `ref`) in the synchronous answer to ``POST /whatsapp/messages``
  when a message is ``REJECTED`` (:class:`ReasonKey`, :data:`REASON_TABLE`);
* an *error code* in a status callback when an accepted message later fails
  (:class:`StatusErrorCode`), each with the :class:`StatusAction` botkit takes.

The exceptions raised by the client and the parsers live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from botkit._errors import BotkitError

__all__ = [
    "REASON_TABLE",
    "DevinoAuthError",
    "DevinoConfigError",
    "DevinoError",
    "DevinoResponseError",
    "DevinoTransportError",
    "InvalidPhoneNumber",
    "PayloadError",
    "ReasonKey",
    "ReasonRow",
    "StatusAction",
    "StatusErrorCode",
    "describe_reason",
    "status_error",
]


class ReasonKey(StrEnum):
    """The `key` of a reason the provider gives for a ``REJECTED`` message."""

    BILLING_ERROR = "billing.error"
    FORBIDDEN = "forbidden"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    LENGTH_TOO_LONG = "length.too.long"
    LENGTH_TOO_SHORT = "length.too.short"
    MUST_BE_NOT_NULL = "must.be.not.null"
    NOT_AVAILABLE = "not.available"
    TOO_MANY_MESSAGES = "too.many.messages"


@dataclass(frozen=True, slots=True)
class ReasonRow:
    """One row of the provider's reason table.

    `ref` is the pattern the provider documents, with ``[i]`` standing for the
    message's index (``messages[i].to``), or None when the row has no ref.
    """

    key: ReasonKey
    ref: str | None
    description: str


#: The provider's reason table, row for row.
REASON_TABLE: tuple[ReasonRow, ...] = (
    ReasonRow(ReasonKey.BILLING_ERROR, None, "Payment is required"),
    ReasonRow(ReasonKey.FORBIDDEN, None, "Sending is prohibited"),
    ReasonRow(ReasonKey.UNKNOWN, None, "Unknown error"),
    ReasonRow(ReasonKey.INVALID, "messages[i].to", "Wrong phone number is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].validity", "Wrong lifetime is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].callbackUrl", "Wrong URL is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].contentUrl", "Wrong content URL is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].contentType", "Wrong content type is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].from", "Wrong sender is provided"),
    ReasonRow(ReasonKey.INVALID, "messages[i].languageCode", "Wrong language code is provided"),
    ReasonRow(
        ReasonKey.LENGTH_TOO_LONG,
        "messages[i].to",
        "The maximum phone number length has been exceeded",
    ),
    ReasonRow(
        ReasonKey.LENGTH_TOO_LONG,
        "messages[i].text",
        "The maximum message text length has been exceeded",
    ),
    ReasonRow(
        ReasonKey.LENGTH_TOO_LONG, "messages[i].languageCode", "The language code is too long"
    ),
    ReasonRow(ReasonKey.LENGTH_TOO_SHORT, "messages[i].contentName", "Content name too short"),
    ReasonRow(ReasonKey.LENGTH_TOO_SHORT, "messages[i].languageCode", "Language code too short"),
    ReasonRow(ReasonKey.MUST_BE_NOT_NULL, "messages[i].to", "No recipient specified"),
    ReasonRow(ReasonKey.MUST_BE_NOT_NULL, "messages", "The 'messages' array cannot be empty"),
    ReasonRow(ReasonKey.MUST_BE_NOT_NULL, "messages[i].from", "No sender specified"),
    ReasonRow(ReasonKey.MUST_BE_NOT_NULL, "messages[i]", "Text and content field not specified"),
    ReasonRow(ReasonKey.NOT_AVAILABLE, "messages[i].from", "Invalid sender address"),
    ReasonRow(
        ReasonKey.TOO_MANY_MESSAGES,
        "messages",
        "The maximum size of the 'messages' array has been exceeded",
    ),
)

_INDEX = re.compile(r"\[\d+\]")
_REASON_INDEX: dict[tuple[str, str | None], ReasonRow] = {
    (row.key.value, row.ref): row for row in REASON_TABLE
}


def describe_reason(key: str, ref: str | None = None) -> str | None:
    """The provider's description of a reason, or None when the table has no such row.

    `ref` is the concrete reference from a response (``messages[3].to``); the
    index is matched against the table's ``[i]``.

    >>> describe_reason("invalid", "messages[3].to")
    'Wrong phone number is provided'
    """
    pattern = _INDEX.sub("[i]", ref) if ref else None
    row = _REASON_INDEX.get((key, pattern))
    if row is None and pattern is not None:
        row = _REASON_INDEX.get((key, None))
    return row.description if row else None


class StatusAction(StrEnum):
    """What to do about a message whose status callback carried an error code."""

    RETRY_LATER = "retry_later"
    """Send the same message again after a pause (2301: too many messages)."""
    RESEND_AS_TEMPLATE = "resend_as_template"
    """The session window was closed: send a template instead (2312)."""
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    """The recipient does not use WhatsApp: stop writing to them (2305)."""
    FAIL = "fail"
    """Final: retrying the same message would fail again or cost money twice."""


class StatusErrorCode(IntEnum):
    """An `errorCode` of a status callback, from the provider's table (2000-2313).

    Each member carries `meaning` (the provider's description), `action` (a
    :class:`StatusAction`) and `retryable` (True only when sending the very
    same message later may succeed). Look up a code that may be unknown with
    :func:`status_error`.
    """

    OPERATOR_UNDEFINED = 2000
    SPAM = 2001
    BILLING_2002 = 2002
    BILLING_2003 = 2003
    BILLING_2004 = 2004
    NOT_ENOUGH_MONEY = 2005
    BILLING_2006 = 2006
    BILLING_2007 = 2007
    BILLING_2008 = 2008
    DUPLICATE = 2009
    EXPIRED = 2010
    EXPIRED_2011 = 2011
    BILLING_2012 = 2012
    SPAM_2017 = 2017
    TEXT_TOO_LONG = 2300
    TOO_MANY_MESSAGES = 2301
    SPAM_2302 = 2302
    MEDIA_UNSUPPORTED = 2303
    TEXT_TOO_LONG_2304 = 2304
    NOT_ON_WHATSAPP = 2305
    SENT_TO_SELF = 2307
    TEMPLATE_PARAMS_MISMATCH = 2308
    TEMPLATE_NOT_FOUND = 2309
    TEMPLATE_NOT_FOUND_2310 = 2310
    TEMPLATE_PARAM_TOO_LONG = 2311
    OUTSIDE_SESSION_WINDOW = 2312
    UNKNOWN = 2313

    @property
    def meaning(self) -> str:
        """The provider's description of this code."""
        return _STATUS_ERRORS[self][0]

    @property
    def action(self) -> StatusAction:
        """What botkit does about a message that failed with this code."""
        return _STATUS_ERRORS[self][1]

    @property
    def retryable(self) -> bool:
        """True when the same message may succeed if sent again later."""
        return self.action is StatusAction.RETRY_LATER


_BILLING = "Billing error"
_STATUS_ERRORS: dict[int, tuple[str, StatusAction]] = {
    2000: ("The recipient operator is not defined", StatusAction.FAIL),
    2001: ("Rejected as spam", StatusAction.FAIL),
    2002: (_BILLING, StatusAction.FAIL),
    2003: (_BILLING, StatusAction.FAIL),
    2004: (_BILLING, StatusAction.FAIL),
    2005: ("Not enough money", StatusAction.FAIL),
    2006: (_BILLING, StatusAction.FAIL),
    2007: (_BILLING, StatusAction.FAIL),
    2008: (_BILLING, StatusAction.FAIL),
    2009: ("Rejected as duplicate", StatusAction.FAIL),
    2010: ("Expired time of life", StatusAction.FAIL),
    2011: ("Expired time of life", StatusAction.FAIL),
    2012: (_BILLING, StatusAction.FAIL),
    2017: ("Rejected as spam", StatusAction.FAIL),
    2300: ("The text message length limit has been exceeded", StatusAction.FAIL),
    2301: (
        "Too many messages were sent in a short period of time. Retry the sending",
        StatusAction.RETRY_LATER,
    ),
    2302: ("Rejected as spam", StatusAction.FAIL),
    2303: (
        "The specified MIME-Type is not supported or the image is too large "
        "(more than or equal to 5MB)",
        StatusAction.FAIL,
    ),
    2304: ("Exceeded the text message length limit", StatusAction.FAIL),
    2305: (
        "User has not used or is no longer using WhatsApp",
        StatusAction.NOT_ON_WHATSAPP,
    ),
    2307: (
        "Occurs when you try to send a message to the phone number of the business "
        "account from which you are sending this message",
        StatusAction.FAIL,
    ),
    2308: (
        "The number of specified template parameters does not match their expected number",
        StatusAction.FAIL,
    ),
    2309: ("The template does not exist for the specified language or locale", StatusAction.FAIL),
    2310: ("The template does not exist for the specified language or locale", StatusAction.FAIL),
    2311: ("Exceeding the length of the template parameter", StatusAction.FAIL),
    2312: (
        "The message was sent out of the dialogue and without specifying a template",
        StatusAction.RESEND_AS_TEMPLATE,
    ),
    2313: ("Unknown error", StatusAction.FAIL),
}


def status_error(code: object) -> StatusErrorCode | None:
    """The :class:`StatusErrorCode` for `code`, or None when it is absent or unknown.

    Accepts what a callback may carry (an int, a numeric string, None) and
    never raises: an unknown code is for the caller to log, not to crash on.

    >>> status_error("2312").action
    <StatusAction.RESEND_AS_TEMPLATE: 'resend_as_template'>
    >>> status_error(0) is None
    True
    """
    if isinstance(code, bool):
        return None
    if isinstance(code, str):
        code = code.strip()
        if not code.isdecimal():
            return None
        code = int(code)
    if not isinstance(code, int):
        return None
    try:
        return StatusErrorCode(code)
    except ValueError:
        return None


class DevinoError(BotkitError):
    """Base of the errors raised by the provider edge (`botkit.devino`).

    When :meth:`DevinoClient.send <botkit.devino.client.DevinoClient.send>`
    split a batch into several requests and some of them succeeded before one
    failed, `partial_results` holds one entry per message given to `send`:
    its result when known, None when its request failed. Otherwise it is None.
    """

    # Each a botkit.devino.models.SendResult (models import this module, not the reverse).
    partial_results: list[Any] | None = None


class DevinoConfigError(DevinoError, ValueError):
    """The client or emulator was configured in a way that cannot work."""


class DevinoAuthError(DevinoError):
    """The provider refused the credentials (HTTP 401 or 403)."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(
            f"the provider refused the credentials (HTTP {status_code}): "
            "check BOTKIT_DEVINO_API_KEY (or the login and password) and BOTKIT_DEVINO_URL"
        )


#: How much of a malformed body an exception keeps.
BODY_EXCERPT_CHARS = 500


class DevinoResponseError(DevinoError):
    """The provider answered something that is not a valid send result.

    `status_code` is the HTTP status, `body` the first 500 characters of the
    body as text.
    """

    def __init__(self, problem: str, *, status_code: int, body: bytes | str) -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if len(text) > BODY_EXCERPT_CHARS:
            text = text[:BODY_EXCERPT_CHARS] + "..."
        self.status_code = status_code
        self.body = text
        self.problem = problem
        super().__init__(
            f"malformed response from the provider (HTTP {status_code}): {problem}; "
            f"body: {text!r}. Check BOTKIT_DEVINO_URL points at the Devino API"
        )


class DevinoTransportError(DevinoError):
    """The provider could not be reached, or kept failing, after every retry.

    `cause` is the last exception (a connection error or timeout) or None
    when the last attempt got an HTTP answer; `status_code` is that answer's
    status (5xx), or None. `attempts` says how many requests were made.
    `unanswered` is True when the last request went out and no answer came
    (a read timeout, a dropped connection): the provider may have accepted
    its messages.
    """

    def __init__(
        self,
        *,
        attempts: int,
        cause: BaseException | None,
        status_code: int | None,
        unanswered: bool = False,
    ) -> None:
        self.attempts = attempts
        self.unanswered = unanswered
        self.cause = cause
        self.status_code = status_code
        last = f"HTTP {status_code}" if status_code is not None else _describe(cause)
        super().__init__(
            f"the provider did not accept the request after {attempts} attempt(s); "
            f"last failure: {last}. The messages may be retried later; "
            "check the network and BOTKIT_DEVINO_URL"
        )


def _describe(cause: BaseException | None) -> str:
    if cause is None:
        return "unknown"
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


class PayloadError(DevinoError, ValueError):
    """A webhook body from the provider is not a valid payload.

    `errors` is a JSON-able list of ``{"loc": "0.from", "msg": "..."}``
    naming each field at fault (``loc`` is the index in the batch, then the
    field's wire name), fit to answer with HTTP 422.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        shown = "; ".join(f"{e['loc'] or '(body)'}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"invalid payload from the provider: {shown}{more}")


class InvalidPhoneNumber(BotkitError, ValueError):
    """A phone number cannot be a WhatsApp recipient.

    The message says what is wrong and what a valid number looks like,
    showing only the number's last digits; ``number`` is what was given.
    """

    def __init__(self, message: str, *, number: str | None = None) -> None:
        super().__init__(message)
        self.number = number
