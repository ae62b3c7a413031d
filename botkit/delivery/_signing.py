"""Signed ``callbackData``, so a forged or altered status callback triggers nothing.

Every message botkit sends carries
``callbackData = "<user>.<ref>.<fallback>.<mac>"``: the recipient, botkit's
message reference, a digest of the fallback template the message may be
resent as after a 2312 (``-`` when it has none), and an HMAC-SHA256
(truncated to 128 bits) over all three. The provider echoes it back as
``options`` in each status callback; a callback whose ``options`` does not
verify is refused and triggers nothing. So the signature covers everything a
callback can cause: whose conversation it runs in (a 2305 marks that user),
which message it settles, and which template a 2312 may send.

What the signature cannot cover is the status itself (the provider chooses
it): a genuine ``callbackData`` can be replayed with any status. The status
tracker makes that harmless (statuses only move forward, a failure after
delivery is ignored, a fallback goes at most once).

The key is ``BOTKIT_CALLBACK_SECRET`` (at least 32 bytes), or the one a
Redis store shares between all workers and instances (see
:meth:`botkit.storage.base.ConversationStore.shared_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from botkit._outbound import Template

MIN_SECRET_BYTES = 32
"""The shortest callback secret accepted (256 bits when random)."""

NO_FALLBACK = "-"


@dataclass(frozen=True, slots=True)
class SignedReference:
    """What a verified ``callbackData`` says.

    ``fallback`` is :func:`fallback_digest` of the message's fallback template
    (``"-"``: none), or None for a reference signed by botkit before the
    fallback was covered: such a callback never triggers a fallback.
    """

    user: str
    ref: str
    fallback: str | None = NO_FALLBACK


def fallback_digest(template: Template | None) -> str:
    """A short digest of a fallback template (everything the provider would send)."""
    if template is None:
        return NO_FALLBACK
    canonical = json.dumps(template.to_dict(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()[:9]
    return base64.urlsafe_b64encode(digest).decode()


class CallbackSigner:
    """Signs and verifies ``callbackData``.

    ``secret`` must be at least 32 bytes, long and random
    (``BOTKIT_CALLBACK_SECRET``).
    """

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the callback signing secret must be at least {MIN_SECRET_BYTES} bytes long"
            )
        # Derive a key of our own so the raw secret is never used for two purposes.
        self._key = hmac.new(key, b"botkit callbackData v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "CallbackSigner(<secret>)"

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, user: str, ref: str, fallback: Template | None = None) -> str:
        """The ``callbackData`` for a message to ``user`` with reference ``ref``."""
        covered = f"{user}.{ref}.{fallback_digest(fallback)}"
        return f"{covered}.{self._mac('v2.' + covered)}"

    def verify(self, data: str | None) -> SignedReference | None:
        """What ``data`` says if its signature is valid, else None."""
        if not data or len(data) > 200:
            return None
        parts = data.split(".")
        fallback: str | None
        if len(parts) == 4:
            user, ref, fallback, mac = parts
            expected = self._mac(f"v2.{user}.{ref}.{fallback}")
            if not fallback:
                return None
        elif len(parts) == 3:  # signed before the fallback was covered: never falls back
            user, ref, mac = parts
            fallback, expected = None, self._mac(f"{user}.{ref}")
        else:
            return None
        if not user or not ref or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return SignedReference(user=user, ref=ref, fallback=fallback)
