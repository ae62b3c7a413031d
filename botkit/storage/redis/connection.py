"""Connecting to Redis: URLs, Sentinel, TLS, and naming Redis failures.

``redis://`` and ``rediss://`` (TLS) and ``unix://`` URLs go to redis-py as
they are; ``redis+sentinel://`` names sentinels and a service, and the client
follows the primary through them. Passwords never appear in messages:
:func:`mask` hides the one in the URL's user part and any ``*password*``
query parameter.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rerr
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from botkit.storage.base import StorageError, StorageUnavailable

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

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
"""The URL schemes :func:`build_client` knows."""


def build_client(
    url: str, *, socket_timeout: float, connect_timeout: float, max_connections: int
) -> aioredis.Redis:
    """A client for ``url`` with the store's timeouts, no silent retries and a bounded pool."""
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
    scheme = urlsplit(url).scheme
    if scheme == "redis+sentinel":
        return sentinel_client(url, options)
    # redis+cluster:// and rediss+cluster:// (Redis Cluster) are dispatched here.
    if scheme not in SCHEMES:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix:// "
            "or redis+sentinel:// (Redis Cluster is not supported yet)"
        )
    return aioredis.Redis.from_url(url, **options)


def sentinel_client(url: str, options: dict[str, Any]) -> aioredis.Redis:
    """The primary's client from ``redis+sentinel://[[user]:pass@]h1[:p],h2[:p]/service[/db]``.

    ``?sentinel_password=...`` when the sentinels need a password of their own.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    sentinels: list[tuple[str, int]] = []
    for node in netloc.split(","):
        host, _, port = node.rpartition(":") if ":" in node else (node, "", "")
        sentinels.append((host or node, int(port or 26379)))
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
    return cast(aioredis.Redis, sentinel.master_for(unquote(path[0]), redis_class=aioredis.Redis))


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


def named_error(url: str, prefix: str, doing: str, exc: BaseException) -> StorageError:
    """The store's named error for a Redis failure while ``doing``.

    :class:`StorageUnavailable` (the webhook answers 503, the provider
    retries) when Redis did not answer or refused for now; :class:`StorageError`
    otherwise.
    """
    if isinstance(exc, rerr.ConnectionError | rerr.TimeoutError):
        return StorageUnavailable(
            f"could not {doing}: Redis at {mask(url)} did not answer ({exc}). "
            "Check that it runs and that BOTKIT_REDIS_URL points at it; the "
            "operation was not applied, or applied whole (scripts are atomic)"
        )
    if isinstance(exc, rerr.ResponseError):
        if str(exc).split(" ", 1)[0] in UNAVAILABLE_REPLIES or isinstance(exc, rerr.ReadOnlyError):
            return StorageUnavailable(
                f"could not {doing}: Redis at {mask(url)} refused ({exc}). "
                "It is read-only, out of memory, loading or failing over; it was "
                "not changed. Point the store at the current primary or free memory"
            )
        return StorageError(
            f"could not {doing}: Redis answered {exc!r}. Is another application "
            f"using the key prefix {prefix!r}?"
        )
    return StorageError(f"could not {doing}: {exc!r}")
