"""The store's own RESP packing and reply parsing, byte for byte.

The contract suite runs the store over RESP2 and RESP3 against a real Redis;
here are the reply shapes a healthy server rarely sends (errors inside arrays,
attributes, pushes) and replies cut at every byte, as they arrive from a socket.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import exceptions as rerr

from botkit.storage._resp import _PUSH, _Incomplete, _parse, pack_evalsha


def parse_all(data: bytes) -> list[Any]:
    replies, pos = [], 0
    while pos < len(data):
        reply, pos = _parse(data, pos)
        if reply is not _PUSH:
            replies.append(reply)
    return replies


def test_evalsha_is_packed_as_resp_bulk_strings() -> None:
    packed = pack_evalsha("abc", ["k:{7903}", "ключ"], [30000, 2.5, "", b"\x00"])
    assert packed == (
        b"*9\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$8\r\nk:{7903}\r\n"
        b"$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n$5\r\n30000\r\n$3\r\n2.5\r\n$0\r\n\r\n$1\r\n\x00\r\n"
    )


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_an_argument_redis_cannot_take_is_refused_by_name(bad: object) -> None:
    with pytest.raises(TypeError, match="str, bytes, int or float"):
        pack_evalsha("abc", [], [bad])


def test_resp2_replies() -> None:
    data = b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n$2\r\n\xc3\xa9\r\n*1\r\n+x\r\n"
    assert parse_all(data) == ["OK", 42, "hello", None, None, [1, "é", ["x"]]]


def test_resp3_replies() -> None:
    data = (
        b"_\r\n#t\r\n#f\r\n,1.5\r\n(12345678901234567890\r\n=8\r\ntxt:abcd\r\n"
        b"%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n"
    )
    assert parse_all(data) == [
        *(None, True, False, 1.5, 12345678901234567890),
        *("abcd", {"k": 1}, [1, 2]),
    ]


def test_an_attribute_is_skipped_and_a_push_is_not_a_reply() -> None:
    data = b"|1\r\n+ttl\r\n:3\r\n:7\r\n>2\r\n+invalidate\r\n*0\r\n:8\r\n"
    assert parse_all(data) == [7, 8]


def test_error_replies_are_redis_py_exceptions_returned_not_raised() -> None:
    noscript, inner, blob = parse_all(
        b"-NOSCRIPT No matching script.\r\n*2\r\n:1\r\n-ERR inner\r\n!11\r\nERR blob er\r\n"
    )
    assert isinstance(noscript, rerr.NoScriptError)
    assert inner[0] == 1 and isinstance(inner[1], rerr.ResponseError)
    assert isinstance(blob, rerr.ResponseError) and "blob er" in str(blob)


def test_a_reply_cut_anywhere_is_incomplete_until_its_last_byte() -> None:
    reply = b"*3\r\n$5\r\nhello\r\n:42\r\n*1\r\n$0\r\n\r\n"
    for cut in range(len(reply)):
        with pytest.raises(_Incomplete):
            _parse(reply[:cut], 0)
    assert _parse(reply, 0) == (["hello", 42, [""]], len(reply))


def test_an_unknown_reply_type_is_an_invalid_response() -> None:
    with pytest.raises(rerr.InvalidResponse):
        _parse(b"?what\r\n", 0)


def test_waiting_for_the_rest_of_a_reply_keeps_nothing_alive() -> None:
    """Each incomplete parse raises a fresh exception, its traceback as short as the first's.

    (One shared exception instance, raised again and again, chains every
    traceback onto itself and keeps each frame's buffer alive: memory grew
    with every message.)
    """

    def depth(exc: BaseException) -> int:
        tb, n = exc.__traceback__, 0
        while tb is not None:
            tb, n = tb.tb_next, n + 1
        return n

    depths = []
    for _ in range(5):
        with pytest.raises(_Incomplete) as caught:
            _parse(b"*2\r\n$5\r\nhel", 0)
        depths.append(depth(caught.value))
    assert depths == [depths[0]] * 5
