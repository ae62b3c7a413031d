"""One error family: every error botkit raises derives from BotkitError, caught by name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import botkit
from botkit import Bot, BotkitError, Context
from botkit.testing import BotTester

# Control flow, not an error: a handler raises it to pass the event on.
NOT_ERRORS = {botkit.SkipHandler}


def botkit_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of botkit (the emulator's own aside)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(botkit.__path__, "botkit."):
        if info.name == "botkit.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return [found[k] for k in sorted(found)]


@pytest.mark.parametrize("error", botkit_exceptions(), ids=lambda e: e.__qualname__)
def test_every_botkit_error_derives_from_botkit_error(error: type[BaseException]) -> None:
    if error in NOT_ERRORS:
        assert not issubclass(error, BotkitError)
        return
    assert issubclass(error, BotkitError), f"{error.__module__}.{error.__qualname__}"


def test_errors_keep_the_builtin_base_they_had() -> None:
    # Existing `except TypeError` / `except ValueError` clauses keep catching them.
    assert issubclass(botkit.DefinitionError, TypeError)
    assert issubclass(botkit.InvalidPhoneNumber, ValueError)
    assert issubclass(botkit.UnknownPlugin, LookupError)
    assert issubclass(botkit.DuplicateMessage, botkit.StorageError)


def test_every_error_a_handler_can_meet_is_exported() -> None:
    # Error handlers receive these; handlers meet them from ctx.reply, bot.send, flows, media.
    for name in (
        "BotNotRunning",
        "DeliveryRefused",
        "DeliveryRejected",
        "FlowError",
        "InvalidPhoneNumber",
        "InvalidTrigger",
        "LockLost",
        "MediaError",
        "NotInFlow",
        "NotOnWhatsApp",
        "OptedOut",
        "OutsideSessionWindow",
        "ReplyTooLong",
        "StorageError",
        "StorageUnavailable",
        "UserBusy",
    ):
        assert name in botkit.__all__
        assert issubclass(getattr(botkit, name), BotkitError)


async def test_one_except_clause_catches_what_botkit_raises_in_a_handler() -> None:
    bot = Bot("errors")
    caught: list[str] = []

    @bot.text()
    async def send_to_nobody(ctx: Context) -> None:
        try:
            await ctx.bot.send("not a number", "hello")
        except BotkitError as exc:
            caught.append(type(exc).__name__)
        try:
            await ctx.flow.trigger("next")
        except BotkitError as exc:
            caught.append(type(exc).__name__)

    async with BotTester(bot) as chat:
        await chat.send_text("hi")
    assert caught == ["InvalidPhoneNumber", "NotInFlow"]
