"""Campaigns in Redis: every key of a campaign in one slot, every change one script.

The key layout is in :mod:`botkit.storage.redis.keys` (``P:{c<id>}:...``).
The audience is a stream read through a consumer group (each recipient to
one sender; a dead sender's recipients are claimed), the results are spread
over small hashes (``buckets``, about 64 recipients each, so each stays a
compact listpack), the totals are one hash of counters, and the shared
token bucket is a few fields of the meta hash, moved by a script on the
server's clock. A recipient costs about a stream entry and a listpack
field: ``tests/bench/bench_campaign.py`` measures the bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from botkit.storage.campaigns import (
    RECOVER_SECONDS,
    Campaign,
    CampaignExists,
    CampaignNotFound,
    CampaignState,
    CampaignStateError,
    CampaignStore,
    CampaignTotals,
    Recipient,
    RecipientOutcome,
    RecipientRow,
    Settlement,
    row_of,
    totals_from,
)
from botkit.storage.redis import scripts
from botkit.storage.redis.connection import Client
from botkit.storage.redis.keys import Keys
from botkit.storage.redis.runner import ScriptRunner, done

GROUP = "senders"
_SEP = "\x1f"
_OUTCOMES = {
    RecipientOutcome.SENT: "s",
    RecipientOutcome.FAILED: "f",
    RecipientOutcome.SKIPPED: "k",
}
# Report rows read per round trip (results buckets and invalid numbers).
_REPORT_CHUNK = 50


class RedisCampaigns(CampaignStore):
    """The campaigns of one bot in the Redis store (``RedisStore.campaigns()`` builds it)."""

    def __init__(
        self, runner: ScriptRunner, connect: Callable[[], Awaitable[Client]], keys: Keys
    ) -> None:
        self._runner = runner
        self._connect = connect
        self._keys = keys

    def _key(self, campaign: Campaign | str, part: str) -> str:
        cid = campaign if isinstance(campaign, str) else campaign.id
        return self._keys.campaign(cid, part)

    def _bucket(self, campaign: Campaign, phone: str) -> str:
        return self._key(campaign, f"r:{campaign.bucket(phone)}")

    async def _run(
        self, doing: str, script: scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        await self._connect()
        async with self._runner.guard(doing):
            return await self._runner.run(script, keys, args)

    # -- definition ------------------------------------------------------------

    async def create(self, campaign: Campaign) -> Campaign:
        client = await self._connect()
        keys = self._keys
        bot = keys.base[len(keys.prefix) + 1 :]
        async with self._runner.guard("create a campaign"):
            owner = await done(client.hget(keys.campaign_bots, campaign.name))
            if owner is not None and owner != bot:
                raise CampaignExists(
                    f"bot {owner!r} has a campaign called {campaign.name!r} already (names are "
                    "unique per Redis key prefix); pick another name"
                )
            if not await done(client.hsetnx(keys.campaigns, campaign.name, campaign.id)):
                known = await done(client.hget(keys.campaigns, campaign.name))
                if known and await done(client.exists(self._key(str(known), "meta"))):
                    raise CampaignExists(
                        f"a campaign called {campaign.name!r} exists already; pick another name"
                    )
                # A creation that died half way: the name is free again.
                await done(client.hset(keys.campaigns, campaign.name, campaign.id))
            await done(client.hset(keys.campaign_bots, campaign.name, bot))
            meta = self._key(campaign, "meta")
            fields: dict[Any, Any] = campaign.to_fields()
            await done(client.hset(meta, mapping=fields))
            await done(
                client.xgroup_create(self._key(campaign, "audience"), GROUP, id="0", mkstream=True)
            )
        return campaign

    async def add(
        self, campaign: Campaign, recipients: Sequence[tuple[str, tuple[str, ...]]]
    ) -> tuple[int, int]:
        if not recipients:
            return 0, 0
        keys = [self._key(campaign, "audience"), self._key(campaign, "totals")]
        args: list[Any] = [len(recipients)]
        for phone, params in recipients:
            keys.append(self._bucket(campaign, phone))
            args += (phone, "".join(_SEP + p for p in params))
        added, duplicates = await self._run("add recipients", scripts.CAMPAIGN_ADD, keys, args)
        return int(added), int(duplicates)

    async def add_invalid(self, campaign: Campaign, numbers: Sequence[str]) -> None:
        if not numbers:
            return
        client = await self._connect()
        async with (
            self._runner.guard("record invalid numbers"),
            client.pipeline(transaction=False) as pipe,
        ):
            pipe.rpush(self._key(campaign, "invalid"), *numbers)
            pipe.hincrby(self._key(campaign, "totals"), "k:invalid", len(numbers))
            await pipe.execute()

    async def open(self, campaign: Campaign) -> Campaign:
        return await self._change(campaign.name, campaign.id, [CampaignState.IMPORTING], "running")

    async def get(self, name: str) -> Campaign | None:
        client = await self._connect()
        async with self._runner.guard("read a campaign"):
            cid = await done(client.hget(self._keys.campaigns, name))
        return None if cid is None else await self.by_id(str(cid))

    async def by_id(self, campaign_id: str) -> Campaign | None:
        client = await self._connect()
        async with self._runner.guard("read a campaign"):
            fields = await done(client.hgetall(self._key(campaign_id, "meta")))
        return Campaign.from_fields(fields) if fields else None

    async def names(self) -> list[str]:
        client = await self._connect()
        async with self._runner.guard("list campaigns"):
            found = await done(client.hkeys(self._keys.campaigns))
        return sorted(str(name) for name in found)

    async def all(self) -> list[Campaign]:
        client = await self._connect()
        async with self._runner.guard("list campaigns"):
            ids = await done(client.hgetall(self._keys.campaigns))
        if not ids:
            return []
        async with (
            self._runner.guard("list campaigns"),
            client.pipeline(transaction=False) as pipe,
        ):
            for cid in ids.values():
                pipe.hgetall(self._key(str(cid), "meta"))
            found = await pipe.execute()
        return [Campaign.from_fields(fields) for fields in found if fields]

    async def change_state(
        self, name: str, allowed: Collection[CampaignState], to: CampaignState
    ) -> Campaign:
        campaign = await self.get(name)
        if campaign is None:
            raise CampaignNotFound(f"no campaign is called {name!r}")
        return await self._change(name, campaign.id, allowed, to.value)

    async def _change(
        self, name: str, cid: str, allowed: Collection[CampaignState], to: str
    ) -> Campaign:
        keys = [self._key(cid, "meta"), self._key(cid, "totals")]
        answer = await self._run(
            "change a campaign's state",
            scripts.CAMPAIGN_STATE,
            keys,
            [to, *(state.value for state in allowed)],
        )
        if answer[0] == "missing":
            raise CampaignNotFound(f"no campaign is called {name!r}")
        if answer[0] == "refused":
            state = CampaignState(answer[1])
            verbs = {"paused": "pause", "running": "resume", "cancelled": "cancel"}
            raise CampaignStateError(
                f"campaign {name!r} is {state.value}: it cannot {verbs.get(to, to)}"
            )
        found = await self.by_id(cid)
        if found is None:
            raise CampaignNotFound(f"no campaign is called {name!r}")
        return found

    # -- sending -------------------------------------------------------------

    async def tokens(self, campaign: Campaign, want: int) -> tuple[int, float, CampaignState]:
        granted, wait, state = await self._run(
            "take campaign tokens", scripts.CAMPAIGN_TOKENS, [self._key(campaign, "meta")], [want]
        )
        try:
            known = CampaignState(state)
        except ValueError:  # the campaign's keys are gone
            known = CampaignState.CANCELLED
        return int(granted), float(wait), known

    async def take(self, campaign: Campaign, consumer: str, count: int) -> list[Recipient]:
        if count <= 0:
            return []
        client = await self._connect()
        stream = self._key(campaign, "audience")
        async with self._runner.guard("take campaign recipients"):
            found = await done(client.xreadgroup(GROUP, consumer, {stream: ">"}, count))
        entries: list[Any]
        if not found:
            return []
        if isinstance(found, dict):  # RESP3
            entries = next(iter(found.values()))[0] if found else []
        else:
            entries = found[0][1]
        return [
            Recipient(str(entry), fields.get("p", ""), _params(fields.get("a", "")))
            for entry, fields in entries
            if fields
        ]

    async def claim(
        self, campaign: Campaign, consumer: str, min_idle: float, count: int
    ) -> list[Recipient]:
        return await self._claim(campaign, consumer, min_idle, count, ())

    async def take_over(
        self,
        campaign: Campaign,
        consumer: str,
        live: Collection[str],
        min_idle: float,
        count: int,
    ) -> list[Recipient]:
        return await self._claim(campaign, consumer, min_idle, count, sorted({*live, consumer}))

    async def _claim(
        self,
        campaign: Campaign,
        consumer: str,
        min_idle: float,
        count: int,
        live: Sequence[str],
    ) -> list[Recipient]:
        args: list[Any] = [GROUP, consumer, max(1, int(min_idle * 1000)), count, *live]
        taken = await self._run(
            "claim campaign recipients",
            scripts.CAMPAIGN_CLAIM,
            [self._key(campaign, "audience")],
            args,
        )
        return [
            Recipient(str(entry), str(phone), _params(str(params)), int(deliveries))
            for entry, phone, params, deliveries in taken
            if phone
        ]

    async def touch(self, campaign: Campaign, consumer: str, entries: Sequence[str]) -> list[str]:
        if not entries:
            return []
        held = await self._run(
            "touch campaign recipients",
            scripts.TOUCH,
            [self._key(campaign, "audience")],
            [GROUP, consumer, *entries],
        )
        return [str(entry) for entry in held]

    async def settle(self, campaign: Campaign, results: Sequence[Settlement]) -> None:
        if not results:
            return
        keys = [
            self._key(campaign, "audience"),
            self._key(campaign, "totals"),
            self._key(campaign, "meta"),
        ]
        args: list[Any] = [GROUP, len(results)]
        for result in results:
            keys.append(self._bucket(campaign, result.phone))
            args += (
                result.entry,
                result.phone,
                _OUTCOMES[result.outcome],
                result.reason,
                result.message_id,
                result.status,
            )
        await self._run("settle campaign recipients", scripts.CAMPAIGN_SETTLE, keys, args)

    async def record_status(
        self, campaign: Campaign, phone: str, status: str, code: str, message_id: str
    ) -> bool:
        keys = [self._bucket(campaign, phone), self._key(campaign, "totals")]
        moved = await self._run(
            "record a campaign status",
            scripts.CAMPAIGN_STATUS,
            keys,
            [phone, status, code, message_id],
        )
        return bool(moved)

    async def throttle(self, campaign: Campaign) -> float:
        rate = await self._run(
            "slow a campaign down", scripts.CAMPAIGN_THROTTLE, [self._key(campaign, "meta")], []
        )
        return float(rate)

    # -- reading -------------------------------------------------------------

    async def totals(self, campaign: Campaign) -> CampaignTotals:
        client = await self._connect()
        async with (
            self._runner.guard("read campaign totals"),
            client.pipeline(transaction=False) as pipe,
        ):
            pipe.hgetall(self._key(campaign, "meta"))
            pipe.hgetall(self._key(campaign, "totals"))
            meta, counts = await pipe.execute()
        if not meta:
            raise CampaignNotFound(f"campaign {campaign.name!r} is gone from Redis")
        fresh = Campaign.from_fields(meta)
        rate = fresh.rate
        throttled = meta.get("throttled_at")
        if throttled and rate > 0:
            current = float(meta.get("current") or rate)
            rate = min(rate, current + (time.time() - float(throttled)) * rate / RECOVER_SECONDS)
        finished = float(meta["finished_at"]) if meta.get("finished_at") else None
        return totals_from(fresh, {k: int(v) for k, v in counts.items()}, rate, finished)

    async def report(self, campaign: Campaign) -> AsyncIterator[RecipientRow]:
        client = await self._connect()
        for first in range(0, campaign.buckets, _REPORT_CHUNK):
            last = min(campaign.buckets, first + _REPORT_CHUNK)
            async with (
                self._runner.guard("read a campaign's report"),
                client.pipeline(transaction=False) as pipe,
            ):
                for bucket in range(first, last):
                    pipe.hgetall(self._key(campaign, f"r:{bucket}"))
                found = await pipe.execute()
            for results in found:
                for phone, value in results.items():
                    yield row_of(str(phone), str(value))
        start = 0
        while True:
            async with self._runner.guard("read a campaign's report"):
                numbers = await done(
                    client.lrange(
                        self._key(campaign, "invalid"), start, start + _REPORT_CHUNK * 20 - 1
                    )
                )
            for number in numbers:
                yield RecipientRow(str(number), "skipped:invalid")
            if len(numbers) < _REPORT_CHUNK * 20:
                return
            start += len(numbers)


def _params(joined: str) -> tuple[str, ...]:
    # Each parameter is stored after a separator, so () and ("",) stay apart.
    return tuple(joined.split(_SEP)[1:])
