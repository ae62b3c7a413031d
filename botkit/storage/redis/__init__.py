"""The Redis conversation store, split by job.

- :mod:`~botkit.storage.redis.store`: :class:`RedisStore` itself;
- :mod:`~botkit.storage.redis.keys`: the key layout;
- :mod:`~botkit.storage.redis.fields`: the conversation's field list and codec;
- :mod:`~botkit.storage.redis.scripts` and ``lua/``: the Lua scripts;
- :mod:`~botkit.storage.redis.runner`: the batched script runner;
- :mod:`~botkit.storage.redis.waiters`: per-user waiters and the wake-up listener;
- :mod:`~botkit.storage.redis.connection`: URLs, Sentinel, TLS, password masking;
- :mod:`~botkit.storage.redis.migrate`: the upgrade from the layout before shards.
"""

from botkit.storage.redis.migrate import StoreLayoutError
from botkit.storage.redis.store import RedisStore

__all__ = ["RedisStore", "StoreLayoutError"]
