"""Events: what a handler receives for each kind of message, and for a delivery status."""

from __future__ import annotations

import dataclasses

import pytest

from botkit import (
    Bot,
    Contact,
    ContactsMessage,
    Context,
    EventKind,
    LocationMessage,
    Media,
    MediaKind,
    MediaMessage,
    StatusUpdate,
    TextMessage,
)
from botkit.testing import BotTester


@pytest.mark.parametrize(
    ("mime", "kind"),
    [
        ("image/jpeg", MediaKind.IMAGE),
        ("IMAGE/PNG", MediaKind.IMAGE),
        ("image/webp", MediaKind.STICKER),
        ("video/mp4", MediaKind.VIDEO),
        ("audio/ogg; codecs=opus", MediaKind.VOICE),
        ("audio/ogg", MediaKind.AUDIO),
        ("audio/mpeg", MediaKind.AUDIO),
        ("audio/aac", MediaKind.AUDIO),
        ("application/pdf", MediaKind.DOCUMENT),
        ("application/vnd.ms-excel", MediaKind.DOCUMENT),
        ("", MediaKind.DOCUMENT),
    ],
)
def test_media_kind_is_derived_from_the_mime_type(mime: str, kind: MediaKind) -> None:
    assert Media("https://cdn.example/f", mime).kind is kind


def test_events_are_immutable() -> None:
    message = TextMessage(id="1", user="79990000001", text="hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]


def test_status_id_names_one_status_change() -> None:
    status = StatusUpdate(message_id="m-1", status="read", user="79990000001")
    assert status.id == "m-1:read"
    assert status.kind is EventKind.STATUS


async def test_each_message_kind_reaches_the_handler_with_its_fields() -> None:
    bot = Bot("events")
    seen: list[object] = []

    @bot.message()
    async def record(ctx: Context) -> None:
        seen.append(ctx.message)

    async with BotTester(bot, user="79990000001") as chat:
        await chat.send_text("hello", profile_name="Ann")
        await chat.send_media(
            "https://cdn.example/menu.pdf", "application/pdf", name="menu.pdf", caption="menu"
        )
        await chat.send_contacts(
            Contact(name="Bob Smith", phones=("79990000002", "79990000003")), ("Eve", "7111")
        )
        await chat.send_location(55.75, 37.61, address="Red Square", name="Moscow")
        now = chat.clock.now()

    text, media, contacts, location = seen
    assert isinstance(text, TextMessage)
    assert (text.kind, text.text, text.user, text.profile_name) == (
        EventKind.TEXT,
        "hello",
        "79990000001",
        "Ann",
    )
    assert text.timestamp == now

    assert isinstance(media, MediaMessage)
    assert media.kind is EventKind.MEDIA
    assert media.media == Media("https://cdn.example/menu.pdf", "application/pdf", "menu.pdf")
    assert media.media.kind is MediaKind.DOCUMENT
    assert media.caption == "menu"

    assert isinstance(contacts, ContactsMessage)
    assert [c.name for c in contacts.contacts] == ["Bob Smith", "Eve"]
    assert [c.phones for c in contacts.contacts] == [("79990000002", "79990000003"), ("7111",)]

    assert isinstance(location, LocationMessage)
    assert (location.latitude, location.longitude) == (55.75, 37.61)
    assert (location.address, location.name) == ("Red Square", "Moscow")


async def test_raw_payload_is_kept_but_not_compared() -> None:
    a = TextMessage(id="1", user="7", text="x", raw={"incomingMessageId": "1"})
    b = TextMessage(id="1", user="7", text="x")
    assert a == b
    assert a.raw["incomingMessageId"] == "1"

    bot = Bot("raw")
    raws: list[object] = []

    @bot.text()
    async def record(ctx: Context) -> None:
        raws.append(dict(ctx.message.raw))

    async with BotTester(bot) as chat:
        await chat.send_text("x", raw={"channel": "WHATSAPP"})
    assert raws == [{"channel": "WHATSAPP"}]


async def test_status_event_carries_message_id_status_code_and_user() -> None:
    bot = Bot("statuses")
    seen: list[StatusUpdate] = []

    @bot.text()
    async def answer(ctx: Context) -> None:
        await ctx.reply("ok")

    @bot.status()
    async def record(ctx: Context) -> None:
        seen.append(ctx.status)

    async with BotTester(bot, user="79990000001") as chat:
        (reply,) = await chat.send_text("hi")
        outcome = await chat.send_status(
            reply, "UNDELIVERED", error_code=2305, message_id="provider-1"
        )

    assert outcome.outcome == "handled"
    (status,) = seen
    assert status.message_id == "provider-1"
    assert status.status == "undelivered"
    assert status.error_code == 2305
    assert status.user == "79990000001"
    assert status.reference == reply.ref


async def test_message_and_status_accessors_refuse_the_wrong_kind() -> None:
    bot = Bot("accessors")
    errors: list[str] = []

    @bot.text()
    async def on_text(ctx: Context) -> None:
        try:
            _ = ctx.status
        except TypeError as exc:
            errors.append(str(exc))
        await ctx.reply("ok")

    @bot.status()
    async def on_status(ctx: Context) -> None:
        try:
            _ = ctx.message
        except TypeError as exc:
            errors.append(str(exc))

    async with BotTester(bot) as chat:
        (reply,) = await chat.send_text("hi")
        await chat.send_status(reply, "read")

    assert len(errors) == 2
    assert "use ctx.message" in errors[0]
    assert "use ctx.status" in errors[1]
