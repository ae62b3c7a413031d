"""Reports in the terminal: ``botkit transcript USER`` and ``botkit funnel MODULE[:ATTR]``.

Both read the bot's Redis store (``BOTKIT_REDIS_URL``; a memory store lives
inside its service's process, out of reach). ``botkit funnel --metrics URL``
reads a running service's Prometheus counters instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from botkit._transcript import EntryKind, TranscriptEntry, latest_statuses
from botkit.service._target import BotLoadError

if TYPE_CHECKING:
    from botkit._bot import Bot
    from botkit._flow import Flow
    from botkit.storage.base import ConversationStore

LoadBot = Callable[[str], "Bot"]
Fail = Callable[[str, str], int]

TARGET_ENV = "BOTKIT_TARGET"


# -- transcripts --------------------------------------------------------------------


def transcript_lines(entries: Iterable[TranscriptEntry]) -> list[str]:
    """One line per entry, oldest first; statuses shown on the message they belong to."""
    entries = list(entries)
    latest = latest_statuses(entries)
    lines = []
    for entry in entries:
        when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        data = entry.data
        if entry.kind is EntryKind.IN:
            text = data.get("text") or f"[{data.get('type', 'message')}]"
            lines.append(f"{when}  <- {text}")
        elif entry.kind is EntryKind.OUT:
            text = data.get("text")
            if not text and "template" in data:
                template = data["template"]
                text = f"[template {template['id']} {template.get('params') or ''}]".rstrip()
            tags = [str(data["by"]).replace(":", " ")] if data.get("by") else []
            tags.append(latest.get(str(data.get("ref")), "queued"))
            lines.append(f"{when}  -> {text or '[media]'}  ({', '.join(tags)})")
        elif entry.kind is EntryKind.FLOW:
            lines.append(f"{when}  .. {_flow_line(data)}")
        elif entry.kind is EntryKind.HANDOFF:
            extra = ", ".join(f"{k} {data[k]}" for k in ("reason", "agent", "by") if data.get(k))
            lines.append(
                f"{when}  .. handoff {data.get('event')}" + (f" ({extra})" if extra else "")
            )
    return lines


def _flow_line(data: Mapping[str, Any]) -> str:
    flow, source, dest = data.get("flow"), data.get("from"), data.get("to")
    if source is None:
        return f"flow {flow}: entered at {dest}"
    if dest is None:
        return f"flow {flow}: left from {source} ({data.get('reason')})"
    return f"flow {flow}: {source} -> {dest}"


# -- funnels ------------------------------------------------------------------------


@dataclass
class Funnel:
    """Per state of a flow: how many reached it, and how many left from it, by reason."""

    reached: Counter[str] = field(default_factory=Counter)
    left: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def funnels_from_entries(entries: Iterable[tuple[str, TranscriptEntry]]) -> dict[str, Funnel]:
    """Funnels from transcripts' flow entries: users who reached each state (once each)."""
    reached: dict[tuple[str, str], set[str]] = defaultdict(set)
    funnels: dict[str, Funnel] = defaultdict(Funnel)
    for user, entry in entries:
        if entry.kind is not EntryKind.FLOW:
            continue
        flow, source, dest = entry.data.get("flow"), entry.data.get("from"), entry.data.get("to")
        if not isinstance(flow, str):
            continue
        if dest is not None:
            reached[(flow, str(dest))].add(user)
        else:
            funnels[flow].left[str(source)][str(entry.data.get("reason"))] += 1
    for (flow, state), users in reached.items():
        funnels[flow].reached[state] = len(users)
    return dict(funnels)


def funnels_from_metrics(text: str) -> dict[str, Funnel]:
    """Funnels from a service's ``/metrics`` counters (times, since each worker started)."""
    from prometheus_client.parser import text_string_to_metric_families

    funnels: dict[str, Funnel] = defaultdict(Funnel)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, int(sample.value)
            if sample.name == "botkit_flow_entries_total":
                funnels[labels["flow"]].reached[labels["state"]] += value
            elif sample.name == "botkit_flow_transitions_total":
                funnels[labels["flow"]].reached[labels["to"]] += value
            elif sample.name == "botkit_flow_exits_total":
                funnels[labels["flow"]].left[labels["state"]][labels["reason"]] += value
    return dict(funnels)


def funnel_lines(
    flows: Mapping[str, Flow], funnels: Mapping[str, Funnel], *, unit: str
) -> list[str]:
    """A table per flow of the bot, its states in definition order."""
    lines: list[str] = []
    for name, flow in flows.items():
        funnel = funnels.get(name, Funnel())
        lines.append(f"flow {name}")
        width = max([len(s) for s in flow.state_names] + [5])
        lines.append(f"  {'state':<{width}}  {unit:>8}  left here")
        for state in flow.state_names:
            left = funnel.left.get(state, Counter())
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(left.items())) or "-"
            lines.append(f"  {state:<{width}}  {funnel.reached.get(state, 0):>8}  {why}")
        lines.append("")
    return lines


# -- the commands --------------------------------------------------------------------


def register(sub: Any, load_bot: LoadBot, fail: Fail) -> None:
    """Add ``transcript`` and ``funnel`` to the ``botkit`` command."""
    transcript = sub.add_parser(
        "transcript",
        help="print a user's transcript from the bot's Redis store",
        description="Print a user's transcript (messages in and out with their delivery "
        "status, flow moves, handoff events), oldest first, from the bot's Redis store "
        "(BOTKIT_REDIS_URL).",
    )
    transcript.add_argument("user", metavar="USER", help="the user's phone number")
    transcript.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV) or None,
        metavar="MODULE[:ATTR]",
        help=f"the bot (its name namespaces the store; default: ${TARGET_ENV})",
    )
    transcript.add_argument("--limit", type=int, default=100, help="entries to print (100)")
    transcript.set_defaults(handler=lambda args: _transcript(args, load_bot, fail))

    funnel = sub.add_parser(
        "funnel",
        help="per flow: how many users reached each state, and where they left",
        description="Per flow of the bot: how many users reached each state and where they "
        "left (final, cancel, timeout, handoff), over the last --days from the transcripts "
        "in the bot's Redis store, or since the service started from its --metrics URL.",
    )
    funnel.add_argument("target", metavar="MODULE[:ATTR]", help="where the Bot is")
    funnel.add_argument("--days", type=float, default=7.0, help="the period, in days (7)")
    funnel.add_argument(
        "--metrics", metavar="URL", default=None, help="a running service's /metrics URL"
    )
    funnel.set_defaults(handler=lambda args: _funnel(args, load_bot, fail))


def _store(bot: Bot, command: str, fail: Fail) -> ConversationStore | int:
    from botkit.service._service import build_store
    from botkit.service._settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return fail(command, str(exc))
    if not settings.secret("redis_url"):
        return fail(
            command,
            "BOTKIT_REDIS_URL: required (a memory store lives inside its service's process)",
        )
    return build_store(bot, settings)


def _transcript(args: argparse.Namespace, load_bot: LoadBot, fail: Fail) -> int:
    from botkit.devino.errors import InvalidPhoneNumber
    from botkit.devino.validation import normalize_phone
    from botkit.storage.base import StorageError

    if not args.target:
        return fail("transcript", f"give the bot with --target MODULE[:ATTR] or set {TARGET_ENV}")
    try:
        user = normalize_phone(args.user)
        bot = load_bot(args.target)
    except (InvalidPhoneNumber, BotLoadError) as exc:
        return fail("transcript", str(exc))
    store = _store(bot, "transcript", fail)
    if isinstance(store, int):
        return store

    async def read() -> list[TranscriptEntry]:
        await store.open()
        try:
            page = await store.transcript(user, limit=max(1, args.limit))
            return list(page.entries)
        finally:
            await store.close()

    try:
        entries = asyncio.run(read())
    except StorageError as exc:
        return fail("transcript", str(exc))
    out: TextIO = sys.stdout
    if not entries:
        print(f"no transcript for ...{user[-4:]}", file=out)
        return 0
    print(f"transcript of +{user} ({len(entries)} entries, oldest first)", file=out)
    for line in transcript_lines(entries):
        print(line, file=out)
    return 0


def _funnel(args: argparse.Namespace, load_bot: LoadBot, fail: Fail) -> int:
    from botkit._runtime import Runtime
    from botkit.storage.base import StorageError
    from botkit.storage.memory import MemoryStore

    try:
        bot = load_bot(args.target)
    except BotLoadError as exc:
        return fail("funnel", str(exc))
    flows = Runtime(bot, MemoryStore()).flows
    if not flows:
        return fail("funnel", f"the bot {bot.name!r} has no flows")
    if args.metrics:
        import httpx

        try:
            answer = httpx.get(args.metrics, timeout=10.0)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            return fail("funnel", f"could not read {args.metrics}: {exc}")
        funnels = funnels_from_metrics(answer.text)
        print("since the service started (from its metrics)")
        print()
        unit = "times"
    else:
        if not args.days > 0:
            return fail("funnel", "--days must be positive")
        store = _store(bot, "funnel", fail)
        if isinstance(store, int):
            return store
        since = datetime.now(UTC).timestamp() - args.days * 86_400

        async def read() -> dict[str, Funnel]:
            await store.open()
            try:
                return funnels_from_entries([item async for item in store.transcripts_since(since)])
            finally:
                await store.close()

        try:
            funnels = asyncio.run(read())
        except StorageError as exc:
            return fail("funnel", str(exc))
        print(f"the last {args.days:g} days (from the transcripts)")
        print()
        unit = "users"
    for line in funnel_lines(flows, funnels, unit=unit):
        print(line)
    return 0
