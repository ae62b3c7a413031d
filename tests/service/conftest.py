"""Fixtures of the service tests: the provider emulator over real HTTP.

Redis comes from ``tests/conftest.py`` (``redis_url``, ``redis_prefix``:
skipped locally without a Redis, a failure in CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from botkit.devtools.emulator import Emulator
from tests.service._harness import API_KEY, BotProcess


@dataclass
class Provider:
    """The emulator and the base URL it is served at."""

    emulator: Emulator
    url: str


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    """A provider emulator served over real HTTP in the test's event loop."""
    emulator = Emulator(api_key=API_KEY)
    async with emulator.serve() as url:
        yield Provider(emulator, url)


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    """``botkit`` subprocesses a test starts: stopped afterwards, their output shown on failure."""
    started: list[BotProcess] = []
    yield started
    for process in started:
        process.stop()
        print(f"--- output of botkit {' '.join(process.args)}:\n{process.log()}")
