"""The provider edge: everything that knows Devino's wire format.

* :mod:`~botkit.devino.models` — the payloads (outgoing messages, send
  results, status reports, incoming messages) and their parsers;
* :mod:`~botkit.devino.errors` — reason keys, status error codes, exceptions;
* :mod:`~botkit.devino.validation` — the provider's rules, checked locally;
* :mod:`~botkit.devino.client` — :class:`DevinoClient`, which sends.

The local stand-in for the provider is a dev tool:
:class:`botkit.devtools.emulator.Emulator`.

The rest of botkit imports from here, never the wire format itself.
"""

import warnings

from botkit._events import DeliveryStatus
from botkit.devino.client import DevinoClient, RequestRecord, RetryPolicy
from botkit.devino.errors import (
    DevinoAuthError,
    DevinoConfigError,
    DevinoError,
    DevinoResponseError,
    DevinoTransportError,
    InvalidPhoneNumber,
    PayloadError,
    ReasonKey,
    StatusAction,
    StatusErrorCode,
    status_error,
)
from botkit.devino.models import (
    ContactCard,
    GeoLocation,
    IncomingMessage,
    OutgoingMessage,
    Reason,
    SendResult,
    StatusReport,
    parse_incoming,
    parse_statuses,
)
from botkit.devino.validation import (
    MEDIA_TYPES,
    MediaKind,
    max_bytes,
    media_kind,
    normalize_phone,
    validate_message,
)

__all__ = [
    "MEDIA_TYPES",
    "ContactCard",
    "DevinoAuthError",
    "DevinoClient",
    "DevinoConfigError",
    "DevinoError",
    "DevinoResponseError",
    "DevinoTransportError",
    "GeoLocation",
    "IncomingMessage",
    "InvalidPhoneNumber",
    "MediaKind",
    "OutgoingMessage",
    "PayloadError",
    "Reason",
    "ReasonKey",
    "RequestRecord",
    "RetryPolicy",
    "SendResult",
    "StatusAction",
    "StatusErrorCode",
    "StatusReport",
    "max_bytes",
    "media_kind",
    "normalize_phone",
    "parse_incoming",
    "parse_statuses",
    "status_error",
    "validate_message",
]


def __getattr__(name: str) -> object:
    # Deprecated names, kept importable for a while with a warning.
    if name == "MessageStatus":
        warnings.warn(
            "botkit.devino.MessageStatus is botkit.DeliveryStatus now (one status enum; "
            "values are lower case, .wire gives the provider's name)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DeliveryStatus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
