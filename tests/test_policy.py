"""The reply policy: the session window, templates, splitting long text, opted-out users."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botkit import (
    TEXT_LIMIT,
    Bot,
    Context,
    Media,
    OptedOut,
    OutsideSessionWindow,
    ReplyPolicy,
    ReplyTooLong,
    SendMode,
    Template,
    split_text,
)
from botkit.testing import BotTester

USER = "79990000001"
COME_BACK = Template("come_back", ["Ann"])


def replying_bot(**options: Any) -> Bot:
    """A bot that replies with what the test puts in ``bot.reply_with``."""
    bot = Bot("policy", **options)
    bot.reply_with = {}  # type: ignore[attr-defined]

    @bot.text()
    async def reply(ctx: Context) -> None:
        await ctx.reply(**bot.reply_with)  # type: ignore[attr-defined]

    @bot.status()
    async def on_status(ctx: Context) -> None:
        await ctx.reply(**bot.reply_with)  # type: ignore[attr-defined]

    return bot


# -- the session window ---------------------------------------------------------------


async def test_inside_the_window_text_goes_as_text() -> None:
    bot = replying_bot()
    bot.reply_with = {"text": "hello"}  # type: ignore[attr-defined]
    async with BotTester(bot, user=USER) as chat:
        (message,) = await chat.send_text("hi")
    assert (message.mode, message.text, message.user) == (SendMode.TEXT, "hello", USER)


async def test_outside_the_window_the_template_goes_instead() -> None:
    bot = replying_bot()
    bot.reply_with = {"text": "we miss you", "template": COME_BACK}  # type: ignore[attr-defined]
    async with BotTester(bot) as chat:
        (first,) = await chat.send_text("hi")
        assert first.mode is SendMode.TEXT
        assert first.fallback == COME_BACK  # kept for a late 2312
        chat.advance(hours=25)
        outcome = await chat.send_status(first, "read")
    (late,) = outcome.replies
    assert (late.mode, late.template, late.text) == (SendMode.TEMPLATE, COME_BACK, None)


async def test_outside_the_window_without_a_template_the_reply_is_refused() -> None:
    bot = replying_bot()
    bot.reply_with = {"text": "hello"}  # type: ignore[attr-defined]
    async with BotTester(bot, user=USER) as chat:
        last_wrote = chat.clock.now()
        await chat.send_text("hi")
        chat.advance(hours=25)
        with pytest.raises(OutsideSessionWindow) as caught:
            await bot.send(USER, "are you there?")
        assert await chat.sent() == []

    message = str(caught.value)
    at = datetime.fromtimestamp(last_wrote, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"user ...{USER[-4:]} last wrote at {at}" in message
    assert USER not in message  # the full number is an attribute, not in the message
    assert "pass template=" in message
    assert caught.value.user == USER


async def test_a_user_who_never_wrote_gets_only_templates() -> None:
    bot = replying_bot()
    async with BotTester(bot) as chat:
        with pytest.raises(OutsideSessionWindow, match=r"user \.\.\.0009 has never written"):
            await bot.send("+7 999 000-00-09", "hello")
        (sent,) = await bot.send("79990000009", "hello", template=COME_BACK)
        assert sent.mode is SendMode.TEMPLATE
        assert await chat.sent() == [sent]


async def test_the_bots_default_template_is_the_fallback_for_every_reply() -> None:
    bot = replying_bot(default_template=COME_BACK)
    bot.reply_with = {"text": "hello"}  # type: ignore[attr-defined]
    async with BotTester(bot, user=USER) as chat:
        (inside,) = await chat.send_text("hi")
        assert (inside.mode, inside.fallback) == (SendMode.TEXT, COME_BACK)
        chat.advance(hours=25)
        (late,) = await bot.send(USER, "a proactive hello")
        assert (late.mode, late.template) == (SendMode.TEMPLATE, COME_BACK)
        other = Template("special")
        (chosen,) = await bot.send(USER, "hello", template=other)
        assert chosen.template == other  # the reply's own template wins


@pytest.mark.parametrize(
    ("elapsed", "mode"),
    [(3000, SendMode.TEXT), (3300, SendMode.TEXT), (3401, SendMode.TEMPLATE)],
)
async def test_the_window_closes_a_safety_margin_before_its_end(
    elapsed: float, mode: SendMode
) -> None:
    bot = replying_bot(session_window=3600, safety_margin=200, default_template=COME_BACK)
    bot.reply_with = {"text": "hello"}  # type: ignore[attr-defined]
    async with BotTester(bot, user=USER) as chat:
        await chat.send_text("hi")
        chat.advance(elapsed)
        (sent,) = await bot.send(USER, "hello")
    assert sent.mode is mode


async def test_each_new_message_reopens_the_window() -> None:
    bot = replying_bot()
    bot.reply_with = {"text": "hello"}  # type: ignore[attr-defined]
    async with BotTester(bot, user=USER) as chat:
        await chat.send_text("hi")
        chat.advance(hours=30)
        assert (await chat.send_text("back again")).texts == ["hello"]
        (sent,) = await bot.send(USER, "still open")
        assert sent.mode is SendMode.TEXT


# -- media ----------------------------------------------------------------------------


async def test_media_carries_short_text_as_its_caption_and_long_text_after_it() -> None:
    photo = Media("https://cdn.example/p.jpg", "image/jpeg")
    bot = replying_bot()
    async with BotTester(bot) as chat:
        bot.reply_with = {"text": "our pizza", "media": photo}  # type: ignore[attr-defined]
        (single,) = await chat.send_text("a")
        assert (single.mode, single.media, single.text) == (SendMode.MEDIA, photo, "our pizza")

        long_text = "A sentence about pizza. " * 60
        bot.reply_with = {"text": long_text, "media": photo}  # type: ignore[attr-defined]
        media, *texts = await chat.send_text("b")
    assert (media.mode, media.text) == (SendMode.MEDIA, None)
    assert [m.mode for m in texts] == [SendMode.TEXT, SendMode.TEXT]
    assert _content("".join(m.text or "" for m in texts)) == _content(long_text)


# -- splitting long text ------------------------------------------------------------------


async def test_a_long_reply_is_split_in_order_on_paragraph_boundaries() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 110 for i in range(3)]
    bot = replying_bot()
    bot.reply_with = {"text": "\n\n".join(p.strip() for p in paragraphs)}  # type: ignore[attr-defined]
    async with BotTester(bot) as chat:
        replies = await chat.send_text("tell me everything")
    assert replies.texts == [p.strip() for p in paragraphs]
    assert all(len(t) <= TEXT_LIMIT for t in replies.texts)


def test_split_prefers_sentences_then_words_then_characters() -> None:
    sentences = " ".join(f"Sentence number {i} is here." for i in range(60))
    pieces = split_text(sentences)
    assert len(pieces) > 1
    assert all(p.endswith(".") for p in pieces)

    words = " ".join(["word"] * 400)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in split_text(words))

    blob = "x" * 2500
    assert split_text(blob) == ["x" * 1000, "x" * 1000, "x" * 500]


def test_text_at_the_limit_is_not_split() -> None:
    text = "y" * TEXT_LIMIT
    assert split_text(text) == [text]


def _content(text: str) -> str:
    return re.sub(r"\s+", "", text)


_pieces_of_text = st.lists(
    st.one_of(
        st.text(alphabet="abcdefghij", min_size=1, max_size=30),
        st.sampled_from([" ", "  ", ". ", "! ", "\n", "\n\n", "\n\n\n", "…\t"]),
        st.text(alphabet="z", min_size=900, max_size=2500),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_pieces_of_text)
def test_split_keeps_every_piece_within_the_limit_and_the_content_in_order(text: str) -> None:
    pieces = split_text(text)
    assert _content("".join(pieces)) == _content(text)
    if len(text) <= TEXT_LIMIT:
        assert pieces == [text]
    else:
        assert all(p.strip() and len(p) <= TEXT_LIMIT for p in pieces)


@settings(max_examples=50, deadline=None)
@given(_pieces_of_text.filter(lambda t: t.strip()))
async def test_every_reply_the_policy_plans_is_sendable(text: str) -> None:
    bot = replying_bot(default_template=COME_BACK)
    bot.reply_with = {"text": text}  # type: ignore[attr-defined]
    limit = ReplyPolicy().max_text  # the default: BOTKIT_MAX_REPLY_CHARS unset
    async with BotTester(bot) as chat:
        if len(text) > limit:
            # A runaway reply is refused whole, before it is split.
            with pytest.raises(ReplyTooLong) as refused:
                await chat.send_text("hi")
            assert (refused.value.length, refused.value.limit) == (len(text), limit)
            return
        replies = await chat.send_text("hi")
    assert replies, "a non-blank reply sends something"
    assert all(m.mode is SendMode.TEXT and 0 < len(m.text or "") <= TEXT_LIMIT for m in replies)
    assert _content("".join(replies.texts)) == _content(text)
    assert [m.fallback for m in replies] == [COME_BACK] + [None] * (len(replies) - 1)


async def test_split_false_refuses_text_over_the_limit() -> None:
    bot = replying_bot()
    bot.reply_with = {"text": "z" * (TEXT_LIMIT + 1), "split": False}  # type: ignore[attr-defined]
    async with BotTester(bot) as chat:
        with pytest.raises(ValueError, match="at most 1000"):
            await chat.send_text("hi")
        assert await chat.store.outbox_size() == 0


@pytest.mark.parametrize("blank", ["", "   ", " " * 1500, "\n\n" * 600])
async def test_blank_text_is_nothing_to_send(blank: str) -> None:
    bot = replying_bot(default_template=COME_BACK)
    bot.reply_with = {"text": blank}  # type: ignore[attr-defined]
    async with BotTester(bot) as chat:
        with pytest.raises(ValueError, match="nothing to send"):
            await chat.send_text("hi")
        bot.reply_with = {"text": blank, "template": COME_BACK}  # type: ignore[attr-defined]
        (only,) = await chat.send_text("hi again")
        assert (only.mode, only.template) == (SendMode.TEMPLATE, COME_BACK)


# -- opted-out users ---------------------------------------------------------------------


async def test_an_opted_out_user_gets_nothing() -> None:
    bot = Bot("optout-policy")
    refusals: list[Any] = []

    @bot.text("stop")
    async def stop(ctx: Context) -> None:
        ctx.opt_out()

    @bot.text()
    async def chatty(ctx: Context) -> None:
        refusals.append(await ctx.reply("hello", template=COME_BACK))
        refusals.extend(ctx.refused)

    async with BotTester(bot, user=USER) as chat:
        await chat.send_text("stop")
        assert await chat.send_text("hi") == []
        with pytest.raises(OptedOut, match=rf"user \.\.\.{USER[-4:]} opted out"):
            await bot.send(USER, "news", template=COME_BACK)
        assert await chat.sent() == []
        assert await chat.store.outbox_size() == 0

    planned, refusal = refusals
    assert planned == []
    assert isinstance(refusal, OptedOut)
