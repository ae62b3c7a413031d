"""A lean pipeline for the store's script calls: RESP written and read by hand.

Every turn makes two script calls, and under load the calls of one event-loop
step go out as one pipeline. redis-py spends most of a turn's client CPU on
them: it packs each argument through its encoder, keeps a command stack, and
parses each reply through several layers. Here one batch is packed with a few
byte joins and its replies are parsed straight from the socket's buffer
(``tests/bench/bench_store.py`` and ``bench_webhook.py`` measure the result).

redis-py still owns the connection: :meth:`Connection.connect` does the TLS,
AUTH, HELLO, SELECT and Sentinel lookups, and its parser names the errors
(``NOSCRIPT`` becomes :class:`redis.exceptions.NoScriptError`, and so on).
What is used of it beyond its public methods is the connection's stream pair
(``_reader``, ``_writer``), present since redis-py 4.2; ``pyproject.toml``
bounds the versions the test suite has run against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis import exceptions as rerr
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection

_CRLF = b"\r\n"
_READ_SIZE = 65_536
# Flush the write buffer before reading when a batch leaves this much in it.
_DRAIN_ABOVE = 1 << 16


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more.

    Raised as a fresh instance each time: re-raising one shared instance would
    chain every traceback onto it and keep their frames (and buffers) alive.
    """


# redis-py's own naming of error replies (NOSCRIPT -> NoScriptError, ...).
_error = cast(Callable[[str], Exception], BaseParser.parse_error)


def _arg(value: Any) -> bytes:
    """An argument that is neither str nor int (those are packed inline)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"a script argument must be str, bytes, int or float, not {value!r}")


def pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha numkeys *keys *args`` as one RESP command."""
    numkeys = b"%d" % len(keys)
    out = [
        b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        % (len(keys) + len(args) + 3, len(sha), sha.encode(), len(numkeys), numkeys)
    ]
    for item in (*keys, *args):
        # str and int are nearly every argument: handled inline, the rest by _arg.
        kind = type(item)
        data = item.encode() if kind is str else b"%d" % item if kind is int else _arg(item)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Push:
    """An out-of-band RESP3 push (``>``): not the reply to any command."""


_PUSH = _Push()


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """The reply that starts at ``pos`` and where the next one starts; raises ``_Incomplete``.

    Bulk strings come back decoded (UTF-8), error replies as the exception
    redis-py would raise for them (returned, not raised, as in a pipeline).
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    head = buf[pos + 1 : end]
    pos = end + 2
    if kind in b"$=!":  # bulk string, verbatim string, bulk error
        size = int(head)
        if size < 0:
            return None, pos
        stop = pos + size
        if len(buf) < stop + 2:
            raise _Incomplete
        text = buf[pos:stop].decode()
        if kind == 61:  # "=": "txt:" or "mkd:" before the text
            text = text[4:]
        elif kind == 33:  # "!"
            return _error(text), stop + 2
        return text, stop + 2
    if kind == 58 or kind == 40:  # ":" integer, "(" big number
        return int(head), pos
    if kind == 43:  # "+" simple string
        return head.decode(), pos
    if kind == 45:  # "-" error
        return _error(head.decode()), pos
    if kind in b"*~>%|":  # array, set, push, map, attribute
        count = int(head)
        if count < 0:
            return None, pos
        if kind in b"%|":
            count *= 2
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        if kind == 37:  # "%"
            return dict(zip(items[::2], items[1::2], strict=True)), pos
        if kind == 124:  # "|": metadata about the reply that follows
            return _parse(buf, pos)
        if kind == 62:  # ">"
            return _PUSH, pos
        return items, pos
    if kind == 95:  # "_" null
        return None, pos
    if kind == 35:  # "#" boolean
        return head == b"t", pos
    if kind == 44:  # "," double
        return float(head), pos
    raise rerr.InvalidResponse(f"unexpected reply type {chr(kind)!r} from Redis")


def stale(connection: AbstractConnection) -> bool:
    """True when an idle connection can no longer be used: the server closed it (EOF) or it failed.

    An idle connection notices a server going away only as an end of stream
    on its reader; sending on it would fail the next batch for nothing.
    """
    reader = connection._reader
    return reader is None or reader.at_eof() or reader.exception() is not None


async def exchange(
    connection: AbstractConnection, payload: bytes, count: int, timeout: float
) -> tuple[list[Any], bool]:
    """Send ``count`` packed commands and read their ``count`` replies, in order.

    Returns the replies and whether the connection may be used again: False
    when more arrived after them (an out-of-band RESP3 push, say), which the
    next exchange must not read as its own. Failures are named as redis-py
    names them: :class:`redis.exceptions.TimeoutError` after ``timeout``
    seconds, :class:`redis.exceptions.ConnectionError` when the server closes
    the connection or the socket fails (a reset, say). After a failure the
    connection is unusable: disconnect it.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(connection, payload, count)
    except TimeoutError:
        raise rerr.TimeoutError(f"Redis did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise rerr.ConnectionError(f"the connection to Redis failed: {exc}") from exc


async def _exchange(
    connection: AbstractConnection, payload: bytes, count: int
) -> tuple[list[Any], bool]:
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        raise rerr.ConnectionError("the connection is closed")
    writer.write(payload)
    if writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
        await writer.drain()
    replies: list[Any] = []
    buf = b""
    pos = 0
    while True:
        chunk = await reader.read(_READ_SIZE)
        if not chunk:
            raise rerr.ConnectionError("Redis closed the connection")
        buf = buf[pos:] + chunk if pos else buf + chunk
        pos = 0
        try:
            while True:
                reply, pos = _parse(buf, pos)
                if reply is not _PUSH:
                    replies.append(reply)
                    if len(replies) == count:
                        return replies, pos == len(buf)
        except _Incomplete:
            continue
