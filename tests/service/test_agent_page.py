"""The agent inbox page (/agent): its files, its login, and the page in headless Chromium
(Debian's, through Playwright, as the dev page's browser test does)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import httpx
import pytest

from botkit.testing import LiveBot
from bots.pizza import CONNECTING, bot
from tests.devtools.test_page import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LOADED_MS,
    REFERENCE,
    URL_WITH_SCHEME,
    _browser_or_skip,
)
from tests.service._harness import wait_for
from tests.service.test_app import FAST

TOKEN = "agent-page-token-4Rk8sWq1Zx"
ANNA = "79035556677"


@pytest.fixture
async def live() -> AsyncIterator[LiveBot]:
    async with LiveBot(bot, sender_config=FAST, agent_token=TOKEN) as served:
        yield served


def test_the_page_files_reference_nothing_outside_the_server() -> None:
    # The page as installed: the package data botkit ships.
    files = sorted(resources.files("botkit.service").joinpath("agent_static").iterdir())
    assert {f.name for f in files} == {"index.html", "agent.css", "agent.js"}
    for path in files:
        text = path.read_text()
        assert not URL_WITH_SCHEME.search(text), f"{path.name} names an absolute URL"
        for match in REFERENCE.finditer(text):
            target = next(g for g in match.groups() if g is not None)
            same_origin = target.startswith("/") and not target.startswith("//")
            assert same_origin or target == "data:,", f"{path.name} references {target!r}"


async def test_the_login_sets_an_httponly_strict_cookie_that_opens_the_api(live: LiveBot) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        page = await http.get("/agent")
        assert page.status_code == 200 and "login" in page.text
        assert (await http.get("/api/handoffs")).status_code == 401
        wrong = await http.post("/agent/login", data={"agent": "alice", "token": "nope"})
        assert (wrong.status_code, wrong.headers["location"]) == (303, "/agent?error=1")
        answer = await http.post("/agent/login", data={"agent": "alice", "token": TOKEN})
        assert answer.status_code == 303
        session = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("botkit_agent=")
        )
        assert "HttpOnly" in session and "SameSite=strict" in session
        assert TOKEN not in session
        assert (await http.get("/api/handoffs")).status_code == 200
        # With the cookie, a state-changing call must be JSON (a cross-site form cannot be).
        form = await http.post(f"/api/conversations/{ANNA}/handoff", data={"reason": "x"})
        assert form.status_code == 415


async def test_without_an_agent_token_there_is_no_page() -> None:
    async with (
        LiveBot(bot, sender_config=FAST) as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        assert (await http.get("/agent")).status_code == 404
        assert (await http.get("/api/handoffs")).status_code == 404


def texts_to(live: LiveBot, user: str) -> list[str]:
    return [m.received.get("text", "") for m in live.emulator.messages if m.message.to == user]


@pytest.mark.browser
async def test_an_agent_logs_in_replies_and_releases_in_a_browser(live: LiveBot) -> None:
    api = _browser_or_skip()
    expect = api.expect
    for text in ("hi", "1", "agent", "is anyone there?"):
        await live.say(ANNA, text)
    await live.replies(3)
    assert texts_to(live, ANNA)[-1] == CONNECTING

    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            page.set_default_timeout(LOADED_MS)
            expect.set_options(timeout=LOADED_MS)
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            await page.goto(f"{live.url}/agent")
            await expect(page.locator("#login")).to_be_visible()
            await page.fill("#login-name", "alice")
            await page.fill("#login-token", "wrong-token")
            await page.click("#login-submit")
            await expect(page.locator("#login-error")).to_be_visible()
            await page.fill("#login-name", "alice")
            await page.fill("#login-token", TOKEN)
            await page.click("#login-submit")
            await expect(page.locator("#app")).to_be_visible()
            await expect(page.locator("#me")).to_have_text("alice")
            await expect(page.locator("#live")).to_have_attribute("data-state", "live")
            cookies = {c["name"]: c for c in await context.cookies()}
            assert cookies["botkit_agent"]["httpOnly"] is True
            assert cookies["botkit_agent"]["sameSite"] == "Strict"

            # The waiting conversation, its transcript and the window.
            item = page.locator(f".handoff[data-user='{ANNA}']")
            await expect(item).to_contain_text("waiting")
            await expect(item).to_contain_text("is anyone there?")
            await item.click()
            transcript = page.locator("#transcript")
            await expect(transcript.locator(".msg.in").last).to_have_text(
                re.compile("is anyone there?")
            )
            await expect(transcript.locator(".note.handoff")).to_contain_text("handoff started")
            await expect(page.locator("#window")).to_have_attribute("data-open", "true")
            await expect(page.locator("#window")).to_contain_text("closes in")

            # Claim, reply: the reply reaches the provider, with its ticks.
            await page.click("#claim")
            await expect(page.locator("#who-status")).to_contain_text("taken by alice")
            await page.fill("#reply-text", "Hi, this is Alice. How can I help?")
            await page.press("#reply-text", "Enter")
            mine = transcript.locator(".msg.out.agent", has_text="this is Alice")
            await expect(mine).to_be_visible()

            def reached() -> bool:
                return "Hi, this is Alice. How can I help?" in texts_to(live, ANNA)

            await wait_for(reached, within=60, what="the agent's reply at the emulator")
            # Ticks come with the page's 5 s refresh (statuses are no notices): allow two.
            await expect(mine.locator(".ticks")).to_have_attribute(
                "data-status", "read", timeout=LOADED_MS
            )

            # The user writes while handed off: it shows up live, the bot stays quiet.
            await live.say(ANNA, "a large one please")
            await expect(transcript.locator(".msg.in").last).to_have_text(
                re.compile("a large one please")
            )

            # Release: the bot is back and answers again.
            await page.click("#release")
            await expect(page.locator("#who-status")).to_have_text("with the bot")
            await expect(
                transcript.locator(".msg.out", has_text="You are back with the pizza bot.")
            ).to_be_visible()
            await live.say(ANNA, "L")
            await expect(
                transcript.locator(".msg.out", has_text="What is the delivery address?")
            ).to_be_visible()
            await expect(page.locator(f".handoff[data-user='{ANNA}']")).to_have_count(0)
        finally:
            await browser.close()

    assert errors == []
    assert all(url.startswith(live.url) for url in requests), requests
    texts = texts_to(live, ANNA)
    assert texts[-2].startswith("You are back with the pizza bot.")
    assert texts[-1].startswith("What is the delivery address?")


LAYOUT = """() => {
    const box = (selector) => {
        const r = document.querySelector(selector).getBoundingClientRect();
        return {x: r.x, w: r.width, h: r.height};
    };
    return {
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        transcript: box("#transcript"), text: box("#reply-text"), send: box("#reply-send"),
        release: box("#release"),
    };
}"""


@pytest.mark.browser
async def test_the_inbox_fits_a_phone_a_tablet_and_a_wide_screen(live: LiveBot) -> None:
    api = _browser_or_skip()
    expect = api.expect
    await live.say(ANNA, "human")
    await live.replies(1)
    layouts: dict[int, dict[str, Any]] = {}
    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in (360, 800, 1280):
                context = await browser.new_context(viewport={"width": width, "height": 740})
                page = await context.new_page()
                page.set_default_timeout(LOADED_MS)
                expect.set_options(timeout=LOADED_MS)
                await page.goto(f"{live.url}/agent")
                await page.fill("#login-name", "alice")
                await page.fill("#login-token", TOKEN)
                await page.click("#login-submit")
                await page.locator(f".handoff[data-user='{ANNA}']").click()
                await expect(page.locator("#reply-send")).to_be_in_viewport()
                await expect(page.locator("#release")).to_be_in_viewport()
                layouts[width] = await page.evaluate(LAYOUT)
                await context.close()
        finally:
            await browser.close()
    for width, layout in layouts.items():
        assert layout["scrollWidth"] <= layout["clientWidth"] == width, f"{width}px overflows"
        for part in ("transcript", "text", "send", "release"):
            box = layout[part]
            assert box["x"] >= 0 and box["x"] + box["w"] <= width + 0.5, f"{part} at {width}px"
        assert layout["text"]["w"] >= 150, f"the reply box at {width}px is too narrow"
        assert layout["transcript"]["h"] >= 250, f"no room for the transcript at {width}px"


async def test_the_event_stream_tells_a_handoff_and_does_not_hold_up_shutdown() -> None:
    import asyncio
    import time

    headers = {"Authorization": f"Bearer {TOKEN}"}
    events: list[str] = []
    opened = asyncio.Event()
    async with LiveBot(bot, sender_config=FAST, agent_token=TOKEN) as served:
        http = httpx.AsyncClient(base_url=served.url, timeout=10)

        async def listen() -> None:
            async with http.stream("GET", "/api/agent/events", headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                opened.set()
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(opened.wait(), 5)
        await served.say(ANNA, "agent")
        await served.say(ANNA, "hello?")

        def told() -> bool:
            return events == ["handoff.started", "message.received"]

        await wait_for(told, what="the two notices on the event stream")
        started = time.monotonic()
    stopped_after = time.monotonic() - started
    await asyncio.wait_for(listener, 5)  # the stream ended cleanly
    await http.aclose()
    assert stopped_after < 3.0, f"an open event stream held the shutdown {stopped_after:.1f} s"
