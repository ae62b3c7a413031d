"""Delivery: what carries a committed turn's replies out and the provider's answers back.

- :class:`OutboxWorker` (configured by :class:`OutboxWorkerConfig`): batches
  the outbox into the provider's send calls, retries, records what was sent;
- :class:`CallbackSigner`: the signed ``callbackData`` a status callback must carry;
- :class:`StatusTracker`: status callbacks, deduplicated, moved forward, the
  2312 fallback and the 2301 retry (:class:`DeliveryRejected` reaches error handlers);
- :class:`TimerWorker` (configured by :class:`TimerConfig`): runs due timers as turns;
- :class:`ShardOwnership`, :func:`owner`, :func:`owned_shards`: which outbox
  shards a worker reads (rendezvous hashing over the live workers);
- :func:`start_campaign` and :class:`CampaignFeed`: bulk sends behind the replies.

The reply policy (text or template, splitting) sits lower, with the engine
(:class:`botkit.ReplyPolicy`): a turn uses it before anything is committed.
The service (:class:`botkit.service.Service`) builds and runs these workers;
tests and operators who run one alone import them from here.
"""

from botkit.delivery._campaigns import CampaignFeed, csv_audience, start_campaign
from botkit.delivery._sender import OutboxWorker, OutboxWorkerConfig
from botkit.delivery._shards import ShardOwnership, owned_shards, owner
from botkit.delivery._signing import MIN_SECRET_BYTES, CallbackSigner
from botkit.delivery._status import DeliveryRejected, StatusOutcome, StatusTracker, furthest
from botkit.delivery._timers import TimerConfig, TimerWorker

__all__ = [
    "MIN_SECRET_BYTES",
    "CallbackSigner",
    "CampaignFeed",
    "DeliveryRejected",
    "OutboxWorker",
    "OutboxWorkerConfig",
    "ShardOwnership",
    "StatusOutcome",
    "StatusTracker",
    "TimerConfig",
    "TimerWorker",
    "csv_audience",
    "furthest",
    "owned_shards",
    "owner",
    "start_campaign",
]
