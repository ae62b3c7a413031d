"""Connecting to Redis: URLs, Sentinel, TLS, and naming Redis failures.

``redis://`` and ``rediss://`` (TLS) and ``unix://`` URLs go to redis-py as
they are; ``redis+sentinel://`` names sentinels and a service, and the client
follows the primary through them. Passwords never appear in messages:
:func:`mask` hides the one in the URL's user part and any ``*password*``
query parameter.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import hiredis
import redis.asyncio as aioredis
import redis.asyncio.connection
from redis import exceptions as rerr
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from botkit.storage.base import StorageError, StorageUnavailable

try:  # redis-py 7 and later
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py has no maintenance notifications
    MaintNotificationsConfig = None  # type: ignore[assignment, misc]

# Server answers that mean "not now" rather than "wrong": the store is unavailable.
UNAVAILABLE_REPLIES = (
    "READONLY",
    "MISCONF",
    "OOM",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
)

# What redis-py's BlockingConnectionPool says when no connection freed up in time.
_POOL_EXHAUSTED = "No connection available."

# redis-py's names for a cluster that cannot serve a slot right now (its
# messages lose the CLUSTERDOWN/TRYAGAIN/MASTERDOWN prefix the server sent).
_CLUSTER_UNAVAILABLE = (
    rerr.ClusterDownError,
    rerr.TryAgainError,
    rerr.MasterDownError,
    rerr.SlotNotCoveredError,
    rerr.RedisClusterException,
)

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
"""The URL schemes :func:`build_client` knows."""

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

Client = aioredis.Redis | RedisCluster
"""What the store talks to: one Redis (standalone or Sentinel's primary) or a cluster."""


class HiredisConnection(aioredis.Connection):
    """redis-py's asyncio TCP connection, packing commands with hiredis.

    redis-py's sync client packs with hiredis when it is installed; its
    asyncio connection packs in Python, which costs the store a fifth of a
    turn's client CPU. Same bytes on the wire, same encoding (UTF-8, strict).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """``args`` as one RESP command (a command name with a space is split, as redis-py does)."""
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def build_client(
    url: str, *, socket_timeout: float, connect_timeout: float, max_connections: int
) -> Client:
    """A client for ``url`` with the store's timeouts, no silent retries and a bounded pool.

    At most ``max_connections`` connections are open; a command that finds
    them all busy waits up to ``socket_timeout`` for one
    (:class:`~redis.asyncio.BlockingConnectionPool`). On Redis Cluster the
    bound is per node, and a command over it fails at once (redis-py's own
    cluster pool).
    """
    options = _options(socket_timeout, connect_timeout, max_connections)
    scheme = urlsplit(url).scheme
    if scheme == "redis+sentinel":
        return sentinel_client(url, options, pool_timeout=socket_timeout)
    if scheme in CLUSTER_SCHEMES:
        return cluster_client(url, options)
    if scheme not in SCHEMES:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster:// (rediss+cluster:// with TLS)"
        )
    if scheme == "redis":  # rediss:// and unix:// keep the URL's own connection class
        options["connection_class"] = HiredisConnection
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=socket_timeout, **options)
    return aioredis.Redis(connection_pool=pool)


def cluster_nodes(
    url: str, *, socket_timeout: float, connect_timeout: float
) -> tuple[list[tuple[str, int]], Callable[[str, int], aioredis.Redis]]:
    """For a cluster URL: its seed nodes, and ``make(host, port)`` for a client of one node."""
    return hosts(url, default_port=6379), node_client_factory(
        url, _options(socket_timeout, connect_timeout, 1)
    )


def _options(socket_timeout: float, connect_timeout: float, max_connections: int) -> dict[str, Any]:
    """The store's client options: timeouts, no silent retries, a bounded pool."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        # No silent retries: a retried BEGIN whose first answer was lost would
        # report its own message as a duplicate. The caller (the provider) retries.
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
    }
    if MaintNotificationsConfig is not None:
        # Off: in its default "auto" mode the pool skips its check that an idle
        # connection is still open, and a connection the server closed (a
        # restart) would fail the next batch for nothing. The store does not
        # use maintenance notifications (a managed-service feature).
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (follows the primary) with the blocking pool's bound.

    When all ``max_connections`` are in use a command waits up to ``timeout``
    seconds for one instead of failing at once.
    """


def sentinel_client(
    url: str, options: dict[str, Any], *, pool_timeout: float = 2.0
) -> aioredis.Redis:
    """The primary's client from ``redis+sentinel://[[user]:pass@]h1[:p],h2[:p]/service[/db]``.

    ``?sentinel_password=...`` when the sentinels need a password of their own.
    """
    parts = urlsplit(url)
    sentinels = hosts(url, default_port=26379)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(
            "a redis+sentinel:// URL names the service after the hosts: "
            "redis+sentinel://host1:26379,host2:26379/mymaster[/db]"
        )
    query = parse_qs(parts.query)
    master = dict(options)
    master["db"] = int(path[1]) if len(path) > 1 else 0
    if parts.username:
        master["username"] = unquote(parts.username)
    if parts.password is not None:
        master["password"] = unquote(parts.password)
    sentinel_options = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "decode_responses": True,
    }
    if "sentinel_password" in query:
        sentinel_options["password"] = query["sentinel_password"][0]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=sentinel_options, **master
    )
    return cast(
        aioredis.Redis,
        sentinel.master_for(
            unquote(path[0]),
            redis_class=aioredis.Redis,
            connection_pool_class=BlockingSentinelPool,
            timeout=pool_timeout,
        ),
    )


def hosts(url: str, *, default_port: int) -> list[tuple[str, int]]:
    """The ``host[:port]`` list of a multi-host URL (``[v6]:port`` too), after any credentials."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    found: list[tuple[str, int]] = []
    for node in netloc.split(","):
        if not node:
            continue
        if node.startswith("["):  # [::1]:7000
            host, _, rest = node[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = node.partition(":")
        try:
            found.append((host or "127.0.0.1", int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"the Redis URL names a host with a bad port: {node!r}") from None
    if not found:
        raise ValueError("the Redis URL names no host: give at least one host[:port]")
    return found


def cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """A Redis Cluster client from ``redis+cluster://[[user]:pass@]h1[:p][,h2[:p]...]``.

    Any reachable node finds the others. ``rediss+cluster://`` speaks TLS
    (``?ssl_ca_certs=...``, ``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_cert_reqs=none|optional|required``); ``?username=``/``?password=``
    may stand for the user part. Cluster has one database: no ``/db``.
    ``options`` are the store's client options; ``max_connections`` bounds
    each node's pool. MOVED, ASK and TRYAGAIN answers are followed by
    redis-py; a node that fails makes the next command re-read the slots.
    """
    nodes = [ClusterNode(host, port) for host, port in hosts(url, default_port=6379)]
    return RedisCluster(
        startup_nodes=nodes, require_full_coverage=True, **_cluster_options(url, options)
    )


def node_client_factory(url: str, options: dict[str, Any]) -> Callable[[str, int], aioredis.Redis]:
    """For a cluster URL: ``make(host, port)`` opens a client to that one node.

    It carries the URL's credentials and TLS settings (for what must talk to
    one node itself, like the sharded pub/sub listener).
    """
    kwargs = _cluster_options(url, options)
    kwargs.pop("max_connections", None)

    def make(host: str, port: int) -> aioredis.Redis:
        return aioredis.Redis(host=host, port=port, **kwargs)

    return make


# What a cluster client's connections carry that a client of one of its nodes needs too.
_NODE_OPTIONS = (
    "username",
    "password",
    "credential_provider",
    "decode_responses",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "retry",
    "protocol",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


def nodes_of(
    cluster: RedisCluster,
) -> tuple[list[tuple[str, int]], Callable[[str, int], aioredis.Redis]]:
    """For a ready cluster client: its known nodes (or startup nodes), and ``make(host, port)``.

    ``make`` opens a client to one node with the cluster client's credentials,
    timeouts and TLS settings (read through its public ``get_connection_kwargs``).
    """
    given = cluster.get_connection_kwargs()
    kwargs: dict[str, Any] = {name: given[name] for name in _NODE_OPTIONS if name in given}
    connection_class = given.get("connection_class")
    if isinstance(connection_class, type) and issubclass(connection_class, aioredis.SSLConnection):
        kwargs["ssl"] = True

    def make(host: str, port: int) -> aioredis.Redis:
        return aioredis.Redis(host=host, port=port, **kwargs)

    seeds = [(node.host, int(node.port)) for node in cluster.get_nodes()]
    return seeds, make


def _cluster_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments for the nodes of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if path not in ([], ["0"]):
        raise ValueError(
            "Redis Cluster has only database 0: drop the /<db> from the "
            f"{parts.scheme}:// URL ({mask(url)})"
        )
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - _CLUSTER_QUERY)
    if unknown:
        raise ValueError(
            f"unknown {parts.scheme}:// URL parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_CLUSTER_QUERY))}"
        )
    kwargs: dict[str, Any] = {
        name: options[name]
        for name in (
            "decode_responses",
            "socket_timeout",
            "socket_connect_timeout",
            "socket_keepalive",
            "retry",
            "max_connections",
        )
        if name in options
    }
    username = unquote(parts.username) if parts.username else query.get("username")
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    if username:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    if parts.scheme == "rediss+cluster":
        kwargs["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in query:
                kwargs[name] = query[name]
    return kwargs


_CLUSTER_QUERY = frozenset(
    ("username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
)
"""The query parameters a ``redis+cluster://`` URL may carry."""


def mask(url: str) -> str:
    """The URL with its passwords hidden (user part and ``*password*`` query parameters)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password" in parts.query.lower():
        query = [
            (name, "***" if "password" in name.lower() else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return parts.geturl()


def closed_under_write(exc: BaseException) -> bool:
    """True for the error redis-py's asyncio connection raises when a connection closes
    while it writes to it: a lost connection, not a bug of ours.

    redis-py (8.1 and earlier) lets such a write raise the transport's
    ``AttributeError`` or ``TypeError`` instead of its ``ConnectionError``
    (redis-py issues #3546 and #4287). On Redis Cluster it happens when a
    pipeline connects while the client is closed to re-read the slot map
    after a failover (see ``ScriptRunner.notice_lost_nodes``).
    """
    if not isinstance(exc, AttributeError | TypeError):
        return False
    module = redis.asyncio.connection.__file__
    return any(frame.filename == module for frame in traceback.extract_tb(exc.__traceback__))


def named_error(url: str, prefix: str, doing: str, exc: BaseException) -> StorageError:
    """The store's named error for a Redis failure while ``doing``.

    :class:`StorageUnavailable` (the webhook answers 503, the provider
    retries) when Redis did not answer or refused for now; :class:`StorageError`
    otherwise.
    """
    if isinstance(exc, rerr.ConnectionError) and str(exc) == _POOL_EXHAUSTED:
        return StorageUnavailable(
            f"could not {doing}: every Redis connection of this store stayed busy for the "
            f"socket timeout. Redis at {mask(url)} is slow or hung, or max_connections is "
            "too small for the load"
        )
    if isinstance(exc, rerr.ConnectionError | rerr.TimeoutError) or closed_under_write(exc):
        return StorageUnavailable(
            f"could not {doing}: Redis at {mask(url)} did not answer ({exc}). "
            "Check that it runs and that BOTKIT_REDIS_URL points at it; the "
            "operation was not applied, or applied whole (scripts are atomic)"
        )
    if isinstance(exc, _CLUSTER_UNAVAILABLE):
        return StorageUnavailable(
            f"could not {doing}: the Redis Cluster at {mask(url)} is failing over or "
            f"resharding ({type(exc).__name__}: {exc}); it was not changed. Try again shortly"
        )
    if isinstance(exc, rerr.ResponseError):
        if str(exc).split(" ", 1)[0] in UNAVAILABLE_REPLIES or isinstance(exc, rerr.ReadOnlyError):
            return StorageUnavailable(
                f"could not {doing}: Redis at {mask(url)} refused ({exc}). "
                "It is read-only, out of memory, loading or failing over; it was "
                "not changed. Point the store at the current primary or free memory"
            )
        return StorageError(
            f"could not {doing}: Redis answered {str(exc)!r}. Is another application "
            f"using the key prefix {prefix!r}?"
        )
    return StorageError(f"could not {doing}: {exc!r}")
