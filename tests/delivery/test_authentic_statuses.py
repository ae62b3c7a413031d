"""Status callbacks can only cause what botkit signed, and only once.

A genuine ``callbackData`` can be replayed with any status: a replay must not
resend a message that was delivered or read, nor send a fallback twice. A
callback signed with a key an attacker can derive (from the webhook token)
is refused. Through the real service: uvicorn, the emulator over HTTP, the
memory store and a real Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import string
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from botkit import DeliveryStatus, ManualClock, Template
from botkit.delivery import CallbackSigner
from botkit.devino.errors import StatusErrorCode
from botkit.devtools.emulator import Emulator
from botkit.storage import MemoryStore, RedisStore, StoreConfig
from botkit.testing import LiveBot

from .conftest import StoreMaker
from .test_delivery import FAST, USER, _settle, make_bot, templates

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(live: LiveBot) -> Sample:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{live.url}/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def post_statuses(live: LiveBot, reports: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient() as http:
        for report in reports:
            answer = await http.post(f"{live.url}/whatsapp/status/{live.token}", json=[report])
            assert (answer.status_code, answer.content) == (200, b"")


async def read_message(live: LiveBot, text: str) -> Any:
    """Say ``text``; wait until its echo was sent, delivered and read (callbacks acknowledged)."""
    before = len(live.emulator.messages)
    await live.say(USER, text)
    sent = (await live.replies(before + 1))[before]
    await live.emulator.wait_until(
        lambda: sum(c.delivered for c in sent.callbacks) == 3, what="sent, delivered, read"
    )
    return sent


async def test_a_replayed_failure_on_a_read_message_resends_nothing(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    async with LiveBot(
        make_bot(), clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        sent = await read_message(live, "hello")  # its fallback is the come_back template
        ignored = ("botkit_statuses_ignored_total", (("status", "failed"),))
        before = (await scrape(live)).get(ignored, 0.0)

        genuine = sent.received["callbackData"]
        replays = [
            {"messageId": sent.message_id, "status": status, "errorCode": code, "options": genuine}
            for status, code in [("FAILED", 2312), ("FAILED", 2301), ("UNDELIVERED", 2312)]
        ]
        await post_statuses(live, replays)
        # Recorded: counted as ignored (the two FAILED are one (messageId, status)).
        metrics = await scrape(live)
        assert metrics.get(ignored, 0.0) - before == 1
        assert metrics.get(("botkit_statuses_ignored_total", (("status", "undelivered"),)))

        clock.advance(seconds=3600)  # any retry (2301) would be due by now
        await read_message(live, "later")
        await _settle(live)
        assert [m.received.get("text") for m in live.emulator.messages] == ["hello", "later"]
        assert templates(live) == []
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "read"


async def test_a_failure_after_delivered_is_ignored_and_the_fallback_never_goes(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    # No callbacks from the provider: the test decides which statuses arrive.
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        emulator.callback_attempts = 0  # the provider's own callbacks never arrive
        await live.say(USER, "hello")
        [sent] = await live.replies(1)
        data = sent.received["callbackData"]
        report = {"messageId": sent.message_id, "options": data}
        await post_statuses(
            live,
            [
                {**report, "status": "DELIVERED"},
                {**report, "status": "FAILED", "errorCode": 2312},
            ],
        )
        await _settle(live)
        assert templates(live) == []
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "delivered"


def derived_from_the_webhook_token(token: str) -> bytes:
    """The key older botkit signed with when no callback secret was set."""
    return hashlib.sha256(b"botkit callback secret:" + token.encode()).hexdigest().encode()


async def test_a_callback_signed_with_a_key_derived_from_the_webhook_token_is_refused(
    make_store: StoreMaker,
) -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        emulator.callback_attempts = 0
        await live.say(USER, "hello")
        [sent] = await live.replies(1)
        ref = sent.received["callbackData"].split(".")[1]
        key = derived_from_the_webhook_token(live.token)
        # Both layouts an attacker might try: today's, and the older user.ref.mac.
        own = hmac.new(key, b"botkit callbackData v1", hashlib.sha256).digest()
        mac = hmac.new(own, f"{USER}.{ref}".encode(), hashlib.sha256).digest()[:16]
        old_layout = f"{USER}.{ref}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
        forged = [
            CallbackSigner(key).sign(USER, ref, Template("come_back", ["hello"])),
            old_layout,
        ]
        refused = ("botkit_callbacks_refused_total", (("reason", "signature"),))
        before = (await scrape(live)).get(refused, 0.0)
        await post_statuses(
            live,
            [
                {"messageId": sent.message_id, "status": "FAILED", "errorCode": 2312, "options": o}
                for o in forged
            ],
        )
        assert (await scrape(live)).get(refused, 0.0) - before == 2
        await _settle(live)
        assert templates(live) == []
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "accepted"


async def test_the_fallback_goes_at_most_once_even_after_the_dedupe_mark_expired() -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", session_window=60, clock=clock.now)
    store = MemoryStore(StoreConfig(done_ttl=60.0), clock=clock)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=store, sender_config=FAST
    ) as live:
        await live.say(USER, "first")
        await live.replies(1)
        clock.advance(seconds=120)  # the platform's window closed; botkit's did not
        await live.bot.send(USER, "late", template=Template("come_back", ["x"]))
        await live.replies(3)  # first, late (failed 2312), the come_back template
        await _settle(live)
        assert templates(live) == ["come_back"]

        failed = next(m for m in emulator.messages if m.received.get("text") == "late")
        clock.advance(seconds=600)  # the callback's dedupe mark is gone
        await post_statuses(
            live,
            [
                {
                    "messageId": failed.message_id,
                    "status": "FAILED",
                    "errorCode": 2312,
                    "options": failed.received["callbackData"],
                }
            ],
        )
        await _settle(live)
        assert templates(live) == ["come_back"], "exactly one template, ever"


SECRET = "a-callback-secret-for-these-tests-0123456789"


def legacy_signature(secret: str, user: str, ref: str) -> str:
    """``user.ref.mac`` as botkit signed before the fallback template was covered."""
    key = hmac.new(secret.encode(), b"botkit callbackData v1", hashlib.sha256).digest()
    mac = hmac.new(key, f"{user}.{ref}".encode(), hashlib.sha256).digest()[:16]
    return f"{user}.{ref}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_a_fallback_template_the_signature_does_not_cover_is_not_sent() -> None:
    # A message signed before the fallback was covered (user.ref.mac) still has its
    # statuses recorded, but a 2312 for it cannot prove which template may go: none does.
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, sender_config=FAST, callback_secret=SECRET
    ) as live:
        emulator.callback_attempts = 0
        await live.say(USER, "hello")
        [sent] = await live.replies(1)
        user, ref, _, _ = sent.received["callbackData"].split(".")
        legacy = legacy_signature(SECRET, user, ref)
        report = {"messageId": sent.message_id, "status": "FAILED", "errorCode": 2312}
        await post_statuses(live, [{**report, "options": legacy}])
        await _settle(live)
        assert templates(live) == []
        record = await live.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "failed"


async def test_random_and_long_statuses_do_not_grow_the_metrics(make_store: StoreMaker) -> None:
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)
    async with LiveBot(
        make_bot(), emulator=emulator, clock=clock, store=make_store(clock), sender_config=FAST
    ) as live:
        emulator.callback_attempts = 0
        signer = live.service.signer
        rng = random.Random(14)
        reports = []
        for i in range(150):
            status = "".join(rng.choices(string.ascii_letters, k=rng.choice([6, 40, 2000])))
            reports.append(
                {
                    "messageId": f"random-{i}",
                    "status": status,
                    "errorCode": rng.choice([None, 2312, 4242, rng.randrange(10**9)]),
                    "options": signer.sign(USER, f"ref{i}"),
                }
            )
        await post_statuses(live, reports)
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"{live.url}/metrics")).text
        series = [
            sample.labels
            for family in text_string_to_metric_families(body)
            if family.name == "botkit_statuses"
            for sample in family.samples
            if sample.name == "botkit_statuses_total"
        ]
        statuses = {labels["status"] for labels in series}
        codes = {labels["error"] for labels in series}
        assert "other" in statuses
        assert statuses <= {s.value for s in DeliveryStatus} | {"other"}
        assert codes <= {"", "other"} | {str(int(c)) for c in StatusErrorCode}
        assert max(len(line) for line in body.splitlines()) < 300


async def test_without_a_configured_secret_instances_on_one_redis_share_one_key(
    redis_url: str, redis_prefix: str
) -> None:
    # Two instances (different webhook tokens even): a status signed for one's
    # message is accepted by the other, and by no key derivable from a token.
    clock = ManualClock()
    emulator = Emulator(api_key="live-test", clock=clock.now)

    def store() -> RedisStore:
        return RedisStore(redis_url, bot="shared", prefix=redis_prefix, clock=clock)

    async with (
        LiveBot(make_bot(), emulator=emulator, clock=clock, store=store()) as one,
        LiveBot(
            make_bot(),
            emulator=emulator,  # either instance's sender may take the reply from the outbox
            clock=clock,
            store=store(),
            webhook_token="another-token-0123456789",
        ) as two,
    ):
        emulator.callback_attempts = 0
        await two.say(USER, "hello")
        # Two services and their senders share the machine: a generous deadline, still polled.
        [sent] = await one.replies(1, within=30)
        data = sent.received["callbackData"]
        # Sent by one or the other; each accepts what either signed.
        await post_statuses(
            one if sent.received["callbackUrl"].startswith(two.url) else two,
            [{"messageId": sent.message_id, "status": "DELIVERED", "options": data}],
        )
        record = await two.service.store.get_sent(sent.message_id, user=USER)
        assert record is not None and record.status == "delivered"


def test_the_status_a_receipt_settles_at_does_not_depend_on_the_order_callbacks_came_in() -> None:
    from botkit.delivery import furthest

    # Delivery wins over a failure (a failure after delivery is ignored), whatever the order.
    for seen in (["sent", "delivered", "read", "failed"], ["failed", "read", "delivered", "sent"]):
        assert furthest(seen) == "read"
    assert furthest(["visited", "delivered"]) == "visited"
    assert furthest(["sent", "failed"]) == "failed"
    assert furthest(["sent"]) == "sent"
    assert furthest([]) == "accepted"
    assert furthest(["bogus"]) == "accepted"
