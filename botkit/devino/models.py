"""Pydantic models of every payload on the provider's WhatsApp page.

Python attributes are snake_case; on the wire they are the provider's
camelCase (``contentUrl``) and ``from``. Models accept either spelling and
serialise by alias without None fields (:meth:`WireModel.to_wire`). Unknown
fields are kept everywhere: the provider's schema is not fully published, and
a field we do not know yet must not make us drop a message.

Outgoing messages are deliberately permissive: a message that breaks one of
the provider's rules still builds, and :func:`botkit.devino.validation.validate_message`
turns the breach into the provider's own reason (key and ref).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
)
from pydantic.alias_generators import to_camel

from botkit._events import DeliveryStatus
from botkit.devino.errors import (
    PayloadError,
    ReasonKey,
    StatusErrorCode,
    describe_reason,
    status_error,
)

__all__ = [
    "DEFAULT_BATCH_CAP",
    "LANGUAGE_CODE_LENGTH",
    "MAX_CONTENT_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "PHONE_DIGITS",
    "ContactAddress",
    "ContactCard",
    "ContactCompany",
    "ContactEmail",
    "ContactName",
    "ContactPhone",
    "ContactUrl",
    "GeoLocation",
    "IncomingMessage",
    "OutgoingMessage",
    "Reason",
    "ResultCode",
    "SendRequest",
    "SendResponse",
    "SendResult",
    "StatusReport",
    "WireModel",
    "parse_incoming",
    "parse_statuses",
]

# The provider's documented limits, as data. Validation reads them from here.
MAX_TEXT_LENGTH: Final = 1000
"""`text`: at most this many characters."""
MAX_CONTENT_NAME_LENGTH: Final = 100
"""`contentName`: at most this many characters (and not empty)."""
LANGUAGE_CODE_LENGTH: Final = (2, 8)
"""`languageCode`: inclusive bounds on its length. Not published by the
provider; 2..8 admits ``en``, ``pt_BR``, ``zh_Hant`` and ``es_419``."""
PHONE_DIGITS: Final = (7, 15)
"""`to`: inclusive bounds on the number of digits (E.164 allows 15)."""
DEFAULT_BATCH_CAP: Final = 100
"""How many messages one ``POST /whatsapp/messages`` may carry. Not published
by the provider; its older API allowed 100."""


class WireModel(BaseModel):
    """Base of every provider payload: camelCase aliases, extra fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="allow",
        coerce_numbers_to_str=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-able dict the provider sends or expects (by alias, no None fields)."""
        return self.model_dump(mode="json", exclude_none=True)


def _from_field(*, required: bool) -> Any:
    # `from` is a Python keyword: the attribute is `sender`. validation_alias
    # (not alias) keeps `sender=` as the constructor keyword for type checkers.
    choices = AliasChoices("from", "sender")
    if required:
        return Field(validation_alias=choices, serialization_alias="from", min_length=1)
    return Field(default=None, validation_alias=choices, serialization_alias="from")


def _wire_id(value: object, what: str) -> str:
    """Normalise an id that is documented as `long` but may come as a string."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number or a string, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"{what} must be a non-empty number or string")


def _id_to_wire(value: str) -> int | str:
    # The page types ids as `long`: give a number back when it is one.
    if value.isascii() and value.isdigit() and (value == "0" or not value.startswith("0")):
        return int(value)
    return value


def _unix_time(value: object) -> object:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("ts must be a finite number")
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    raise ValueError("ts must be a UNIX time in seconds (a number)")


def _as_list(value: object) -> object:
    # The page says "Array" for contact parts, but a single object is plausible.
    return [value] if isinstance(value, Mapping) else value


# --------------------------------------------------------------------- sending


class OutgoingMessage(WireModel):
    """One message for ``POST /whatsapp/messages``.

    Every field is optional here so that a message breaking the provider's
    rules can be built and then rejected by local validation with the
    provider's own reason. `template_params` accepts a list too, which becomes
    position keys (``["a", "b"]`` → ``{"1": "a", "2": "b"}``).

    >>> OutgoingMessage(sender="MyCompany", to="79034567890", text="Code: 1234").to_wire()
    {'from': 'MyCompany', 'to': '79034567890', 'text': 'Code: 1234'}
    """

    sender: str | None = _from_field(required=False)
    to: str | None = None
    text: str | None = None
    validity: int | None = None
    """Days the template message may wait for delivery; templates only."""
    content_url: str | None = None
    content_name: str | None = None
    content_type: str | None = None
    callback_url: str | None = None
    callback_data: str | None = None
    template_id: str | None = None
    template_params: dict[str, str] | None = None
    language_code: str | None = None

    @field_validator("template_params", mode="before")
    @classmethod
    def _position_keys(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return {str(position): param for position, param in enumerate(value, start=1)}
        if isinstance(value, Mapping):
            return {str(position): param for position, param in value.items()}
        return value

    @property
    def is_template(self) -> bool:
        """True when the message is a template (allowed outside the session window)."""
        return bool(self.template_id)


class Reason(WireModel):
    """Why the provider (or local validation) rejected a message: `key` and `ref`.

    `key` is kept as given even when it is not a known :class:`ReasonKey`.
    """

    key: str
    ref: str | None = None

    @property
    def meaning(self) -> str | None:
        """The provider's description of this reason, when its table has one."""
        return describe_reason(self.key, self.ref)

    @property
    def known_key(self) -> ReasonKey | None:
        """`key` as a :class:`ReasonKey`, or None when the provider sent a new one."""
        try:
            return ReasonKey(self.key)
        except ValueError:
            return None

    def __str__(self) -> str:
        where = f" {self.ref}" if self.ref else ""
        meaning = self.meaning
        return f"{self.key}{where}" + (f" ({meaning})" if meaning else "")


class ResultCode(StrEnum):
    """The documented values of a send result's `code`."""

    OK = "OK"
    REJECTED = "REJECTED"


class SendResult(WireModel):
    """The provider's answer for one message, in request order.

    `ok` with a `message_id`, or rejected with `reasons` (and maybe a
    `description`). `code` is kept as given when it is neither ``OK`` nor
    ``REJECTED``. `local` is True when botkit rejected the message itself
    without asking the provider (it is not part of the wire format).
    """

    code: str
    message_id: str | None = None
    reasons: list[Reason] = Field(default_factory=list)
    description: str | None = None
    local: bool = Field(default=False, exclude=True)

    @property
    def ok(self) -> bool:
        """True when the provider accepted the message."""
        return self.code == ResultCode.OK

    @classmethod
    def rejected(cls, reasons: list[Reason], *, local: bool = False) -> SendResult:
        """A ``REJECTED`` result with `reasons`, described from the provider's table."""
        description = "; ".join(filter(None, (reason.meaning for reason in reasons))) or None
        return cls(code=ResultCode.REJECTED, reasons=reasons, description=description, local=local)

    @model_serializer(mode="wrap")
    def _omit_empty_reasons(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        # The provider sends `reasons` with REJECTED only; keep OK results as it does.
        if not data.get("reasons"):
            data.pop("reasons", None)
        return data


class SendRequest(WireModel):
    """The body of ``POST /whatsapp/messages``."""

    messages: list[OutgoingMessage]


class SendResponse(WireModel):
    """The provider's answer to ``POST /whatsapp/messages``: one result per message."""

    result: list[SendResult]


# -------------------------------------------------------------------- statuses


class StatusReport(WireModel):
    """One status callback posted to a message's `callbackUrl`.

    `status` is a :class:`~botkit.DeliveryStatus` when known, else the raw string.
    `error_code` is an int (0 or None means no error), or the raw string when
    it is not numeric; :attr:`error` maps it to a ``StatusErrorCode``.
    `options` echoes the message's `callbackData`. `ts` is UNIX seconds.
    """

    message_id: str
    ts: int | None = None
    status: DeliveryStatus | str = Field(union_mode="left_to_right")
    error_code: int | str | None = Field(default=None, union_mode="left_to_right")
    ip: str | None = None
    browser: str | None = None
    os: str | None = None
    user_agent: str | None = None
    options: str | None = None

    @field_validator("message_id", mode="before")
    @classmethod
    def _message_id(cls, value: object) -> str:
        return _wire_id(value, "messageId")

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: object) -> object:
        return _unix_time(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> DeliveryStatus | str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("status must be a non-empty string")
        return DeliveryStatus.parse(value) or value

    @field_validator("error_code", mode="before")
    @classmethod
    def _error_code(cls, value: object) -> int | str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("errorCode must be a number or a string")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            return int(text) if text.lstrip("-").isdecimal() else value
        raise ValueError("errorCode must be a number, a string or null")

    @field_serializer("message_id")
    def _message_id_out(self, value: str) -> int | str:
        return _id_to_wire(value)

    @field_serializer("status")
    def _status_out(self, value: DeliveryStatus | str) -> str:
        return value.wire if isinstance(value, DeliveryStatus) else value

    @property
    def known_status(self) -> DeliveryStatus | None:
        """`status` when it is a known :class:`~botkit.DeliveryStatus`, else None."""
        return self.status if isinstance(self.status, DeliveryStatus) else None

    @property
    def error(self) -> StatusErrorCode | None:
        """The error code as a ``StatusErrorCode``, or None (no error or unknown)."""
        return status_error(self.error_code)


# -------------------------------------------------------------------- incoming


class LenientModel(WireModel):
    """A sub-object whose shape is not confirmed: every field optional."""


class GeoLocation(LenientModel):
    """`whatsAppGeoLocation`: a location the user shared."""

    latitude: float | None = None
    longitude: float | None = None
    address: str | None = None
    address_name: str | None = None
    address_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("addressurl", "addressUrl", "address_url"),
        serialization_alias="addressurl",
    )


class ContactAddress(LenientModel):
    """One postal address of a shared contact."""

    street: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    country_code: str | None = None
    type: str | None = None


class ContactEmail(LenientModel):
    """One e-mail address of a shared contact."""

    email: str | None = None
    type: str | None = None


class ContactName(LenientModel):
    """The name of a shared contact."""

    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    formatted_name: str | None = None
    name_prefix: str | None = None
    name_suffix: str | None = None


class ContactCompany(LenientModel):
    """Where a shared contact works."""

    company: str | None = None
    department: str | None = None
    title: str | None = None


class ContactPhone(LenientModel):
    """One phone number of a shared contact (`wa_id` when it is on WhatsApp)."""

    phone: str | None = None
    wa_id: str | None = None
    type: str | None = None


class ContactUrl(LenientModel):
    """One web address of a shared contact."""

    url: str | None = None
    type: str | None = None


class ContactCard(LenientModel):
    """One entry of `whatsAppContacts`: a contact card the user shared.

    Every list also accepts a single object.
    """

    addresses: list[ContactAddress] | None = None
    birthday: str | None = None
    """YYYY-MM-DD, as the user's phone gave it (not checked)."""
    emails: list[ContactEmail] | None = None
    contact_name: list[ContactName] | None = None
    contact_company: list[ContactCompany] | None = None
    phones: list[ContactPhone] | None = None
    urls: list[ContactUrl] | None = None

    @field_validator(
        "addresses", "emails", "contact_name", "contact_company", "phones", "urls", mode="before"
    )
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)


class IncomingMessage(WireModel):
    """A message a user sent to the bot, as the provider posts it.

    `incoming_message_id`, `sender` (``from``) and `to` are required and not
    empty; everything else is optional. `ts` is UNIX seconds.
    """

    incoming_message_id: str
    sender: str = _from_field(required=True)
    to: str = Field(min_length=1)
    text: str | None = None
    content_url: str | None = None
    content_type: str | None = None
    content_name: str | None = None
    profile_name: str | None = None
    ts: int | None = None
    geo_location: GeoLocation | None = Field(
        default=None,
        validation_alias=AliasChoices("whatsAppGeoLocation", "geo_location"),
        serialization_alias="whatsAppGeoLocation",
    )
    contacts: list[ContactCard] | None = Field(
        default=None,
        validation_alias=AliasChoices("whatsAppContacts", "contacts"),
        serialization_alias="whatsAppContacts",
    )

    @field_validator("incoming_message_id", mode="before")
    @classmethod
    def _incoming_message_id(cls, value: object) -> str:
        return _wire_id(value, "incomingMessageId")

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: object) -> object:
        return _unix_time(value)

    @field_validator("contacts", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)

    @field_serializer("incoming_message_id")
    def _incoming_message_id_out(self, value: str) -> int | str:
        return _id_to_wire(value)


# -------------------------------------------------------------------- parsing

_INCOMING_BATCH: TypeAdapter[list[IncomingMessage]] = TypeAdapter(list[IncomingMessage])
_STATUS_BATCH: TypeAdapter[list[StatusReport]] = TypeAdapter(list[StatusReport])


def _error(loc: str, msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


def _objects(body: object) -> list[Any]:
    if isinstance(body, bytes | bytearray | memoryview | str):
        raw = bytes(body) if isinstance(body, memoryview) else body
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise PayloadError([_error("", f"body is not JSON: {exc}")]) from None
        encoded = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        body, _ = repair_text(encoded, body)
    if isinstance(body, Mapping):
        return [body]
    if isinstance(body, list):
        if not body:
            raise PayloadError([_error("", "empty array: expected at least one object")])
        return body
    raise PayloadError(
        [_error("", f"expected a JSON object or an array of objects, got {type(body).__name__}")]
    )


_T = TypeVar("_T")


def _validate(adapter: TypeAdapter[list[_T]], body: object) -> list[_T]:
    items = _objects(body)
    try:
        return adapter.validate_python(items)
    except ValidationError as exc:
        errors = [
            _error(".".join(str(part) for part in error["loc"]), error["msg"])
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise PayloadError(errors) from None
    except RecursionError:
        raise PayloadError([_error("", "payload is nested too deeply")]) from None


# A JSON escape of a UTF-16 surrogate: only these can give a string that is
# not valid Unicode text (a lone surrogate) once decoded.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def repair_text(raw: bytes, body: Any) -> tuple[Any, list[str]]:
    """``body`` (decoded from ``raw``) with lone UTF-16 surrogates replaced by U+FFFD.

    JSON may escape half a surrogate pair (``"\\ud800"``): valid JSON, but
    not text anyone can store or send (it has no UTF-8 form). Such a message
    is repaired rather than refused, so it is answered once instead of being
    retried by the provider; the second item lists the repaired fields
    (``"0.text"``). Costs one scan of ``raw`` when there is nothing to repair.
    """
    if not _SURROGATE_ESCAPE.search(raw):
        return body, []
    repaired: list[str] = []

    def fix(value: Any, path: str) -> Any:
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                repaired.append(path)
                return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
            return value
        if isinstance(value, list):
            return [fix(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {
                fix(key, path): fix(item, f"{path}.{key}" if path else str(key))
                for key, item in value.items()
            }
        return value

    return fix(body, ""), repaired


def parse_incoming(body: object) -> list[IncomingMessage]:
    """Incoming messages from a webhook body: one object or an array of them.

    `body` is the decoded JSON value, or the raw bytes/str. Raises only
    :class:`~botkit.devino.errors.PayloadError` (whose `errors` name each
    field at fault, e.g. ``{"loc": "0.from", ...}``), also for an empty array.
    """
    return _validate(_INCOMING_BATCH, body)


def parse_statuses(body: object) -> list[StatusReport]:
    """Status reports from a callback body: one object or an array of them.

    Same contract as :func:`parse_incoming`. Unknown status names and
    non-numeric error codes are kept, not rejected.
    """
    return _validate(_STATUS_BATCH, body)
