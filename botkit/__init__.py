"""botkit: WhatsApp chatbots on the Devino WhatsApp API.

Where things are:

- a webhook enters in :mod:`botkit.service` (``POST /whatsapp/incoming/{token}``),
  is parsed by :mod:`botkit.devino.models` into events (``botkit._events``), and
  runs as one turn (``botkit._runtime``);
- the handler is picked by the router (``botkit._router``; flows: ``botkit._flow``)
  and holds a :class:`Context` (``botkit._context``);
- state lives in a conversation store (:mod:`botkit.storage`: memory or Redis);
- replies are shaped by the reply policy and leave through the outbox and the
  sender (:mod:`botkit.delivery`) to the provider (:mod:`botkit.devino.client`).

A bot imports everything it needs from ``botkit``.
"""

from botkit._bot import Bot, BotNotRunning
from botkit._clock import Clock, ManualClock, SystemClock
from botkit._context import Context, FlowControl
from botkit._errors import BotkitError
from botkit._events import (
    Contact,
    ContactsMessage,
    DeliveryStatus,
    Event,
    EventKind,
    HandoffEnded,
    LocationMessage,
    Media,
    MediaKind,
    MediaMessage,
    Message,
    StatusUpdate,
    TextMessage,
    Timer,
    TimerFired,
)
from botkit._filters import (
    Choices,
    ErrorCode,
    Filter,
    Keywords,
    MediaType,
    Mime,
    Predicate,
    Regex,
    StatusIs,
    Text,
    TimerIs,
)
from botkit._flow import Flow, FlowError, InvalidTrigger, NotInFlow, State
from botkit._handoff import HandoffError
from botkit._media import (
    MediaBlocked,
    MediaDownloadFailed,
    MediaError,
    MediaExpired,
    MediaPolicy,
    MediaTooLarge,
)
from botkit._outbound import OutboundMessage, SendMode, Template
from botkit._plugins import InvalidPlugin, Plugin, UnknownPlugin
from botkit._policy import (
    TEXT_LIMIT,
    DeliveryRefused,
    NotOnWhatsApp,
    OptedOut,
    OutsideSessionWindow,
    ReplyPolicy,
    ReplyTooLong,
    SessionWindow,
    split_text,
)
from botkit._retry import RetryPolicy, RetryPolicyError
from botkit._router import ANY, Router, SkipHandler
from botkit._runtime import Runtime
from botkit._transcript import (
    EntryKind,
    Handoff,
    HandoffEnd,
    HandoffStatus,
    TranscriptEntry,
    TranscriptPage,
)
from botkit._turn import Outcome, Turn, TurnOutcome
from botkit._where import DefinitionError
from botkit.delivery import DeliveryRejected
from botkit.devino.errors import InvalidPhoneNumber
from botkit.storage.base import (
    DuplicateMessage,
    LockLost,
    StorageError,
    StorageUnavailable,
    StoreConfig,
    UserBusy,
)

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "TEXT_LIMIT",
    "Bot",
    "BotNotRunning",
    "BotkitError",
    "Choices",
    "Clock",
    "Contact",
    "ContactsMessage",
    "Context",
    "DefinitionError",
    "DeliveryRefused",
    "DeliveryRejected",
    "DeliveryStatus",
    "DuplicateMessage",
    "EntryKind",
    "ErrorCode",
    "Event",
    "EventKind",
    "Filter",
    "Flow",
    "FlowControl",
    "FlowError",
    "Handoff",
    "HandoffEnd",
    "HandoffEnded",
    "HandoffError",
    "HandoffStatus",
    "InvalidPhoneNumber",
    "InvalidPlugin",
    "InvalidTrigger",
    "Keywords",
    "LocationMessage",
    "LockLost",
    "ManualClock",
    "Media",
    "MediaBlocked",
    "MediaDownloadFailed",
    "MediaError",
    "MediaExpired",
    "MediaKind",
    "MediaMessage",
    "MediaPolicy",
    "MediaTooLarge",
    "MediaType",
    "Message",
    "Mime",
    "NotInFlow",
    "NotOnWhatsApp",
    "OptedOut",
    "OutboundMessage",
    "Outcome",
    "OutsideSessionWindow",
    "Plugin",
    "Predicate",
    "Regex",
    "ReplyPolicy",
    "ReplyTooLong",
    "RetryPolicy",
    "RetryPolicyError",
    "Router",
    "Runtime",
    "SendMode",
    "SessionWindow",
    "SkipHandler",
    "State",
    "StatusIs",
    "StatusUpdate",
    "StorageError",
    "StorageUnavailable",
    "StoreConfig",
    "SystemClock",
    "Template",
    "Text",
    "TextMessage",
    "Timer",
    "TimerFired",
    "TimerIs",
    "TranscriptEntry",
    "TranscriptPage",
    "Turn",
    "TurnOutcome",
    "UnknownPlugin",
    "UserBusy",
    "split_text",
]
