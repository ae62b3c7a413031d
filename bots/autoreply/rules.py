"""The auto-reply rules file: reading it, checking it, and asking it questions.

The format is documented in ``rules.example.toml`` beside this module. Every
problem is reported with the file and the line it is on, all at once::

    RulesError: rules.toml, line 14: [[rules]] #2: regex: bad regular expression: ...
    rules.toml, line 20: [hours] sat: "10-14" is not a time range like "10:00-14:00"

``tomllib`` knows where a syntax error is but not where a key is, so the
lines of keys are found by a small scan of the file (:class:`_KeyLines`).
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botkit import Filter, Keywords, Regex

if TYPE_CHECKING:
    from botkit import Context

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOUR = 3600.0
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_YEARLY = re.compile(r"^(\d{2})-(\d{2})$")
_HOURS_KEYS = {"out_of_hours_reply", "timezone", "closed_dates"}

Path_ = tuple[str | int, ...]
"""Where a value is in the file: ``("rules", 1, "regex")`` is the 2nd rule's regex."""


class RulesError(ValueError):
    """The rules file cannot be used; the message has one line per problem, with its line."""


# -- what a valid file becomes -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rules]]`` entry: keywords or a regex, and the reply to send.

    ``reply`` is a format string: a regex rule may use its named groups
    (``{id}``); ``{{`` and ``}}`` are literal braces.
    """

    reply: str
    keywords: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    cooldown: float | None = None
    """Seconds; None means the service's ``cooldown_hours``."""
    line: int | None = None
    _filter: Filter | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: a rule is tried on every message.
        made = Regex(self.pattern) if self.pattern is not None else Keywords(*self.keywords)
        object.__setattr__(self, "_filter", made)

    @property
    def filter(self) -> Filter:
        """The botkit filter that decides whether a message matches."""
        assert self._filter is not None
        return self._filter

    def render(self, groups: Mapping[str, str | None]) -> str:
        """The reply, with the regex's named groups filled in."""
        if self.pattern is None:
            return self.reply
        return self.reply.format_map({k: v or "" for k, v in groups.items()})

    @property
    def name(self) -> str:
        """A name for logs: ``rule at line 12``."""
        return f"rule at line {self.line}" if self.line else "rule"


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening hours per weekday, in a time zone, and the dates it is closed.

    ``week[0]`` (Monday) to ``week[6]`` hold ``(start, end)`` minute pairs; an
    ``end`` at or before ``start`` runs past midnight into the next day.
    ``closed`` holds dates closed all day; ``closed_yearly`` ``(month, day)``
    pairs closed every year.
    """

    zone: ZoneInfo
    week: tuple[tuple[tuple[int, int], ...], ...]
    closed: frozenset[date] = frozenset()
    closed_yearly: frozenset[tuple[int, int]] = frozenset()

    def is_closed_on(self, day: date) -> bool:
        """True when ``day`` (a local date) is one of the closed dates."""
        return day in self.closed or (day.month, day.day) in self.closed_yearly

    def is_open(self, at: float) -> bool:
        """True when ``at`` (unix seconds) falls within the opening hours."""
        local = datetime.fromtimestamp(at, self.zone)
        minute = local.hour * 60 + local.minute
        today, yesterday = local.weekday(), (local.weekday() - 1) % 7
        if not self.is_closed_on(local.date()):
            for start, end in self.week[today]:
                if start <= minute < end or (end <= start and minute >= start):
                    return True
        # Last night's hours running past midnight, unless last night was closed.
        if self.is_closed_on(local.date() - timedelta(days=1)):
            return False
        return any(end <= start and minute < end for start, end in self.week[yesterday])


@dataclass(frozen=True, slots=True)
class Rules:
    """A checked rules file."""

    rules: tuple[Rule, ...] = ()
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    cooldown: float = 0.0
    """Seconds during which the same auto-reply is not sent again to a user."""
    default_reply: str | None = None
    hours: BusinessHours | None = None
    out_of_hours_reply: str | None = None
    source: str = "<rules>"

    @property
    def longest_cooldown(self) -> float:
        """The longest cooldown of any reply: older records can be forgotten."""
        return max([self.cooldown, *(r.cooldown for r in self.rules if r.cooldown is not None)])

    def is_open(self, at: float) -> bool:
        """True within business hours (always, when the file gives none)."""
        return self.hours is None or self.hours.is_open(at)

    def choose(self, ctx: Context) -> Choice:
        """What the service answers to ``ctx``'s message, before the cooldown is applied."""
        for rule in self.rules:
            found = rule.filter.check(ctx)
            if found:
                groups = found if isinstance(found, Mapping) else {}
                named = {k: v for k, v in groups.items() if isinstance(v, str | None)}
                cooldown = self.cooldown if rule.cooldown is None else rule.cooldown
                return Choice(rule.render(named), rule.name, cooldown)
        if self.is_open(ctx.now):
            return Choice(self.default_reply, "default_reply", self.cooldown)
        return Choice(self.out_of_hours_reply, "out_of_hours_reply", self.cooldown)


@dataclass(frozen=True, slots=True)
class Choice:
    """The answer :meth:`Rules.choose` picked: the text (None: stay silent) and why."""

    text: str | None
    source: str
    """``rule at line 12``, ``default_reply`` or ``out_of_hours_reply``."""
    cooldown: float


def reply_key(text: str) -> str:
    """A short stable key of a reply's text, to remember when it was last sent."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- loading -------------------------------------------------------------------


def load_rules(path: str | Path) -> Rules:
    """Read and check the rules file at ``path``; :class:`RulesError` says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: no such rules file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from None
    return parse_rules(text, source=str(path))


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Check the TOML ``text`` of a rules file; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(_syntax_error(source, exc)) from None
    return _Checker(document, _KeyLines(text), source).check()


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        where = f"line {found[1]}, column {found[2]}"
        message = message[: found.start()]
    else:
        where = "end of file" if "end of document" in message else "somewhere"
        message = re.sub(r"\s*\(at end of document\)$", "", message)
    return f"{source}, {where}: not valid TOML: {message}"


class _Checker:
    """Turns the parsed document into :class:`Rules`, collecting every problem."""

    def __init__(self, document: dict[str, Any], lines: _KeyLines, source: str) -> None:
        self.document = document
        self.lines = lines
        self.source = source
        self.problems: list[tuple[int, str]] = []

    def problem(self, path: Path_, message: str) -> None:
        line = self.lines.find(path)
        self.problems.append((line or 0, f"{_describe(path)}: {message}" if path else message))

    def check(self) -> Rules:
        self.unknown_keys((), self.document, {"service", "hours", "rules"})
        service = self.table(("service",))
        self.unknown_keys(("service",), service, {"timezone", "cooldown_hours", "default_reply"})
        zone = self.zone(service.get("timezone", "UTC"))
        cooldown = self.hours_value(("service", "cooldown_hours"), service.get("cooldown_hours"))
        default_reply = self.reply(("service", "default_reply"), service.get("default_reply"))
        hours, out_of_hours = self.business_hours(zone)
        rules = self.rules()
        if not (
            self.document.get("rules") or "default_reply" in service or "hours" in self.document
        ):
            self.problem((), "no [[rules]], no default_reply and no [hours]: nothing to answer")
        if self.problems:
            lines = [
                f"{self.source}, line {line}: {message}" if line else f"{self.source}: {message}"
                for line, message in sorted(self.problems, key=lambda p: p[0])
            ]
            raise RulesError("\n".join(lines))
        return Rules(
            rules=tuple(rules),
            zone=zone or ZoneInfo("UTC"),
            cooldown=cooldown or 0.0,
            default_reply=default_reply,
            hours=hours,
            out_of_hours_reply=out_of_hours,
            source=self.source,
        )

    # -- pieces ------------------------------------------------------------------

    def table(self, path: Path_) -> dict[str, Any]:
        value = self.document.get(str(path[0]), {})
        if not isinstance(value, dict):
            self.problem(path, f"must be a table ([{path[0]}]), not {_kind(value)}")
            return {}
        return value

    def unknown_keys(self, path: Path_, table: Mapping[str, Any], known: set[str]) -> None:
        for key in table:
            if key not in known:
                self.problem((*path, key), f"unknown key (known here: {', '.join(sorted(known))})")

    def zone(self, name: object, path: Path_ = ("service", "timezone")) -> ZoneInfo | None:
        if not isinstance(name, str) or not name:
            self.problem(path, f'must be a time zone name like "Europe/Moscow", not {name!r}')
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(
                path,
                f'unknown time zone {name!r}: use an IANA name such as "Europe/Moscow" '
                "(if it is one, the system lacks time zone data: pip install tzdata)",
            )
            return None

    def hours_value(self, path: Path_, value: object) -> float | None:
        """A ``cooldown_hours`` value in seconds (None when absent or wrong)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.problem(path, f"must be a number of hours, 0 or more, not {value!r}")
            return None
        return float(value) * HOUR

    def reply(
        self, path: Path_, value: object, groups: set[str] | None = None, required: bool = False
    ) -> str | None:
        """A reply text; its ``{placeholders}`` must be among ``groups``."""
        if value is None:
            if required:
                self.problem(path, "missing: every rule needs the reply to send")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(path, f"must be a non-empty string, not {value!r}")
            return None
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            self.problem(path, f"{exc} (write {{{{ and }}}} for literal braces)")
            return None
        allowed = groups or set()
        for name in fields:
            if name not in allowed:
                offer = (
                    f"the regex's named groups are {', '.join(sorted(allowed))}"
                    if allowed
                    else "only a regex rule's named groups (?P<name>...) can be used"
                )
                self.problem(path, f"{{{name}}} is not something to fill in: {offer}")
                return None
        if groups is None:
            # Nothing to fill in: unescape {{ and }} once, here.
            return value.format()
        return value

    def business_hours(self, zone: ZoneInfo | None) -> tuple[BusinessHours | None, str | None]:
        if "hours" not in self.document:
            return None, None
        table = self.table(("hours",))
        out_of_hours = self.reply(("hours", "out_of_hours_reply"), table.get("out_of_hours_reply"))
        if "timezone" in table:  # the hours' own zone, else the service's
            zone = self.zone(table["timezone"], ("hours", "timezone"))
        closed, yearly = self.closed_dates(table.get("closed_dates", []))
        week: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        given: dict[int, str] = {}
        for key, value in table.items():
            if key in _HOURS_KEYS:
                continue
            path: Path_ = ("hours", key)
            days = _days(key)
            if days is None:
                self.problem(
                    path,
                    f"{key!r} is not a day or a day range: use mon, tue, wed, thu, fri, sat, "
                    "sun or a range like mon-fri (or out_of_hours_reply, timezone, "
                    "closed_dates)",
                )
                continue
            for day in days:
                if day in given:
                    self.problem(path, f"{DAYS[day]} is already given by {given[day]!r}")
                given[day] = key
            for interval in self.intervals(path, value):
                for day in days:
                    week[day].append(interval)
        if not given:
            self.problem(("hours",), 'lists no days: add e.g. mon-fri = "09:00-18:00"')
        if out_of_hours is None and "out_of_hours_reply" not in table:
            self.problem(("hours",), "out_of_hours_reply is missing: what to answer when closed")
        if zone is None:
            return None, out_of_hours
        week_hours = tuple(tuple(d) for d in week)
        return BusinessHours(zone, week_hours, closed, yearly), out_of_hours

    def closed_dates(self, value: object) -> tuple[frozenset[date], frozenset[tuple[int, int]]]:
        """``closed_dates``: ``"2026-01-01"`` (or a TOML date) once, ``"12-31"`` every year."""
        path: Path_ = ("hours", "closed_dates")
        if not isinstance(value, list):
            self.problem(path, f'must be a list like ["2026-01-01", "12-31"], not {value!r}')
            return frozenset(), frozenset()
        once: set[date] = set()
        yearly: set[tuple[int, int]] = set()
        for item in value:
            if isinstance(item, date) and not isinstance(item, datetime):
                once.add(item)
                continue
            text = item.strip() if isinstance(item, str) else None
            try:
                if text is not None and _YEARLY.match(text):
                    month, day = (int(part) for part in text.split("-"))
                    date(2000, month, day)  # a leap year: 02-29 exists
                    yearly.add((month, day))
                    continue
                if text is not None:
                    once.add(date.fromisoformat(text))
                    continue
            except ValueError:
                pass
            self.problem(
                path,
                f'{item!r} is not a date: write "2026-01-01" (that day) or "12-31" (every year)',
            )
        return frozenset(once), frozenset(yearly)

    def intervals(self, path: Path_, value: object) -> list[tuple[int, int]]:
        if value == "closed":
            return []
        items = value if isinstance(value, list) else [value]
        out: list[tuple[int, int]] = []
        for item in items:
            found = _RANGE.match(item) if isinstance(item, str) else None
            if found is None:
                self.problem(
                    path,
                    f'{item!r} is not a time range like "09:00-18:00" '
                    '(or a list of them, or "closed")',
                )
                continue
            h1, m1, h2, m2 = (int(g) for g in found.groups())
            if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
                self.problem(path, f"{item!r} has a time that does not exist")
                continue
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start == end:
                self.problem(path, f"{item!r} opens and closes at the same time")
                continue
            out.append((start, end))
        return out

    def rules(self) -> list[Rule]:
        entries = self.document.get("rules", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.problem(("rules",), "must be [[rules]] tables")
            return []
        out = []
        for index, entry in enumerate(entries):
            rule = self.rule(index, entry)
            if rule is not None:
                out.append(rule)
        return out

    def rule(self, index: int, entry: dict[str, Any]) -> Rule | None:
        path: Path_ = ("rules", index)
        self.unknown_keys(path, entry, {"keywords", "regex", "reply", "cooldown_hours"})
        cooldown = self.hours_value((*path, "cooldown_hours"), entry.get("cooldown_hours"))
        line = self.lines.find(path)
        has_keywords, has_regex = "keywords" in entry, "regex" in entry
        if has_keywords == has_regex:
            which = "both" if has_keywords else "neither"
            self.problem(path, f"give keywords or regex (exactly one); this rule has {which}")
            self.reply((*path, "reply"), entry.get("reply"), required=True)
            return None
        if has_keywords:
            words = entry["keywords"]
            if (
                not isinstance(words, list)
                or not words
                or not all(isinstance(w, str) and w.strip() for w in words)
            ):
                self.problem(
                    (*path, "keywords"), f'must be a list of words like ["price"], not {words!r}'
                )
                words = None
            reply = self.reply((*path, "reply"), entry.get("reply"), required=True)
            if words is None or reply is None:
                return None
            return Rule(reply, keywords=tuple(words), cooldown=cooldown, line=line)
        pattern = self.regex((*path, "regex"), entry["regex"])
        if pattern is None:
            # Its placeholders cannot be checked against a regex that does not compile.
            if not isinstance(entry.get("reply"), str):
                self.reply((*path, "reply"), entry.get("reply"), required=True)
            return None
        groups = set(pattern.groupindex)
        reply = self.reply((*path, "reply"), entry.get("reply"), groups=groups, required=True)
        if reply is None:
            return None
        return Rule(reply, pattern=pattern, cooldown=cooldown, line=line)

    def regex(self, path: Path_, value: object) -> re.Pattern[str] | None:
        if not isinstance(value, str) or not value:
            self.problem(path, f"must be a regular expression string, not {value!r}")
            return None
        try:
            return re.compile(value, re.IGNORECASE)
        except re.error as exc:
            self.problem(path, f"bad regular expression: {exc}")
            return None


def _days(key: str) -> list[int] | None:
    """``mon`` -> [0]; ``mon-fri`` -> [0..4]; ``fri-mon`` -> [4, 5, 6, 0]; else None."""
    first, _, last = key.strip().lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        return None
    start = DAYS.index(first)
    end = DAYS.index(last) if last else start
    return [(start + i) % 7 for i in range((end - start) % 7 + 1)]


def _describe(path: Path_) -> str:
    """A path as the user wrote it: ``("rules", 1, "regex")`` -> ``[[rules]] #2: regex``."""
    if path[0] == "rules" and len(path) > 1:
        head = f"[[rules]] #{int(path[1]) + 1}"
        return f"{head}: {'.'.join(str(p) for p in path[2:])}" if len(path) > 2 else head
    if len(path) == 1:
        return f"[{path[0]}]" if path[0] in ("service", "hours") else str(path[0])
    return f"[{path[0]}] {'.'.join(str(p) for p in path[1:])}"


def _kind(value: object) -> str:
    names: dict[type, str] = {str: "a string", list: "a list", dict: "a table"}
    return names.get(type(value), repr(value))


# -- where keys are ----------------------------------------------------------------

_KEY_PART = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*(\.|=|\]\]|\])""")


class _KeyLines:
    """The line of each table header and key of a TOML text, by path.

    A light scan, not a parser: it follows ``[table]`` and ``[[array]]``
    headers and ``key = value`` lines (dotted and quoted keys included) and
    skips multi-line strings. What it cannot place is reported without a line.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Path_, int] = {}
        counts: dict[Path_, int] = {}
        prefix: Path_ = ()
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if in_string in line:
                    in_string = None
                continue
            stripped = line.lstrip()
            if stripped.startswith("["):
                double = stripped.startswith("[[")
                keys = _keys(stripped[2 if double else 1 :], "]]" if double else "]")
                if keys is None:
                    continue
                if double:
                    index = counts.get(keys, 0)
                    counts[keys] = index + 1
                    prefix = (*keys, index)
                else:
                    prefix = keys
                self.lines.setdefault(prefix, number)
                continue
            keys = _keys(line, "=")
            if keys is None:
                continue
            self.lines.setdefault((*prefix, *keys), number)
            value = line.split("=", 1)[1]
            for quote in ('"""', "'''"):
                if value.count(quote) % 2 == 1:
                    in_string = quote
                    break

    def find(self, path: Path_) -> int | None:
        """The line of ``path``, else of the closest enclosing table that has one."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None


def _keys(text: str, terminator: str) -> tuple[str, ...] | None:
    """The dotted key at the start of ``text`` that ends with ``terminator``, if any."""
    parts: list[str] = []
    position = 0
    while True:
        found = _KEY_PART.match(text, position)
        if found is None:
            return None
        raw = found[1]
        parts.append(raw[1:-1] if raw[0] in "\"'" else raw)
        position = found.end()
        if found[2] == terminator:
            return tuple(parts)
        if found[2] != ".":
            return None


def counted(number: int, noun: str) -> str:
    """``1 rule``, ``2 rules``: a count and its noun, singular for one."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
