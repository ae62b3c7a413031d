"""``botkit campaign``: start a campaign in the store, follow it, pause, resume, cancel, report.

The command only talks to Redis (``BOTKIT_REDIS_URL``, ``BOTKIT_KEY_PREFIX``):
the running service's workers send the campaign. ``start`` names the bot
(``MODULE[:ATTR]``, for its name); the other commands find the bot by the
campaign's name (names are unique under a key prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botkit._compat import SubParsers
from botkit.delivery._campaigns import (
    AudienceError,
    count_rows,
    csv_audience,
    start_campaign,
)
from botkit.service._settings import Settings, SettingsError, load_settings
from botkit.service._target import BotLoadError, load_bot
from botkit.storage.base import StorageError
from botkit.storage.campaigns import (
    CampaignError,
    CampaignNotFound,
    CampaignsNeedRedis,
    CampaignState,
    CampaignTotals,
)
from botkit.storage.redis import RedisStore, connection
from botkit.storage.redis.runner import done

Fail = Callable[..., int]

EXIT_NOT_FOUND = 4
"""``botkit campaign ... NAME`` for a campaign that does not exist."""

_ACTIONS = {
    "pause": ((CampaignState.RUNNING, CampaignState.SCHEDULED), CampaignState.PAUSED),
    "resume": ((CampaignState.PAUSED,), CampaignState.RUNNING),
    "cancel": (
        (
            CampaignState.IMPORTING,
            CampaignState.SCHEDULED,
            CampaignState.RUNNING,
            CampaignState.PAUSED,
        ),
        CampaignState.CANCELLED,
    ),
}


def progress_bar(totals: CampaignTotals, width: int = 30) -> str:
    """``[#########.....]  31%  1,550 of 5,000`` (processed of the audience)."""
    done = totals.processed
    share = 1.0 if totals.audience == 0 else done / totals.audience
    filled = math.floor(share * width)
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:3.0f}%  "
        f"{done:,} of {totals.audience:,}"
    )


def describe(totals: CampaignTotals) -> list[str]:
    """The status command's lines for a campaign's totals."""
    c = totals.campaign
    rate = "unlimited" if c.rate <= 0 else f"{c.rate:g}/s"
    if c.rate > 0 and totals.rate < c.rate - 1e-6:
        rate += f" (slowed to {totals.rate:.1f}/s after a 2301)"
    template = c.template + (f" ({c.language})" if c.language else "")
    lines = [
        f"campaign {c.name}: {c.state.value}, template {template}, rate {rate}",
        progress_bar(totals),
        f"queued {totals.queued:,}  sent {totals.sent:,}  delivered {totals.delivered:,}  "
        f"read {totals.read:,}  failed {sum(totals.failed.values()):,}  "
        f"skipped {sum(totals.skipped.values()):,}",
    ]
    if totals.failed:
        lines.append(
            "failed by error code: "
            + ", ".join(f"{code} {n:,}" for code, n in sorted(totals.failed.items()))
        )
    if totals.skipped:
        lines.append(
            "skipped by reason: "
            + ", ".join(f"{why} {n:,}" for why, n in sorted(totals.skipped.items()))
        )
    return lines


def register(sub: SubParsers[argparse.ArgumentParser], fail: Fail, formatter: Any) -> None:
    """Add ``botkit campaign`` and its subcommands to the ``botkit`` parser."""
    campaign = sub.add_parser(
        "campaign",
        help="send a template to an audience, paced; follow, pause, resume, cancel, report",
        description="Campaigns: one template to every recipient of an audience (a CSV file), "
        "paced by a rate shared by every worker, skipping opted-out users and numbers known "
        "not to be on WhatsApp. The command writes the campaign to Redis (BOTKIT_REDIS_URL) "
        "and returns; the running service's workers send it.",
        formatter_class=formatter,
    )
    actions = campaign.add_subparsers(dest="campaign_command", metavar="ACTION")

    start = actions.add_parser(
        "start",
        help="create a campaign from a CSV audience; the service's workers send it",
        description="Create a campaign and import its audience (streamed: any size), then "
        "return, printing its name and numbers. The service's workers start sending at once "
        "(or at --at).\n\nexample: botkit campaign start mybot --name spring --template "
        "spring_sale --language en --audience customers.csv --param-columns first_name,code "
        "--rate 20",
        formatter_class=formatter,
    )
    start.add_argument("target", metavar="MODULE[:ATTR]", help="the bot that sends it")
    start.add_argument("--name", required=True, help="the campaign's name (unique)")
    start.add_argument("--template", required=True, metavar="ID", help="the template's id")
    start.add_argument("--language", metavar="CODE", help="the template's language (en, pt_BR)")
    start.add_argument(
        "--audience", required=True, metavar="FILE.csv", help="CSV file, first line: columns"
    )
    start.add_argument("--phone-column", default="phone", metavar="NAME", help="phone column")
    start.add_argument(
        "--param-columns",
        default="",
        metavar="A,B,C",
        help="columns that fill the template's parameters 1, 2, 3... (default: none)",
    )
    start.add_argument(
        "--rate", type=float, default=20.0, metavar="N", help="messages per second; 0: unlimited"
    )
    start.add_argument(
        "--at", metavar="ISO-TIME", help="start then (2026-12-01T09:00:00+01:00); default: now"
    )
    start.add_argument(
        "--text-in-window",
        metavar="TEXT",
        help="free text sent instead of the template to users whose 24-hour window is open",
    )
    start.set_defaults(handler=lambda args: _start(args, fail))

    status = actions.add_parser(
        "status",
        help="a campaign's totals and progress (--watch: live until it ends)",
        formatter_class=formatter,
    )
    status.add_argument("name", help="the campaign's name")
    status.add_argument("--watch", action="store_true", help="follow it live until it ends")
    status.add_argument(
        "--every", type=float, default=1.0, metavar="SECONDS", help="--watch's refresh period"
    )
    status.set_defaults(handler=lambda args: _status(args, fail))

    for action, text in (
        ("pause", "stop sending (within a second); resume continues"),
        ("resume", "continue a paused campaign"),
        ("cancel", "stop for good: what was not sent is never sent"),
    ):
        parser = actions.add_parser(action, help=text, formatter_class=formatter)
        parser.add_argument("name", help="the campaign's name")
        parser.set_defaults(handler=lambda args, a=action: _change(args, a, fail))

    report = actions.add_parser(
        "report",
        help="write one CSV row per recipient: phone, result, message id, last status, error",
        formatter_class=formatter,
    )
    report.add_argument("name", help="the campaign's name")
    report.add_argument("--csv", required=True, metavar="FILE", help="where to write it")
    report.set_defaults(handler=lambda args: _report(args, fail))

    campaign.set_defaults(handler=lambda args: _usage(campaign))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _settings(command: str, fail: Fail) -> Settings | int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        return int(fail(command, str(exc)))
    if not settings.secret("redis_url"):
        return int(
            fail(
                command,
                str(
                    CampaignsNeedRedis(
                        "BOTKIT_REDIS_URL: required: campaigns live in the service's Redis, "
                        "where its workers read them (with botkit dev, use POST /api/campaigns)"
                    )
                ),
            )
        )
    return settings


def _store(settings: Settings, bot: str) -> RedisStore:
    url = settings.secret("redis_url")
    assert url is not None
    return RedisStore(url, bot=bot, prefix=settings.key_prefix, shards=settings.redis_shards)


async def _owner(settings: Settings, name: str) -> str:
    """The bot that has the campaign ``name`` (:class:`CampaignNotFound` when none)."""
    url = settings.secret("redis_url")
    assert url is not None
    client = connection.build_client(
        url, socket_timeout=5.0, connect_timeout=5.0, max_connections=2
    )
    try:
        bot = await done(client.hget(f"{settings.key_prefix}:campaigns", name))
    except Exception as exc:
        raise StorageError(
            f"Redis at {connection.mask(url)} failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        await client.aclose()
    if bot is None:
        raise CampaignNotFound(f"no campaign is called {name!r} (under {settings.key_prefix!r})")
    return str(bot)


def _run(command: str, fail: Fail, work: Any) -> int:
    try:
        result: int = asyncio.run(work)
    except CampaignNotFound as exc:
        return int(fail(command, str(exc), EXIT_NOT_FOUND))
    except (CampaignError, StorageError, ValueError, OSError) as exc:
        return int(fail(command, str(exc)))
    except KeyboardInterrupt:
        return 0
    return result


def _start(args: argparse.Namespace, fail: Fail) -> int:
    command = "campaign start"
    settings = _settings(command, fail)
    if isinstance(settings, int):
        return settings
    try:
        bot = load_bot(args.target)
    except BotLoadError as exc:
        return int(fail(command, str(exc)))
    params = [c.strip() for c in args.param_columns.split(",") if c.strip()]
    path = Path(args.audience)
    try:
        rows = csv_audience(path, phone_column=args.phone_column, param_columns=params)
        first = next(rows, None)  # reads the header: a missing column fails before anything
    except AudienceError as exc:
        return int(fail(command, str(exc)))

    async def work() -> int:
        store = _store(settings, bot.name)
        try:
            audience = rows if first is None else _chain(first, rows)
            totals = await start_campaign(
                store.campaigns(),
                name=args.name,
                template=args.template,
                language=args.language,
                audience=audience,
                expected=count_rows(path),
                rate=args.rate,
                at=args.at,
                text_in_window=args.text_in_window,
                params=params,
            )
        finally:
            await store.close()
        print(f"campaign {totals.campaign.name} started (id {totals.campaign.id})")
        for line in describe(totals):
            print(line)
        return 0

    return _run(command, fail, work())


def _chain(first: Any, rest: Any) -> Any:
    yield first
    yield from rest


def _status(args: argparse.Namespace, fail: Fail) -> int:
    command = "campaign status"
    settings = _settings(command, fail)
    if isinstance(settings, int):
        return settings

    async def work() -> int:
        store = _store(settings, await _owner(settings, args.name))
        campaigns = store.campaigns()
        try:
            campaign = await campaigns.get(args.name)
            if campaign is None:
                raise CampaignNotFound(f"no campaign is called {args.name!r}")
            totals = await campaigns.totals(campaign)
            if not args.watch:
                print("\n".join(describe(totals)))
                return 0
            live = sys.stdout.isatty()
            shown = 0
            while True:
                lines = describe(totals)
                if live and shown:
                    sys.stdout.write(f"\x1b[{shown}F\x1b[J")
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
                shown = len(lines)
                if totals.state.finished:
                    return 0
                await asyncio.sleep(max(0.1, args.every))
                totals = await campaigns.totals(campaign)
        finally:
            await store.close()

    return _run(command, fail, work())


def _change(args: argparse.Namespace, action: str, fail: Fail) -> int:
    command = f"campaign {action}"
    settings = _settings(command, fail)
    if isinstance(settings, int):
        return settings
    allowed, to = _ACTIONS[action]

    async def work() -> int:
        store = _store(settings, await _owner(settings, args.name))
        try:
            campaign = await store.campaigns().change_state(args.name, allowed, to)
        finally:
            await store.close()
        print(f"campaign {campaign.name}: {campaign.state.value}")
        return 0

    return _run(command, fail, work())


def _report(args: argparse.Namespace, fail: Fail) -> int:
    command = "campaign report"
    settings = _settings(command, fail)
    if isinstance(settings, int):
        return settings

    async def work() -> int:
        store = _store(settings, await _owner(settings, args.name))
        campaigns = store.campaigns()
        rows = 0
        started = time.monotonic()
        try:
            campaign = await campaigns.get(args.name)
            if campaign is None:
                raise CampaignNotFound(f"no campaign is called {args.name!r}")
            # The command's only task: a blocking write is fine here.
            with Path(args.csv).open("w", newline="", encoding="utf-8") as handle:  # noqa: ASYNC230
                writer = csv.writer(handle)
                writer.writerow(["phone", "result", "message_id", "status", "error_code"])
                async for row in campaigns.report(campaign):
                    writer.writerow([row.phone, row.result, row.message_id, row.status, row.error])
                    rows += 1
        finally:
            await store.close()
        print(
            f"campaign {args.name}: {rows:,} rows written to {args.csv} "
            f"in {time.monotonic() - started:.1f}s"
        )
        return 0

    return _run(command, fail, work())
