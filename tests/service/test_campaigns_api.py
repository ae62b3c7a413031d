"""The campaigns' HTTP API: ``/api/campaigns`` behind the send API's token.

The bot served for real (LiveBot: uvicorn and the emulator over HTTP), on the
memory store (``botkit dev``'s) and on Redis.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from botkit.storage.redis import RedisStore
from botkit.testing import LiveBot
from bots import echo
from tests.service._harness import wait_for
from tests.service.test_app import API_TOKEN, FAST, _bearer


@pytest.fixture(params=["memory", "redis"])
async def live(request: pytest.FixtureRequest) -> AsyncIterator[LiveBot]:
    store = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        store = RedisStore(url, bot="echo", prefix=prefix, shards=8)
    async with LiveBot(echo.bot, store=store, sender_config=FAST, api_token=API_TOKEN) as bot:
        yield bot


def new_campaign(name: str = "spring", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "template": {"id": "spring_sale", "language": "en"},
        "audience": [
            {"phone": "+7 903 000-00-01", "params": ["Anna"]},
            {"phone": "79030000002", "params": ["Boris"]},
            {"phone": "79030000002", "params": ["Boris again"]},
            {"phone": "12", "params": ["nobody"]},
        ],
        "rate": 0,
        **extra,
    }


async def test_a_campaign_is_created_sent_and_read_back_over_http(live: LiveBot) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=_bearer()) as http:
        answer = await http.post("/api/campaigns", json=new_campaign())
        assert answer.status_code == 201, answer.text
        created = answer.json()
        assert (created["name"], created["audience"]) == ("spring", 2)
        assert created["skipped"] == {"duplicate": 1, "invalid": 1}
        await live.replies(2, within=15)

        async def read() -> bool:
            body = (await http.get("/api/campaigns/spring")).json()
            return bool(body["state"] == "done" and body["read"] == 2)

        await wait_for(read, within=20, what="the campaign done and read")
        body = (await http.get("/api/campaigns/spring")).json()
        assert (body["sent"], body["delivered"], body["queued"]) == (2, 2, 0)
        assert body["template"] == {"id": "spring_sale", "language": "en"}
        listing = (await http.get("/api/campaigns")).json()["campaigns"]
        assert [c["name"] for c in listing] == ["spring"]
        sent = {m.message.to: m.received for m in live.emulator.messages}
        assert sent["79030000001"]["templateParams"] == {"1": "Anna"}
        assert sent["79030000002"]["templateParams"] == {"1": "Boris"}
        # The live totals are in Prometheus too, labelled by the campaign's name only.

        async def exported() -> bool:
            metrics = (await http.get("/metrics")).text
            return bool(
                re.search(r'^botkit_campaign_read\{campaign="spring"\} 2\.0$', metrics, re.M)
            )

        await wait_for(exported, within=10, what="the campaign's gauges")


async def test_pause_resume_and_cancel_answer_with_the_state(live: LiveBot) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=_bearer()) as http:
        later = new_campaign("later", at="2099-01-01T09:00:00+00:00")
        assert (await http.post("/api/campaigns", json=later)).json()["state"] == "scheduled"
        answer = await http.post("/api/campaigns/later/pause")
        assert (answer.status_code, answer.json()["state"]) == (200, "paused")
        answer = await http.post("/api/campaigns/later/pause")
        assert (answer.status_code, answer.json()["error"]) == (409, "invalid_state")
        answer = await http.post("/api/campaigns/later/resume")
        assert (answer.status_code, answer.json()["state"]) == (200, "scheduled")
        answer = await http.post("/api/campaigns/later/cancel")
        assert (answer.status_code, answer.json()["state"]) == (200, "cancelled")
        answer = await http.post("/api/campaigns/later/resume")
        assert answer.status_code == 409
        assert "cancelled" in answer.json()["message"]
        assert live.emulator.messages == []


async def test_bad_requests_get_a_4xx_that_says_what_is_wrong(live: LiveBot) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        assert (await http.get("/api/campaigns/x")).status_code == 401
        assert (await http.post("/api/campaigns", json=new_campaign())).status_code == 401
        http.headers.update(_bearer())
        answer = await http.get("/api/campaigns/nope")
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
        assert (await http.post("/api/campaigns/nope/pause")).status_code == 404
        assert (await http.post("/api/campaigns/nope/explode")).status_code == 404
        answer = await http.post("/api/campaigns", json={"name": "x"})
        assert answer.status_code == 422
        assert {e["loc"] for e in answer.json()["errors"]} == {"template", "audience"}
        answer = await http.post("/api/campaigns", json=new_campaign("bad name!"))
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_body")
        assert "campaign name" in answer.json()["message"]
        answer = await http.post("/api/campaigns", json=new_campaign(rate=-1))
        assert answer.status_code == 422
        answer = await http.post("/api/campaigns", json=new_campaign(at="2099-01-01T09:00:00"))
        assert answer.status_code == 422
        assert (await http.post("/api/campaigns", json=new_campaign("once"))).status_code == 201
        answer = await http.post("/api/campaigns", json=new_campaign("once"))
        assert (answer.status_code, answer.json()["error"]) == (409, "campaign_exists")
