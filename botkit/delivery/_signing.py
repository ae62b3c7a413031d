"""Signed references in ``callbackData``, so a forged status callback is recognised.

Every message botkit sends carries ``callbackData = "<user>.<ref>.<mac>"``,
where ``mac`` is an HMAC-SHA256 (truncated to 128 bits) over the user and
botkit's message reference. The provider echoes it back as ``options`` in
each status callback; a callback whose ``options`` does not verify is
refused and triggers nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignedReference:
    """What a verified ``callbackData`` says: the recipient and botkit's message reference."""

    user: str
    ref: str


class CallbackSigner:
    """Signs and verifies ``callbackData``.

    ``secret`` should be long and random (``BOTKIT_CALLBACK_SECRET``; by
    default it is derived from the webhook token).
    """

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("the callback signing secret must be at least 16 characters long")
        # Derive a key of our own so the raw secret is never used for two purposes.
        self._key = hmac.new(key, b"botkit callbackData v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "CallbackSigner(<secret>)"

    def _mac(self, user: str, ref: str) -> str:
        digest = hmac.new(self._key, f"{user}.{ref}".encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, user: str, ref: str) -> str:
        """The ``callbackData`` for a message to ``user`` with reference ``ref``."""
        return f"{user}.{ref}.{self._mac(user, ref)}"

    def verify(self, data: str | None) -> SignedReference | None:
        """The reference ``data`` carries if its signature is valid, else None."""
        if not data or len(data) > 200:
            return None
        parts = data.split(".")
        if len(parts) != 3:
            return None
        user, ref, mac = parts
        if not user or not ref or not hmac.compare_digest(mac, self._mac(user, ref)):
            return None
        return SignedReference(user=user, ref=ref)
