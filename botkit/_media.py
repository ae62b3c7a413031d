"""Downloading the media users send (their ``contentUrl`` may expire: fetch it promptly).

A media URL comes from outside, so fetching it is guarded (:class:`MediaPolicy`):

- only ``http`` and ``https``, at most 5 redirects, each hop checked again;
- the host is resolved and a loopback, private, link-local, multicast,
  reserved or otherwise non-public address is refused
  (:class:`MediaBlocked`) unless the host, or a network holding its
  address, is in the allow-list (``BOTKIT_MEDIA_ALLOW_HOSTS``). The
  connection goes to the very address that was checked, so a DNS answer
  that changes between the check and the connection (DNS rebinding) cannot
  reach an inside address;
- the body streams under a size cap (the provider's table by kind,
  :data:`MAX_BYTES`, lowered by ``BOTKIT_MEDIA_MAX_BYTES``) and a total
  timeout; with a ``path`` it goes to the file chunk by chunk, never held
  whole in memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpcore

from botkit._errors import BotkitError
from botkit._events import Media, MediaKind
from botkit._retry import RetryPolicy
from botkit.devino.validation import MAX_BYTES

__all__ = [
    "MAX_BYTES",
    "MAX_REDIRECTS",
    "MediaBlocked",
    "MediaDownloadFailed",
    "MediaError",
    "MediaExpired",
    "MediaFetcher",
    "MediaKind",
    "MediaPolicy",
    "MediaTooLarge",
    "refused_because",
]

MAX_REDIRECTS = 5
"""Redirects followed at most; each one's target is checked like the first URL."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = ("localhost", "127.0.0.0/8", "::1")
"""What :meth:`MediaPolicy.for_development` adds to the allow-list."""


class MediaError(BotkitError):
    """A media file could not be downloaded."""


class MediaExpired(MediaError):
    """The media URL no longer works (expired or removed); ask the user to send it again."""


class MediaTooLarge(MediaError):
    """The media is larger than allowed for its kind; nothing was kept."""


class MediaDownloadFailed(MediaError):
    """The download failed (network error, timeout, server error, too many redirects).

    It may work if retried. ``transient`` is True for a network error or an
    HTTP 5xx/429, which the download has already retried (``MediaPolicy.retry``).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class MediaBlocked(MediaError):
    """The media URL leads somewhere botkit does not fetch from; nothing was requested there.

    ``reason`` says why: ``"scheme"`` (not http or https), or the kind of
    address the host resolved to (``"loopback"``, ``"private"``,
    ``"link-local"``, ``"multicast"``, ``"reserved"``, ``"unspecified"``,
    ``"not public"``). ``url`` is the URL refused (a redirect's target,
    perhaps), ``host`` its host, ``address`` the address refused (None for
    a scheme).
    """

    def __init__(self, message: str, *, url: str, host: str, reason: str, address: str | None):
        super().__init__(message)
        self.url = url
        self.host = host
        self.reason = reason
        self.address = address


MEDIA_RETRY = RetryPolicy(attempts=3, base_delay=0.25, max_delay=2.0)
"""A media download's default retries: three tries in all."""


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may be fetched from, how much and for how long.

    ``allow_hosts`` lists host names (exact, any case), addresses and
    networks (``10.1.0.0/16``) fetched from even though they are not public
    (an internal media proxy, say). ``max_bytes`` lowers the provider's cap
    for every kind; ``timeout`` bounds a whole download, redirects and
    retries included (``ctx.download_media(timeout=...)`` overrides it).
    ``retry`` tries again after a network error or an HTTP 5xx or 429 (the
    service passes its settings' backoff), never past the timeout.
    """

    allow_hosts: tuple[str, ...] = ()
    max_bytes: int | None = None
    timeout: float = 30.0
    max_redirects: int = MAX_REDIRECTS
    retry: RetryPolicy = MEDIA_RETRY
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allow_hosts:
            entry = entry.strip().strip("[]").lower()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def for_development(cls, allow_hosts: Iterable[str] = (), **options: Any) -> MediaPolicy:
        """A policy that also fetches from this machine (``botkit dev``, ``BotTester``)."""
        return cls(allow_hosts=(*LOOPBACK, *allow_hosts), **options)

    def cap(self, kind: MediaKind) -> int:
        """The largest file of ``kind`` downloaded."""
        cap = MAX_BYTES[kind]
        return cap if self.max_bytes is None else min(cap, self.max_bytes)

    def host_allowed(self, host: str) -> bool:
        """True when ``host`` is allowed by name, whatever it resolves to."""
        return host.strip("[]").lower().rstrip(".") in self._names

    def address_allowed(self, address: IPAddress) -> bool:
        """True when ``address`` is in an allowed network."""
        return any(address in network for network in self._networks)


def refused_because(address: IPAddress) -> str | None:
    """Why ``address`` is not fetched from (``"loopback"``, ``"private"``...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not public", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


class _CheckedNetwork(httpcore.AsyncNetworkBackend):
    """Connects only where the policy allows: resolves, checks, connects to what it checked."""

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                error = exc
        assert error is not None
        raise error

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses: list[IPAddress] = []
        for *_, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if self._policy.host_allowed(host):
            return addresses
        for address in addresses:
            reason = refused_because(address)
            if reason is not None and not self._policy.address_allowed(address):
                raise MediaBlocked(
                    f"MediaBlocked: {host} resolves to {address}, a {reason} address; "
                    "media is fetched only from public addresses (add the host to "
                    "BOTKIT_MEDIA_ALLOW_HOSTS to fetch from it anyway)",
                    url="",
                    host=host,
                    reason=reason,
                    address=str(address),
                )
        return addresses

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise MediaBlocked(
            "MediaBlocked: media is not fetched over unix sockets",
            url="",
            host=path,
            reason="scheme",
            address=None,
        )

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class MediaFetcher:
    """Downloads media under a :class:`MediaPolicy`, over connections it checked itself.

    One per runtime (``ctx.download_media`` uses it); :meth:`aclose` closes
    its connections.
    """

    def __init__(self, policy: MediaPolicy | None = None) -> None:
        self.policy = policy or MediaPolicy()
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=_CheckedNetwork(self.policy), max_connections=100
        )

    async def aclose(self) -> None:
        """Close the connections kept for reuse."""
        await self._pool.aclose()

    async def download(
        self, media: Media, path: str | Path | None = None, *, timeout: float | None = None
    ) -> bytes | Path:
        """Stream ``media.url`` with the policy's checks, timeout and size cap.

        Returns the bytes, or streams them to ``path`` (through a hidden
        ``.part`` file beside it, renamed when complete) and returns the
        path. A partial file is removed when the download fails.
        """
        limit = self.policy.timeout if timeout is None else timeout
        target = Path(path) if path is not None else None
        part = target.with_name(f".{target.name}.part") if target is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        retry, failures = self.policy.retry, 0
        while True:
            try:
                body = await _fetch(self._pool, self.policy, media, part, limit, deadline)
                break
            except MediaDownloadFailed as exc:
                if part is not None:
                    part.unlink(missing_ok=True)
                failures += 1
                if not exc.transient or retry.gives_up(after=failures):
                    raise
                pause = retry.delay(failures - 1)
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
            except BaseException:
                if part is not None:
                    part.unlink(missing_ok=True)
                raise
        if target is None or part is None:
            return body
        part.replace(target)
        return target


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NETWORK_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    OSError,
)


async def _fetch(
    pool: httpcore.AsyncConnectionPool,
    policy: MediaPolicy,
    media: Media,
    part: Path | None,
    timeout: float,
    deadline: float,
) -> bytes:
    """The body as bytes, or b"" after writing it to ``part`` chunk by chunk.

    ``timeout`` is the whole download's, named in the error; ``deadline``
    (the loop's time) is when it ends, retries included.
    """
    cap = policy.cap(media.kind)
    url = media.url
    try:
        async with asyncio.timeout_at(deadline):
            for _ in range(policy.max_redirects + 1):
                _check_scheme(url)
                async with pool.stream("GET", url, headers=_HEADERS) as response:
                    if response.status in _REDIRECTS:
                        location = _header(response, b"location")
                        if location is None:
                            raise MediaDownloadFailed(
                                f"downloading {url} failed: HTTP {response.status} "
                                "without a Location"
                            )
                        url = urljoin(url, location)
                        continue
                    return await _read(response, media, url, cap, part)
    except TimeoutError:
        raise MediaDownloadFailed(f"downloading {url} took longer than {timeout:g}s") from None
    except MediaBlocked as exc:
        if not exc.url:
            exc.url = url
        raise
    except _NETWORK_ERRORS as exc:
        raise MediaDownloadFailed(f"downloading {url} failed: {exc!r}", transient=True) from exc
    raise MediaDownloadFailed(
        f"downloading {media.url} failed: more than {policy.max_redirects} redirects"
    )


_HEADERS = [(b"Accept-Encoding", b"identity"), (b"User-Agent", b"botkit")]


def _check_scheme(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise MediaBlocked(
            f"MediaBlocked: {url} is not an http or https URL; media is fetched over "
            "http and https only",
            url=url,
            host=parts.hostname or "",
            reason="scheme",
            address=None,
        )


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read(
    response: httpcore.Response, media: Media, url: str, cap: int, part: Path | None
) -> bytes:
    if response.status in (403, 404, 410):
        raise MediaExpired(
            f"MediaExpired: {url} answered {response.status}; "
            "the provider's media links expire, so download promptly or ask again"
        )
    if response.status >= 400:
        raise MediaDownloadFailed(
            f"downloading {url} failed with HTTP {response.status}",
            transient=response.status >= 500 or response.status == 429,
        )
    declared = _header(response, b"content-length")
    if declared is not None and declared.isdecimal() and int(declared) > cap:
        raise _too_large(media, int(declared), cap)
    chunks: list[bytes] = []
    size = 0
    # Memory stays bounded by a chunk when writing to a file.
    file = await anyio.open_file(part, "wb") if part is not None else None
    try:
        async for chunk in response.aiter_stream():
            size += len(chunk)
            if size > cap:
                raise _too_large(media, size, cap)
            if file is None:
                chunks.append(chunk)
            else:
                await file.write(chunk)
    finally:
        if file is not None:
            await file.aclose()
    return b"".join(chunks)


def _too_large(media: Media, size: int, cap: int) -> MediaTooLarge:
    return MediaTooLarge(
        f"MediaTooLarge: {media.url} is over {size} bytes; {media.kind.value} files are "
        f"limited to {cap} bytes"
    )
