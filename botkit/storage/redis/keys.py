"""The store's key layout: every key name the Redis store uses, built in one place.

``P`` = ``<prefix>:<bot>``; the ``{user}`` hash tag keeps every per-user key
in one cluster slot::

    P:{79031234567}:conv          hash: the conversation (see fields.py); sliding TTL
    P:{79031234567}:lock          the turn lock: a random token, PX lock_ttl
    P:{79031234567}:waiting       set while a turn waits: the commit publishes a wake-up
    P:{79031234567}:seen:<key>    dedupe mark: "in_progress" (PX lock_ttl) or "done"
    P:{79031234567}:order         hash: next, done: the user's send order (the last number
                                  a queued reply got, the last one the provider answered)
    P:outbox                      stream of messages to send (consumer group "senders")
    P:outbox:delayed              zset of messages waiting for ``not_before`` (score)
    P:sent:<messageId>            sent-message record (JSON), TTL sent_ttl
    P:unlock                      pub/sub channel: "<store instance> <user>" wake-ups
"""

from __future__ import annotations


class Keys:
    """Key names of one bot under one prefix."""

    __slots__ = ("base", "channel", "delayed", "outbox")

    def __init__(self, prefix: str, bot: str) -> None:
        for name, value in (("prefix", prefix), ("bot", bot)):
            if not value or any(c in value for c in "{} \t\r\n"):
                raise ValueError(
                    f"RedisStore {name} {value!r} must be non-empty, without braces or spaces "
                    "(braces would break the per-user hash tags)"
                )
        self.base = f"{prefix}:{bot}"
        self.outbox = f"{self.base}:outbox"
        self.delayed = f"{self.base}:outbox:delayed"
        self.channel = f"{self.base}:unlock"

    def user(self, user: str) -> str:
        """The common start of the user's keys (carries the hash tag)."""
        return f"{self.base}:{{{user}}}"

    def conv(self, user: str) -> str:
        """The user's conversation hash."""
        return f"{self.user(user)}:conv"

    def order(self, user: str) -> str:
        """The user's send order: the last number given and the last one answered."""
        return f"{self.user(user)}:order"

    def turn(self, user: str, key: str | None) -> list[str]:
        """conv, lock, waiting[, seen]: the per-user keys of a turn."""
        base = self.user(user)
        keys = [f"{base}:conv", f"{base}:lock", f"{base}:waiting"]
        if key is not None:
            keys.append(f"{base}:seen:{key}")
        return keys

    def sent(self, message_id: str) -> str:
        """The sent-message record of a provider ``messageId``."""
        return f"{self.base}:sent:{message_id}"

    def secret(self, name: str) -> str:
        """A secret every process on this Redis shares (no expiry)."""
        return f"{self.base}:secret:{name}"
