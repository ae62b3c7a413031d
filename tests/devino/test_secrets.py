"""The credential never leaves the client: not in logs, reprs or exception messages."""

from __future__ import annotations

import base64
import logging
import socket
import traceback

import pytest

from botkit.devino import (
    DevinoAuthError,
    DevinoClient,
    DevinoError,
    DevinoResponseError,
    DevinoTransportError,
    OutgoingMessage,
    RetryPolicy,
)
from botkit.devtools.emulator import Emulator

SECRET = "sk-live-9c1f4e7a2b"
PASSWORD = "pw-6d3e8f0a"
MESSAGE = OutgoingMessage(sender="Shop", to="79031112233", text="hi")
RETRY = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0)


def leaks(text: str) -> list[str]:
    token = base64.b64encode(f"shop:{PASSWORD}".encode()).decode()
    return [secret for secret in (SECRET, PASSWORD, token) if secret in text]


def shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error.args)


async def test_the_key_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    errors: list[DevinoError] = []
    right = Emulator(api_key=SECRET)
    wrong = Emulator(api_key="another-key")
    async with right.serve() as right_url, wrong.serve() as wrong_url:
        right.fail_next(1, status=500)
        async with DevinoClient(right_url, api_key=SECRET, retry=RETRY) as devino:
            assert leaks(repr(devino)) == [] and leaks(str(devino)) == []
            assert (await devino.send_one(MESSAGE)).ok  # after one retry, logged
            right.fail_next(2, status=503)
            with pytest.raises(DevinoTransportError) as transport:
                await devino.send_one(MESSAGE)
            errors.append(transport.value)
            right.garble_next(1)
            with pytest.raises(DevinoResponseError) as response:
                await devino.send_one(MESSAGE)
            errors.append(response.value)
        async with DevinoClient(wrong_url, api_key=SECRET, retry=RETRY) as devino:
            with pytest.raises(DevinoAuthError) as auth:
                await devino.send_one(MESSAGE)
            errors.append(auth.value)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with DevinoClient(f"http://127.0.0.1:{port}", api_key=SECRET, retry=RETRY) as devino:
        with pytest.raises(DevinoTransportError) as refused:
            await devino.send_one(MESSAGE)
        errors.append(refused.value)

    assert "retrying" in caplog.text  # the retries were logged...
    assert leaks(caplog.text) == []  # ...without the key
    for error in errors:
        assert leaks(shown(error)) == [], type(error).__name__


async def test_basic_credentials_appear_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = Emulator(login="shop", password=PASSWORD)
    async with emulator.serve() as url:
        async with DevinoClient(url, login="shop", password=PASSWORD, retry=RETRY) as devino:
            assert leaks(repr(devino)) == []
            assert (await devino.send_one(MESSAGE)).ok
        async with DevinoClient(url, login="shop", password="wrong", retry=RETRY) as devino:
            with pytest.raises(DevinoAuthError) as auth:
                await devino.send_one(MESSAGE)
    assert leaks(caplog.text) == [] and leaks(shown(auth.value)) == []
    assert leaks(repr(emulator)) == []
