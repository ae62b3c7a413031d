"""The Lua scripts of the Redis store, read from the ``lua/`` files next to this module.

Each script is one atomic round trip: either all of its writes happen or none
do. They are loaded once (``SCRIPT LOAD``) and called by SHA (``EVALSHA``),
loaded again when the server answers ``NOSCRIPT`` (after a restart, a
``SCRIPT FLUSH`` or a failover to a replica with an empty script cache).

Every script is sent as ``lua/prelude.lua`` (helpers shared by the
scripts), then the script's own file. Each file starts with what its KEYS and ARGV are
and what it returns.

Numbers that must keep their precision (unix timestamps) are compared with
``tonumber`` but stored as the string the caller sent, because Lua's
``tostring`` keeps only 14 significant digits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` calls it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


_PRELUDE = _read("prelude")


def load(name: str, *, library: str | None = None) -> Script:
    """The script ``lua/<name>.lua`` after the prelude (and ``library``, when given)."""
    return Script(name, _PRELUDE + (_read(library) if library else "") + _read(name))


BEGIN = load("begin")
COMMIT = load("commit")
ENQUEUE = load("enqueue")
RENEW = load("renew")
ABORT = load("abort")
CLAIM = load("claim")
RELEASE_DUE = load("release_due")
UPDATE_SENT = load("update_sent")
GET_SENT = load("get_sent")
RECEIPT = load("receipt")
ACK = load("ack")
READY = load("ready")
ATTEMPT = load("attempt")
TOUCH = load("touch")
TIMERS_CLAIM = load("timers_claim")
TIMERS_RESCHEDULE = load("timers_reschedule")
HANDOFFS = load("handoffs")
HANDOFFS_ALL = load("handoffs_all")
NOTICES_ADD = load("notices_add")
PRUNE_CONSUMERS = load("prune_consumers")

# Campaigns (botkit/storage/redis/campaigns.py): loaded on first use (NOSCRIPT).
CAMPAIGN_ADD = load("campaign_add", library="campaign_lib")
CAMPAIGN_TOKENS = load("campaign_tokens", library="campaign_lib")
CAMPAIGN_SETTLE = load("campaign_settle", library="campaign_lib")
CAMPAIGN_STATUS = load("campaign_status", library="campaign_lib")
CAMPAIGN_THROTTLE = load("campaign_throttle", library="campaign_lib")
CAMPAIGN_STATE = load("campaign_state", library="campaign_lib")
CAMPAIGN_CLAIM = load("campaign_claim", library="campaign_lib")

ALL = (
    BEGIN,
    COMMIT,
    RENEW,
    ABORT,
    CLAIM,
    RELEASE_DUE,
    UPDATE_SENT,
    GET_SENT,
    RECEIPT,
    ACK,
    READY,
    ENQUEUE,
    ATTEMPT,
    TOUCH,
    TIMERS_CLAIM,
    TIMERS_RESCHEDULE,
    HANDOFFS,
    HANDOFFS_ALL,
    NOTICES_ADD,
    PRUNE_CONSUMERS,
)
"""Every script the store loads at open."""
