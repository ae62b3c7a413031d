"""The pytest plugin for bot authors: loaded by pytest whenever botkit is installed.

Install the test tools with ``pip install 'botkit[test]'`` (pytest and
pytest-asyncio); nothing needs configuring. In a test module::

    from mybot import bot          # the bot the fixtures use

    async def test_greets(chat):   # a started BotTester on `bot`
        assert (await chat.send_text("hi")).texts == ["Hello, there!"]

    async def test_for_real(live_bot):  # a LiveBot: the service under uvicorn + the emulator
        await live_bot.say("79031234567", "hi")
        [reply] = await live_bot.replies(1)

Fixtures:

- ``bot``: the :class:`~botkit.Bot` under test. By default the ``bot`` the
  test module defines or imports; else the ``botkit_bot`` ini option
  (``botkit_bot = "mybot:bot"``). Define a ``bot`` fixture in ``conftest.py``
  to choose it yourself.
- ``chat``: a started :class:`~botkit.testing.BotTester` on ``bot``, stopped
  after the test.
- ``live_bot``: a running :class:`~botkit.testing.LiveBot` on ``bot``.

Async tests: every ``async def test_...`` that no other async plugin claims
(no ``anyio`` or ``trio`` mark) is run by pytest-asyncio, whatever its mode:
the plugin marks it ``asyncio``. Your own async fixtures need
``@pytest_asyncio.fixture`` (or ``asyncio_mode = "auto"``), as pytest-asyncio
documents. ``pytest -p no:botkit`` turns the plugin off.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypeVar, cast

import pytest

from botkit import Bot
from botkit.testing import BotTester, LiveBot

MISSING_ASYNCIO = (
    "async tests and botkit's chat and live_bot fixtures need pytest-asyncio: "
    "pip install 'botkit[test]'"
)
OTHER_ASYNC_MARKS = ("asyncio", "anyio", "trio")

_F = TypeVar("_F", bound=Callable[..., Any])


def async_fixture(fn: _F) -> _F:
    """An async fixture pytest-asyncio runs in the test's loop, in any asyncio mode."""
    if importlib.util.find_spec("pytest_asyncio") is None:
        # Without pytest-asyncio, pytest_runtest_setup fails the test before the fixture runs.
        return cast(_F, pytest.fixture(fn))
    import pytest_asyncio

    return cast(_F, pytest_asyncio.fixture(fn, loop_scope="function"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``botkit_bot`` ini option."""
    parser.addini(
        "botkit_bot",
        'MODULE[:ATTR] of the bot the chat and live_bot fixtures use (e.g. "mybot:bot"); '
        "default: the `bot` the test module imports",
        default="",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Keep pytest-asyncio's "loop scope is unset" warning out of a bot author's first run.

    Our fixtures name their loop scope; the warning is about async fixtures
    of the project's own, and the project can still set the option.
    """
    if _has_asyncio(config) and not config.getini("asyncio_default_fixture_loop_scope"):
        warnings.filterwarnings(
            "ignore",
            message='The configuration option "asyncio_default_fixture_loop_scope" is unset',
            category=pytest.PytestDeprecationWarning,
        )


def _has_asyncio(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("asyncio")


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Mark unclaimed ``async def`` tests ``asyncio``, so pytest-asyncio runs them in any mode.

    This wrapper is the innermost: pytest-asyncio's own wrapper sees the mark.
    """
    result = yield
    if not inspect.iscoroutinefunction(obj) or not _has_asyncio(collector.config):
        return result
    nodes = result if isinstance(result, list) else [result]
    for node in nodes:
        if isinstance(node, pytest.Function) and not any(
            node.get_closest_marker(mark) for mark in OTHER_ASYNC_MARKS
        ):
            node.add_marker("asyncio")
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail an async test, or one using the async fixtures, clearly without pytest-asyncio."""
    if _has_asyncio(item.config) or not isinstance(item, pytest.Function):
        return
    uses_fixtures = {"chat", "live_bot"} & set(item.fixturenames)
    claimed = any(item.get_closest_marker(mark) for mark in OTHER_ASYNC_MARKS)
    if uses_fixtures or (inspect.iscoroutinefunction(item.obj) and not claimed):
        pytest.fail(MISSING_ASYNCIO, pytrace=False)


@pytest.fixture
def bot(request: pytest.FixtureRequest) -> Bot:
    """The bot under test: the test module's ``bot``, else the ``botkit_bot`` ini option."""
    found = getattr(request.module, "bot", None) if request.module is not None else None
    if isinstance(found, Bot):
        return found
    target = str(request.config.getini("botkit_bot") or "")
    if target:
        from botkit.service import BotLoadError, load_bot

        try:
            return load_bot(target)
        except BotLoadError as exc:
            pytest.fail(f"botkit_bot = {target!r}: {exc}", pytrace=False)
    pytest.fail(
        "botkit's fixtures need your bot: import it in the test module as `bot` "
        '(from mybot import bot), set botkit_bot = "mybot:bot" in your pytest '
        "configuration, or define a `bot` fixture in conftest.py",
        pytrace=False,
    )


@async_fixture
async def chat(bot: Bot) -> AsyncIterator[BotTester]:
    """A started :class:`~botkit.testing.BotTester` on the bot under test."""
    async with BotTester(bot) as tester:
        yield tester


@async_fixture
async def live_bot(bot: Bot) -> AsyncIterator[LiveBot]:
    """A :class:`~botkit.testing.LiveBot`: the bot served for real, with the provider emulator."""
    async with LiveBot(bot) as live:
        yield live
