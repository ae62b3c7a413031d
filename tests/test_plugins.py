"""Plugins found through a real entry point of an installed distribution.

``tests/fixtures/plugin_site`` is a site directory holding one distribution,
``botkit-test-plugin``, with ``.dist-info`` metadata declaring three entry
points in the ``botkit.plugins`` group. Putting that directory on
``sys.path`` is all pip's install would do for ``importlib.metadata``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest

from botkit import Bot, Context, DefinitionError, UnknownPlugin
from botkit.testing import BotTester

SITE = Path(__file__).parent / "fixtures" / "plugin_site"


@pytest.fixture
def plugin_package(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The test plugin distribution, installed for this test only."""
    monkeypatch.syspath_prepend(str(SITE))
    monkeypatch.delenv("BOTKIT_PLUGINS", raising=False)
    import botkit_test_plugin

    botkit_test_plugin.EVENTS.clear()
    yield botkit_test_plugin
    sys.modules.pop("botkit_test_plugin", None)


def echo_bot(**options: object) -> Bot:
    bot = Bot("with-plugins", **options)  # type: ignore[arg-type]

    @bot.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply(f"echo: {ctx.text}")

    return bot


def test_the_test_distribution_is_seen_as_installed(plugin_package: ModuleType) -> None:
    found = {ep.name: ep.value for ep in entry_points(group="botkit.plugins")}
    assert found["hello"] == "botkit_test_plugin:plugin"
    assert found["greeter"] == "botkit_test_plugin:greeter"


async def test_plugin_handlers_run_before_the_bots_own(plugin_package: ModuleType) -> None:
    events = plugin_package.EVENTS
    async with BotTester(echo_bot(plugins=["hello"])) as chat:
        assert (await chat.send_text("hi")).texts == ["echo: hi"]
        # The plugin saw the message first, then passed it on with SkipHandler.
        assert events == ["hello up", "hello middleware", "hello saw text"]
        events.clear()
        assert (await chat.send_text("stop")).texts == ["hello-plugin: you are unsubscribed"]
        assert (await chat.conversation()).opted_out
        assert events == ["hello middleware"]
    assert events[-1] == "hello down"


async def test_a_plugin_that_is_a_plain_router_runs_its_own_hooks(
    plugin_package: ModuleType,
) -> None:
    events = plugin_package.EVENTS
    async with BotTester(echo_bot(plugins=["greeter"])) as chat:
        assert events == ["greeter up"]
        assert (await chat.send_text("greet")).texts == ["greeter-plugin: hi!"]
        assert (await chat.send_text("other")).texts == ["echo: other"]
    assert events == ["greeter up", "greeter down"]


async def test_plugins_can_be_enabled_with_botkit_plugins(
    plugin_package: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTKIT_PLUGINS", " greeter , hello,")
    async with BotTester(echo_bot()) as chat:
        assert (await chat.send_text("greet")).texts == ["greeter-plugin: hi!"]
        assert (await chat.send_text("stop")).texts == ["hello-plugin: you are unsubscribed"]
    assert sorted(plugin_package.EVENTS).count("hello up") == 1


async def test_a_plugin_named_twice_is_loaded_once(
    plugin_package: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTKIT_PLUGINS", "hello")
    async with BotTester(echo_bot(plugins=["hello"]), plugins=["hello"]) as chat:
        await chat.send_text("hi")
    assert plugin_package.EVENTS.count("hello up") == 1
    assert plugin_package.EVENTS.count("hello saw text") == 1


def test_an_unknown_plugin_fails_at_start_up_listing_the_installed_ones(
    plugin_package: ModuleType,
) -> None:
    with pytest.raises(UnknownPlugin, match="no botkit plugin named 'helo'") as caught:
        BotTester(echo_bot(plugins=["helo"]))
    installed = str(caught.value).split("installed: ")[1]
    assert "broken, greeter, hello" in installed


def test_an_unknown_plugin_in_botkit_plugins_fails_too(
    plugin_package: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTKIT_PLUGINS", "hello,nope")
    with pytest.raises(UnknownPlugin, match="'nope'"):
        BotTester(echo_bot())


def test_an_entry_point_that_gives_no_router_is_refused(plugin_package: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"plugin 'broken'.*must be a botkit\.Plugin"):
        BotTester(echo_bot(plugins=["broken"]))


def test_plugins_are_a_list_of_names() -> None:
    with pytest.raises(DefinitionError, match="list of names"):
        Bot("p", plugins="hello")


async def test_one_bot_with_and_without_a_plugin_side_by_side(
    plugin_package: ModuleType,
) -> None:
    bot = echo_bot()
    with_plugin = BotTester(bot, plugins=["hello", "greeter"], user="71")
    without = BotTester(bot, user="72")  # compiles the same handlers in another order
    async with with_plugin, without:
        assert (await with_plugin.send_text("greet")).texts == ["greeter-plugin: hi!"]
        assert (await without.send_text("stop")).texts == ["echo: stop"]
        assert (await with_plugin.send_text("hi")).texts == ["echo: hi"]
        assert (await with_plugin.send_text("stop")).texts == ["hello-plugin: you are unsubscribed"]
