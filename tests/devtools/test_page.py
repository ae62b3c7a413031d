"""The dev chat page: its API over real HTTP, its event stream, and the page in a real browser.

The browser test drives Debian's chromium through Playwright (no browser
download). Without chromium or playwright it skips locally, and fails when
``CI=true``: CI installs both, so a skip there would hide a broken setup.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from botkit import Bot, Context
from botkit.devtools import DevServer, create_dev_app
from botkit.service import serve_app
from tests.devtools import shop_bot
from tests.helpers import free_port

USER = "79031234567"
CHROMIUM = os.environ.get("BOTKIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's waits (a page element, an expectation) on a loaded 2-core
# machine; each ends as soon as its condition holds.
LOADED_MS = 30_000


@pytest.fixture
async def dev() -> AsyncIterator[tuple[DevServer, httpx.AsyncClient]]:
    """``botkit dev`` for the test shop bot, served for real, and an HTTP client to it."""
    port = free_port()
    server = create_dev_app(shop_bot.bot, port=port)
    async with (
        serve_app(server.app, port=port),
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
    ):
        yield server, http


async def events(http: httpx.AsyncClient, count: int, **headers: str) -> list[dict[str, Any]]:
    """The first ``count`` events of the page's stream (the hello included)."""
    found: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(10),
        http.stream("GET", "/_dev/api/events", headers=headers) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event["sse_id"] = line[4:]
            elif line.startswith("data: "):
                event.update(json.loads(line[6:]))
            elif line == "" and event:
                found.append(event)
                event = {}
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream ended after {found}")


# -- offline -----------------------------------------------------------------------


URL_WITH_SCHEME = re.compile(r"\b[a-z][a-z0-9+.-]*://", re.I)
REFERENCE = re.compile(
    r"""(?:src|href|action)\s*=\s*["']([^"']*)["']"""
    r"""|url\(\s*["']?([^"')]*)"""
    r"""|@import\s+["']([^"']+)"""
    r"""|(?:fetch|EventSource)\(\s*["']([^"']+)"""
)


def test_the_page_files_reference_nothing_outside_the_dev_server() -> None:
    # The page as installed: the package data botkit ships.
    files = sorted(resources.files("botkit.devtools").joinpath("static").iterdir())
    assert {f.name for f in files} == {"index.html", "chat.css", "chat.js"}
    for path in files:
        text = path.read_text()
        assert not URL_WITH_SCHEME.search(text), f"{path.name} names an absolute URL"
        for match in REFERENCE.finditer(text):
            target = next(g for g in match.groups() if g is not None)
            same_origin = target.startswith("/") and not target.startswith("//")
            assert same_origin or target == "data:,", f"{path.name} references {target!r}"


async def test_the_page_and_its_files_are_served(dev: tuple[DevServer, httpx.AsyncClient]) -> None:
    _, http = dev

    page = await http.get("/_dev")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="(/_dev/[^"]+)"', page.text)
    assert sorted(refs) == ["/_dev/static/chat.css", "/_dev/static/chat.js"]
    for ref in refs:
        assert (await http.get(ref)).status_code == 200


# -- the API -------------------------------------------------------------------------


async def test_a_message_sent_as_a_user_travels_the_webhook_and_moves_the_state(
    dev: tuple[DevServer, httpx.AsyncClient],
) -> None:
    server, http = dev

    sent = await http.post("/_dev/api/send", json={"user": "+7 903 123-45-67", "text": "hi"})
    await http.post("/_dev/api/send", json={"user": USER, "text": "2"})
    [menu, question] = await server.emulator.wait_for_messages(2)

    assert sent.status_code == 200 and sent.json()["webhookStatus"] == 200
    assert [i.incoming["text"] for i in server.emulator.incoming] == ["hi", "2"]
    assert menu.message.text == "Menu: 1) Margherita 2) Pepperoni"
    assert question.message.text == "Which size: S, M or L?"
    conversation = (await http.get(f"/_dev/api/conversation/{USER}")).json()
    assert conversation["state"] == "order:size"
    assert (conversation["flow"], conversation["flowState"]) == ("order", "size")
    assert conversation["allowed"] == ["sized", "upsized", "cancel"]
    assert conversation["data"] == {"pizza": "Pepperoni"}
    assert conversation["window"]["open"] is True
    assert conversation["window"]["closesAt"] > conversation["now"]


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (
            {"media": {"url": "https://example.com/a.jpg", "type": "image/jpeg"}},
            {"contentUrl": "https://example.com/a.jpg", "contentType": "image/jpeg"},
        ),
        (
            {"location": {"latitude": 55.75, "longitude": "37.62"}},
            {"whatsAppGeoLocation": {"latitude": 55.75, "longitude": 37.62}},
        ),
        (
            {"contact": {"name": "Ann Lee", "phone": "+7 903 555-12-34"}},
            {"whatsAppContacts": [{"contactName": [{"formattedName": "Ann Lee"}]}]},
        ),
    ],
    ids=["media", "location", "contact"],
)
async def test_media_locations_and_contact_cards_go_as_the_provider_sends_them(
    dev: tuple[DevServer, httpx.AsyncClient], body: dict[str, Any], wire: dict[str, Any]
) -> None:
    server, http = dev

    answer = await http.post("/_dev/api/send", json={"user": USER, **body})
    [reply] = await server.emulator.wait_for_messages(1)

    assert answer.json()["webhookStatus"] == 200
    incoming = server.emulator.incoming[0].incoming
    for key, value in wire.items():
        if isinstance(value, list):
            assert incoming[key][0]["contactName"][0]["formattedName"] == "Ann Lee"
        else:
            assert incoming[key] == value
    assert reply.message.text in (
        "Nice image!",
        "You are at 55.75, 37.62.",
        "Thanks for the card of Ann Lee.",
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"user": "12", "text": "hi"}, "user: "),
        ({"user": USER}, "give text, media, location or contact"),
        ({"user": USER, "media": {"url": "https://x.test/a"}}, "media needs url and type"),
        ({"user": USER, "location": {"latitude": 91, "longitude": 0}}, "latitude is -90..90"),
    ],
)
async def test_what_cannot_be_sent_is_refused_with_the_reason(
    dev: tuple[DevServer, httpx.AsyncClient], body: dict[str, Any], error: str
) -> None:
    server, http = dev

    answer = await http.post("/_dev/api/send", json=body)

    assert answer.status_code == 422 and answer.json()["error"].startswith(error)
    assert server.emulator.incoming == []


async def test_after_a_clock_jump_the_bot_writing_first_goes_as_its_default_template(
    dev: tuple[DevServer, httpx.AsyncClient],
) -> None:
    server, http = dev
    await http.post("/_dev/api/send", json={"user": USER, "text": "hi"})
    await server.emulator.wait_for_messages(1)

    jumped = await http.post("/_dev/api/clock", json={"hours": 25})
    closed = (await http.get(f"/_dev/api/conversation/{USER}")).json()
    sent = await http.post("/_dev/api/bot-send", json={"user": USER, "text": "Your pizza!"})
    [_, template] = await server.emulator.wait_for_messages(2)

    assert jumped.json()["offset"] == 25 * 3600
    assert closed["window"]["open"] is False
    assert sent.status_code == 200 and sent.json()["queued"][0]["mode"] == "template"
    assert template.received["templateId"] == "come_back"
    assert template.received["templateParams"] == {"1": "friend"}
    assert "text" not in template.received


async def test_a_bot_without_a_template_is_refused_outside_the_window() -> None:
    plain = Bot("plain")

    @plain.text()
    async def echo(ctx: Context) -> None:
        await ctx.reply("ok")

    port = free_port()
    server = create_dev_app(plain, port=port)
    async with serve_app(server.app, port=port), httpx.AsyncClient(base_url=server.base_url) as h:
        await h.post("/_dev/api/send", json={"user": USER, "text": "hi"})
        await h.post("/_dev/api/clock", json={"hours": 25})

        refused = await h.post("/_dev/api/bot-send", json={"user": USER, "text": "late"})
        with_template = await h.post(
            "/_dev/api/bot-send",
            json={"user": USER, "text": "late", "template": {"id": "later", "params": ["x"]}},
        )
        feed = (await h.get("/_dev/api/feed")).json()
        # (what is still in the outbox at shutdown would wait for a provider that has gone)
        await server.emulator.wait_for_messages(2)

    assert refused.status_code == 409
    assert refused.json()["reason"] == "outside_session_window"
    assert "OutsideSessionWindow" in refused.json()["error"]
    assert with_template.json()["queued"][0]["template"]["id"] == "later"
    assert [e["reason"] for e in feed if e["kind"] == "refused"] == ["outside_session_window"]


# -- the event stream ------------------------------------------------------------------


async def test_the_stream_shows_the_conversation_in_order(
    dev: tuple[DevServer, httpx.AsyncClient],
) -> None:
    server, http = dev
    await http.post("/_dev/api/send", json={"user": USER, "text": "hi"})
    messages = server.emulator.messages
    await server.emulator.wait_until(lambda: len(messages) == 1 and len(messages[0].statuses) == 3)

    stream = await events(http, 8)

    hello, *entries = stream
    assert hello["kind"] == "hello" and hello["reset"] is False
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "user" and entries[0]["payload"] == {"from": USER, "text": "hi"}
    assert kinds.count("turn") == 1 and kinds.count("delivered") == 1
    [turn] = [e for e in entries if e["kind"] == "turn"]
    assert (turn["state"], turn["handler"]) == ("order:menu", "start")
    [message] = [e for e in entries if e["kind"] == "message"]
    assert message["user"] == USER and message["message"]["text"].startswith("Menu:")
    statuses = [e["status"] for e in entries if e["kind"] == "status"]
    assert statuses == ["SENT", "DELIVERED", "READ"]
    assert {e["user"] for e in entries} == {USER}
    ids = [int(e["sse_id"].split(":")[1]) for e in entries]
    assert ids == sorted(ids) == [e["id"] for e in entries]


async def test_a_page_resumes_where_it_left_and_starts_over_after_a_restart(
    dev: tuple[DevServer, httpx.AsyncClient],
) -> None:
    _, http = dev
    await http.post("/_dev/api/clock", json={"hours": 1})
    await http.post("/_dev/api/clock", json={"hours": 2})
    [_, first, second] = await events(http, 3)

    [hello, resumed] = await events(http, 2, **{"Last-Event-ID": first["sse_id"]})
    [restarted, *replayed] = await events(http, 3, **{"Last-Event-ID": "0ther-feed:1"})

    assert (first["hours"], second["hours"]) == (1, 2)
    assert hello["reset"] is False and resumed["id"] == second["id"]
    assert restarted["reset"] is True and [e["id"] for e in replayed] == [1, 2]


async def test_an_open_stream_does_not_hold_up_shutdown() -> None:
    port = free_port()
    server = create_dev_app(shop_bot.bot, port=port)
    async with serve_app(server.app, port=port):
        http = httpx.AsyncClient(base_url=server.base_url)
        opened = asyncio.Event()

        async def listen() -> None:
            async with http.stream("GET", "/_dev/api/events") as response:
                opened.set()
                async for _ in response.aiter_lines():
                    pass

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(opened.wait(), 5)
        started = time.monotonic()
    stopped_after = time.monotonic() - started
    await asyncio.wait_for(listener, 5)  # the stream ended cleanly: no error
    await http.aclose()

    # uvicorn would wait 5 s for a stream that does not notice the shutdown.
    assert stopped_after < 2.0


# -- in a real browser -------------------------------------------------------------------


def _browser_or_skip() -> Any:
    """Playwright's async API, or skip (fail when CI=true) when it or chromium is missing."""
    problem = None
    try:
        from playwright import async_api
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        problem = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI=true, where the browser test must run", pytrace=False)
        pytest.skip(problem)
    return async_api


@pytest.mark.browser
async def test_the_chat_page_in_a_browser(dev: tuple[DevServer, httpx.AsyncClient]) -> None:
    api = _browser_or_skip()
    expect = api.expect
    server, _ = dev

    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(LOADED_MS)
            expect.set_options(timeout=LOADED_MS)
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            await page.goto(f"{server.base_url}/_dev")
            await expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
            await expect(page.locator("#bot-name")).to_have_text("bot: shop")

            # Pick a number, say hi: the bot answers and the user enters the flow.
            await page.fill("#number", "+7 903 123-45-67")
            await page.click("#open-chat")
            await expect(page.locator("#who-number")).to_have_text(f"+{USER}")
            await page.fill("#text", "hi")
            await page.press("#text", "Enter")
            await expect(page.locator(".msg.mine").last).to_contain_text("hi")
            menu = page.locator(".msg.theirs", has_text="Menu: 1) Margherita 2) Pepperoni")
            await expect(menu).to_be_visible()
            await expect(page.locator(".flow-state")).to_have_text("menu")

            # Answer: the state moves on, in the chat and in the side panel.
            await page.fill("#text", "1")
            await page.press("#text", "Enter")
            await expect(page.locator(".msg.theirs", has_text="Which size")).to_be_visible()
            await expect(page.locator(".note.state").last).to_have_text("flow order: menu → size")
            await expect(page.locator(".flow-state")).to_have_text("size")
            await expect(page.locator(".states .current")).to_have_text("size")
            await expect(page.locator("#who-state")).to_have_text("flow order · size")
            await expect(page.locator("#data")).to_contain_text('"pizza": "Margherita"')
            await expect(page.locator("#window")).to_have_attribute("data-open", "true")
            # Status callbacks came back: the first reply shows as read.
            await expect(menu.locator(".ticks")).to_have_attribute("data-status", "read")

            # Jump the clock past the window: the panel says it closed.
            await page.click("#jump-25")
            await expect(page.locator(".note.clock")).to_contain_text("moved 25 h forward")
            await expect(page.locator("#window")).to_have_attribute("data-open", "false")
            await expect(page.locator("#window")).to_contain_text("template come_back")

            # The bot writes first: outside the window that is its default template.
            await page.fill("#bot-send-text", "Your pizza is ready")
            await page.click("#bot-send")
            template = page.locator(".msg.template")
            await expect(template).to_contain_text("come_back · 1: friend")
            await template.locator(".json-toggle").click()
            await expect(template.locator("pre.json")).to_contain_text('"templateId": "come_back"')
            newest = page.locator("#provider-log li").first
            await expect(newest).to_contain_text('"templateId": "come_back"')
            await expect(newest.locator(".chip.status-read")).to_have_text("read")
            await expect(newest).not_to_contain_text("Your pizza is ready")

            # Media, a location and a contact card from the attach forms.
            await page.click("[data-attach=location-form]")
            await page.click("#location-form button[type=submit]")
            await expect(page.locator(".msg.mine .place").last).to_contain_text("55.7539")
            await expect(page.locator(".msg.theirs", has_text="You are at 55.7539")).to_be_visible()
        finally:
            await browser.close()

    assert errors == []
    assert all(url.startswith(server.base_url) for url in requests), requests
    sent = [m.received for m in server.emulator.messages]
    assert any(m.get("templateId") == "come_back" for m in sent)


LAYOUT = """() => {
    const box = (selector) => {
        const r = document.querySelector(selector).getBoundingClientRect();
        return {x: r.x, y: r.y + window.scrollY, w: r.width, h: r.height};
    };
    return {
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        chats: box(".chats"), chat: box(".chat"), panel: box(".panel"),
        messages: box("#messages"), text: box("#text"), send: box("#send"),
        number: box("#number"),
    };
}"""


@pytest.mark.browser
async def test_the_chat_page_fits_a_phone_a_tablet_and_a_wide_screen(
    dev: tuple[DevServer, httpx.AsyncClient], tmp_path: Path
) -> None:
    api = _browser_or_skip()
    expect = api.expect
    server, _ = dev
    # BOTKIT_TEST_SCREENSHOTS=DIR keeps the screenshots, to look at them.
    shots = Path(os.environ.get("BOTKIT_TEST_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    layouts: dict[int, dict[str, Any]] = {}

    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in (360, 800, 1280):
                page = await browser.new_page(viewport={"width": width, "height": 800})
                page.set_default_timeout(LOADED_MS)
                expect.set_options(timeout=LOADED_MS)
                await page.goto(f"{server.base_url}/_dev")
                await page.fill("#number", f"+7 903 000-00-{width % 100:02d}")
                await page.click("#open-chat")
                # Usable at this width: type, send, read the answer.
                await page.fill("#text", "hi")
                await page.click("#send")
                await expect(page.locator(".msg.theirs", has_text="Menu: 1)")).to_be_visible()
                await expect(page.locator("#text")).to_be_visible()
                await expect(page.locator("#send")).to_be_in_viewport()
                layouts[width] = await page.evaluate(LAYOUT)
                await page.screenshot(path=str(shots / f"dev-page-{width}.png"), full_page=True)
                await page.close()
        finally:
            await browser.close()

    for width, layout in layouts.items():
        assert layout["scrollWidth"] <= layout["clientWidth"] == width, f"{width}px overflows"
        for part in ("chats", "chat", "panel", "text", "send", "number"):
            box = layout[part]
            assert box["x"] >= 0 and box["x"] + box["w"] <= width + 0.5, f"{part} at {width}px"
        assert layout["text"]["w"] >= 150, f"the message input at {width}px is too narrow"
        assert layout["messages"]["h"] >= 300, f"no room for the conversation at {width}px"

    wide, tablet, phone = layouts[1280], layouts[800], layouts[360]
    # Wide: the chat list, the conversation and the details side by side.
    assert wide["chats"]["x"] < wide["chat"]["x"] < wide["panel"]["x"]
    assert wide["panel"]["y"] == wide["chat"]["y"]
    # Tablet: chat list and conversation side by side, the details below them.
    assert tablet["chats"]["x"] < tablet["chat"]["x"]
    assert tablet["panel"]["y"] >= tablet["chat"]["y"] + tablet["chat"]["h"] - 1
    assert tablet["panel"]["w"] == 800
    # Phone: one column, everything full width: numbers, conversation, details.
    for part in ("chats", "chat", "panel"):
        assert (phone[part]["x"], phone[part]["w"]) == (0, 360), part
    assert phone["chats"]["y"] < phone["chat"]["y"] < phone["panel"]["y"]
    assert phone["chat"]["h"] >= 400  # the conversation takes the screen's height


async def test_dev_mode_downloads_media_a_developer_serves_on_this_machine() -> None:
    photo = b"\xff\xd8local photo"
    files = Starlette(routes=[Route("/a.jpg", lambda _: Response(photo, media_type="image/jpeg"))])
    got: list[bytes | Path] = []
    bot = Bot("downloads")

    @bot.media()
    async def download(ctx: Context) -> None:
        got.append(await ctx.download_media())
        await ctx.reply("got it")

    port = free_port()
    server = create_dev_app(bot, port=port)
    async with (
        serve_app(files) as files_url,
        serve_app(server.app, port=port),
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        media = {"url": f"{files_url}/a.jpg", "type": "image/jpeg"}
        answer = await http.post("/_dev/api/send", json={"user": USER, "media": media})
        await server.emulator.wait_for_messages(1)
    assert answer.json()["webhookStatus"] == 200
    assert got == [photo]  # `botkit run` would refuse this loopback address


async def test_the_page_shows_pending_timers_and_a_clock_jump_fires_them() -> None:
    from bots import reminder

    port = free_port()
    server = create_dev_app(reminder.bot, port=port)
    async with (
        serve_app(server.app, port=port),
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
    ):
        await http.post("/_dev/api/send", json={"user": USER, "text": "remind me in 5 minutes tea"})
        await server.emulator.wait_for_messages(1)
        pending = (await http.get(f"/_dev/api/conversation/{USER}")).json()["timers"]
        assert [(t["name"], t["data"]) for t in pending] == [("reminder-1", "tea")]

        await http.post("/_dev/api/clock", json={"hours": 0.1})
        [_, reminder_sent] = await server.emulator.wait_for_messages(2)
        assert reminder_sent.received["text"] == "reminder: tea"
        assert (await http.get(f"/_dev/api/conversation/{USER}")).json()["timers"] == []


async def test_a_campaign_started_in_botkit_dev_shows_its_live_totals_on_the_page(
    dev: tuple[DevServer, httpx.AsyncClient],
) -> None:
    _, http = dev
    page = (await http.get("/_dev")).text
    assert 'id="campaigns-card"' in page
    assert (await http.get("/_dev/api/campaigns")).json() == []
    body = {
        "name": "welcome",
        "template": {"id": "welcome"},
        "audience": [{"phone": "79030000001"}, {"phone": "79030000002"}, {"phone": "7"}],
        "rate": 0,
    }
    auth = {"Authorization": "Bearer dev"}  # botkit dev's send API token
    created = await http.post("/api/campaigns", json=body, headers=auth)
    assert created.status_code == 201, created.text

    async def read() -> bool:
        [campaign] = (await http.get("/_dev/api/campaigns")).json()
        return bool(campaign["read"] == 2)

    deadline = time.monotonic() + 15
    while not await read():
        assert time.monotonic() < deadline, "the campaign's messages were not read"
        await asyncio.sleep(0.05)
    [campaign] = (await http.get("/_dev/api/campaigns")).json()
    assert (campaign["name"], campaign["state"], campaign["sent"]) == ("welcome", "done", 2)
    assert campaign["skipped"] == {"invalid": 1}
