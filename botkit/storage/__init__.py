"""Conversation stores: where state, data, the outbox and the sent log live.

:class:`MemoryStore` for development, tests and single-process bots;
:class:`RedisStore` for production (several workers or replicas). Both keep
the contract of :class:`ConversationStore`.
"""

from botkit._outbound import Origin, SentRecord, new_ref
from botkit.storage.base import (
    Conversation,
    ConversationStore,
    DuplicateMessage,
    LockLost,
    OutboxItem,
    StorageError,
    StorageUnavailable,
    StoreConfig,
    TurnLease,
    UserBusy,
)
from botkit.storage.memory import MemoryStore
from botkit.storage.redis import RedisStore

__all__ = [
    "Conversation",
    "ConversationStore",
    "DuplicateMessage",
    "LockLost",
    "MemoryStore",
    "Origin",
    "OutboxItem",
    "RedisStore",
    "SentRecord",
    "StorageError",
    "StorageUnavailable",
    "StoreConfig",
    "TurnLease",
    "UserBusy",
    "new_ref",
]
