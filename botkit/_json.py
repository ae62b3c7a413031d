"""Compact JSON, the form botkit stores and sends.

``json.dumps`` with options builds a new encoder on every call; the encoder
here is built once (a turn writes several of these strings).
"""

from __future__ import annotations

import json
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def compact_json(value: Any) -> str:
    """``value`` as JSON without spaces, non-ASCII text kept as it is."""
    return _encode(value)


__all__ = ["compact_json"]
