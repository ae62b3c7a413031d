"""Downloading the media users send (their ``contentUrl`` may expire: fetch it promptly).

The size cap per kind is the provider's table (``botkit.devino.validation.MAX_BYTES``).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx

from botkit._events import Media, MediaKind
from botkit.devino.validation import MAX_BYTES

__all__ = [
    "MAX_BYTES",
    "MediaDownloadFailed",
    "MediaError",
    "MediaExpired",
    "MediaKind",
    "MediaTooLarge",
    "download",
]


class MediaError(Exception):
    """A media file could not be downloaded."""


class MediaExpired(MediaError):
    """The media URL no longer works (expired or removed); ask the user to send it again."""


class MediaTooLarge(MediaError):
    """The media is larger than WhatsApp allows for its kind; nothing was kept."""


class MediaDownloadFailed(MediaError):
    """The download failed (network error, timeout or server error); it may work if retried."""


async def download(
    client: httpx.AsyncClient,
    media: Media,
    path: str | Path | None = None,
    *,
    timeout: float = 30.0,
) -> bytes | Path:
    """Stream ``media.url`` with a timeout and the size cap of its kind.

    Returns the bytes, or streams them to ``path`` (through a hidden ``.part``
    file beside it, renamed when complete) and returns the path. A partial
    file is removed when the download fails.
    """
    cap = MAX_BYTES[media.kind]
    target = Path(path) if path is not None else None
    part = target.with_name(f".{target.name}.part") if target is not None else None
    try:
        body = await _fetch(client, media, cap, part, timeout)
    except BaseException:
        if part is not None:
            part.unlink(missing_ok=True)
        raise
    if target is None or part is None:
        return body
    part.replace(target)
    return target


async def _fetch(
    client: httpx.AsyncClient, media: Media, cap: int, part: Path | None, timeout: float
) -> bytes:
    """The body as bytes, or b"" after writing it to ``part`` chunk by chunk."""
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            async with client.stream("GET", media.url, follow_redirects=True) as response:
                if response.status_code in (403, 404, 410):
                    raise MediaExpired(
                        f"MediaExpired: {media.url} answered {response.status_code}; "
                        "the provider's media links expire, so download promptly or ask again"
                    )
                if response.status_code >= 400:
                    raise MediaDownloadFailed(
                        f"downloading {media.url} failed with HTTP {response.status_code}"
                    )
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdecimal() and int(declared) > cap:
                    raise _too_large(media, int(declared), cap)
                # Memory stays bounded by a chunk when writing to a file.
                file = await anyio.open_file(part, "wb") if part is not None else None
                try:
                    async for chunk in response.aiter_bytes():
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
    except TimeoutError:
        raise MediaDownloadFailed(
            f"downloading {media.url} took longer than {timeout:g}s"
        ) from None
    except httpx.HTTPError as exc:
        raise MediaDownloadFailed(f"downloading {media.url} failed: {exc!r}") from exc
    return b"".join(chunks)


def _too_large(media: Media, size: int, cap: int) -> MediaTooLarge:
    return MediaTooLarge(
        f"MediaTooLarge: {media.url} is over {size} bytes; {media.kind.value} files are "
        f"limited to {cap} bytes"
    )
