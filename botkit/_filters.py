"""Filters: small predicates that decide whether a handler takes an event.

Combine them with ``&``, ``|`` and ``~``::

    from botkit import Predicate, Text, Regex, MediaType

    @bot.text(Text("yes", "y", ignore_case=True) | Regex(r"^ok\\b"))
    @bot.media(MediaType("image") & ~Mime("image/png"))
    @bot.text(Predicate(lambda m: m.text.startswith("/")))

In a decorator, strings are exact texts and several strings are any of them
(``@bot.text("hi", "hello")``); filter objects side by side must all pass
(``@bot.text(Keywords("price"), ~Keywords("not"))``).

A filter answers True/False, or a dict of values for the handler (``Regex``
gives its match and named groups, ``Choices`` the chosen item); a handler
argument no filter gives is a :class:`~botkit.DefinitionError` where the
handler is written. Plain (sync) predicates run inline; only ``async def``
predicates are awaited.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol, TypeAlias

from botkit._events import Event, MediaKind, MediaMessage, StatusUpdate, TextMessage


class HasEvent(Protocol):
    """What a filter reads of the turn's :class:`~botkit.Context`: the event."""

    @property
    def event(self) -> Event: ...


FilterResult: TypeAlias = bool | Mapping[str, Any]


class Filter:
    """Base class of filters. Subclasses implement :meth:`check` (or :meth:`check_async`)."""

    #: True when the filter must be awaited (decided once, at construction).
    is_async: bool = False

    #: The names of the values the filter gives the handler when it passes
    #: (``Regex``: ``match`` and its named groups); None when it cannot say in
    #: advance (a custom predicate may return any dict). A handler argument
    #: that no filter gives is a :class:`~botkit.DefinitionError`.
    provides: frozenset[str] | None = None

    def check(self, ctx: HasEvent) -> FilterResult:
        """Decide synchronously. Override this, or :meth:`check_async` and set ``is_async``."""
        raise NotImplementedError

    async def check_async(self, ctx: HasEvent) -> FilterResult:
        """Decide, awaiting when needed."""
        return self.check(ctx)

    def __and__(self, other: object) -> Filter:
        return And(self, as_filter(other))

    def __rand__(self, other: object) -> Filter:
        return And(as_filter(other), self)

    def __or__(self, other: object) -> Filter:
        return Or(self, as_filter(other))

    def __ror__(self, other: object) -> Filter:
        return Or(as_filter(other), self)

    def __invert__(self) -> Filter:
        return Not(self)


def _merge(a: FilterResult, b: FilterResult) -> FilterResult:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return {**a, **b}
    if isinstance(a, Mapping):
        return a
    return b


class And(Filter):
    """Both filters must pass; the values they give are merged."""

    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right
        self.is_async = left.is_async or right.is_async
        if left.provides is not None and right.provides is not None:
            self.provides = left.provides | right.provides

    def check(self, ctx: HasEvent) -> FilterResult:
        first = self.left.check(ctx)
        if not first:
            return False
        second = self.right.check(ctx)
        return _merge(first, second) if second else False

    async def check_async(self, ctx: HasEvent) -> FilterResult:
        first = await self.left.check_async(ctx)
        if not first:
            return False
        second = await self.right.check_async(ctx)
        return _merge(first, second) if second else False

    def __repr__(self) -> str:
        return f"({self.left!r} & {self.right!r})"


class Or(Filter):
    """Either filter passes; the first that passes gives its values."""

    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right
        self.is_async = left.is_async or right.is_async
        # Only what both sides give is sure to arrive.
        if left.provides is not None and right.provides is not None:
            self.provides = left.provides & right.provides

    def check(self, ctx: HasEvent) -> FilterResult:
        return self.left.check(ctx) or self.right.check(ctx)

    async def check_async(self, ctx: HasEvent) -> FilterResult:
        return (await self.left.check_async(ctx)) or (await self.right.check_async(ctx))

    def __repr__(self) -> str:
        return f"({self.left!r} | {self.right!r})"


class Not(Filter):
    """The filter must not pass."""

    provides = frozenset[str]()

    def __init__(self, inner: Filter) -> None:
        self.inner = inner
        self.is_async = inner.is_async

    def check(self, ctx: HasEvent) -> FilterResult:
        return not self.inner.check(ctx)

    async def check_async(self, ctx: HasEvent) -> FilterResult:
        return not await self.inner.check_async(ctx)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


def _normalise(text: str, ignore_case: bool, ignore_space: bool) -> str:
    if ignore_space:
        text = " ".join(text.split())
    if ignore_case:
        text = text.casefold()
    return text


def _text_of(ctx: HasEvent) -> str | None:
    event = ctx.event
    if isinstance(event, TextMessage):
        return event.text
    if isinstance(event, MediaMessage):
        return event.caption
    return None


class Text(Filter):
    """The text is exactly one of the given values.

    ``ignore_case`` and ``ignore_space`` (both on by default) compare
    case-insensitively and with surrounding and repeated spaces collapsed:
    ``Text("yes")`` takes "Yes", " YES " but not "yes please".
    """

    provides = frozenset[str]()

    def __init__(self, *values: str, ignore_case: bool = True, ignore_space: bool = True) -> None:
        if not values or not all(isinstance(v, str) for v in values):
            raise TypeError("Text(...) takes one or more strings")
        self.ignore_case, self.ignore_space = ignore_case, ignore_space
        self.values = frozenset(_normalise(v, ignore_case, ignore_space) for v in values)

    def check(self, ctx: HasEvent) -> FilterResult:
        text = _text_of(ctx)
        return text is not None and (
            _normalise(text, self.ignore_case, self.ignore_space) in self.values
        )

    def __repr__(self) -> str:
        return f"Text({', '.join(sorted(self.values))})"


class Keywords(Filter):
    """Any of the words appears in the text as a whole word (case-insensitive).

    ``Keywords("menu", "price list")`` takes "show me the MENU please".
    """

    provides = frozenset[str]()

    def __init__(self, *words: str) -> None:
        if not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise TypeError("Keywords(...) takes one or more non-empty strings")
        alternatives = "|".join(re.escape(" ".join(w.split())) for w in words)
        self.words = words
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def check(self, ctx: HasEvent) -> FilterResult:
        text = _text_of(ctx)
        return text is not None and self._pattern.search(" ".join(text.split())) is not None

    def __repr__(self) -> str:
        return f"Keywords{self.words!r}"


class Regex(Filter):
    """The text matches the pattern (``re.search``).

    Case-sensitive, as :mod:`re` is, unlike ``Text`` and ``Keywords``: pass
    ``ignore_case=True`` (or the ``(?i)`` inline flag) to take "Order 7" with
    ``Regex(r"order (?P<number>\\d+)", ignore_case=True)``.

    The handler gets the match as ``ctx.match``, and named groups as keyword
    arguments when it declares them::

        @bot.text(Regex(r"order (?P<number>\\d+)", ignore_case=True))
        async def status(ctx, number: str): ...
    """

    def __init__(
        self, pattern: str | re.Pattern[str], flags: int = 0, *, ignore_case: bool = False
    ) -> None:
        if ignore_case:
            flags |= re.IGNORECASE
        if isinstance(pattern, re.Pattern):
            self.pattern = re.compile(pattern.pattern, pattern.flags | flags) if flags else pattern
        elif isinstance(pattern, str):
            self.pattern = re.compile(pattern, flags)
        else:
            raise TypeError("Regex(...) takes a pattern string or a compiled re.Pattern")
        self.provides = frozenset({"match", *self.pattern.groupindex})

    def check(self, ctx: HasEvent) -> FilterResult:
        text = _text_of(ctx)
        if text is None:
            return False
        found = self.pattern.search(text)
        if found is None:
            return False
        return {"match": found, **found.groupdict()}

    def __repr__(self) -> str:
        flag = ", ignore_case=True" if self.pattern.flags & re.IGNORECASE else ""
        return f"Regex({self.pattern.pattern!r}{flag})"


class Choices(Filter):
    """A numbered menu: renders itself, and takes the user's pick by number or by name.

    ::

        PIZZAS = Choices("Margherita", "Pepperoni", "Veggie")

        await ctx.reply(f"What would you like?\\n{PIZZAS}")   # 1) Margherita ...

        @bot.text(PIZZAS)
        async def picked(ctx: Context, choice: str) -> None:   # "Pepperoni"
            ...

    It takes "2", "2)", "2.", "#2" and the item's name compared as ``Text``
    does ("  pepperoni " takes "Pepperoni"); the handler gets the item as
    written here, in the argument named ``name`` (``"choice"`` by default).
    A number outside the menu and any other text do not match: register a
    handler after it for those.
    """

    def __init__(self, *items: str, name: str = "choice") -> None:
        if not items or not all(isinstance(i, str) and i.strip() for i in items):
            raise TypeError("Choices(...) takes one or more non-empty strings")
        if not name.isidentifier():
            raise TypeError(f"Choices(name={name!r}): the name must be a Python identifier")
        keys = [_normalise(i, True, True) for i in items]
        if len(set(keys)) != len(keys):
            raise TypeError(f"Choices{items!r}: two items differ only in case or spaces")
        self.items = items
        self.name = name
        self.provides = frozenset({name})
        self._by_key = dict(zip(keys, items, strict=True))

    @property
    def menu(self) -> str:
        """The numbered menu, one item a line: ``1) Margherita``..."""
        return "\n".join(f"{n}) {item}" for n, item in enumerate(self.items, start=1))

    def __str__(self) -> str:
        return self.menu

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def pick(self, answer: str) -> str | None:
        """The item ``answer`` names, by name or by number; None when it names none.

        A name wins over a number: in ``Choices("5", "10")``, "10" is the item "10".
        """
        named = self._by_key.get(_normalise(answer, True, True))
        if named is not None:
            return named
        number = _MENU_NUMBER.fullmatch(answer)
        if number is None:
            return None
        index = int(number.group(1))
        return self.items[index - 1] if 1 <= index <= len(self.items) else None

    def check(self, ctx: HasEvent) -> FilterResult:
        text = _text_of(ctx)
        chosen = None if text is None else self.pick(text)
        return False if chosen is None else {self.name: chosen}

    def __repr__(self) -> str:
        return f"Choices{self.items!r}"


_MENU_NUMBER = re.compile(r"\s*#?\s*(\d{1,6})\s*[).]?\s*")


class TimerIs(Filter):
    """Passes for the timers with one of these names (``@router.timer("nudge")`` uses it)."""

    provides = frozenset[str]()

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def check(self, ctx: HasEvent) -> FilterResult:
        """True when the turn runs one of the named timers."""
        timer = getattr(ctx.event, "timer", None)
        return timer is not None and timer.name in self.names

    def __repr__(self) -> str:
        return f"TimerIs({', '.join(repr(n) for n in sorted(self.names))})"


class MediaType(Filter):
    """The media is one of the given kinds (image, video, audio, voice, document, sticker)."""

    provides = frozenset[str]()

    def __init__(self, *kinds: str | MediaKind) -> None:
        try:
            self.kinds = frozenset(MediaKind(k) for k in kinds)
        except ValueError as exc:
            known = ", ".join(k.value for k in MediaKind)
            raise ValueError(f"{exc}; media kinds are {known}") from None
        if not self.kinds:
            raise TypeError("MediaType(...) takes one or more media kinds")

    def check(self, ctx: HasEvent) -> FilterResult:
        event = ctx.event
        return isinstance(event, MediaMessage) and event.media.kind in self.kinds

    def __repr__(self) -> str:
        return f"MediaType({', '.join(sorted(self.kinds))})"


class Mime(Filter):
    """The media's MIME type matches one of the glob patterns.

    ``Mime("image/*")``, ``Mime("application/pdf", "application/msword")``.
    """

    provides = frozenset[str]()

    def __init__(self, *patterns: str) -> None:
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise TypeError("Mime(...) takes one or more MIME patterns such as 'image/*'")
        self.patterns = tuple(p.lower() for p in patterns)

    def check(self, ctx: HasEvent) -> FilterResult:
        event = ctx.event
        if not isinstance(event, MediaMessage):
            return False
        mime = event.media.mime_type.split(";")[0].strip().lower()
        return any(fnmatch.fnmatchcase(mime, p) for p in self.patterns)

    def __repr__(self) -> str:
        return f"Mime{self.patterns!r}"


class StatusIs(Filter):
    """A delivery status is one of the given names (case-insensitive): ``StatusIs("read")``."""

    provides = frozenset[str]()

    def __init__(self, *statuses: str) -> None:
        if not statuses or not all(isinstance(s, str) for s in statuses):
            raise TypeError("StatusIs(...) takes one or more status names such as 'delivered'")
        self.statuses = frozenset(s.lower() for s in statuses)

    def check(self, ctx: HasEvent) -> FilterResult:
        event = ctx.event
        return isinstance(event, StatusUpdate) and event.status in self.statuses

    def __repr__(self) -> str:
        return f"StatusIs({', '.join(sorted(self.statuses))})"


class ErrorCode(Filter):
    """A delivery status carries one of the given error codes: ``ErrorCode(2305)``."""

    provides = frozenset[str]()

    def __init__(self, *codes: int) -> None:
        if not codes or not all(isinstance(c, int) for c in codes):
            raise TypeError("ErrorCode(...) takes one or more integer codes such as 2312")
        self.codes = frozenset(codes)

    def check(self, ctx: HasEvent) -> FilterResult:
        event = ctx.event
        return isinstance(event, StatusUpdate) and event.error_code in self.codes

    def __repr__(self) -> str:
        return f"ErrorCode({', '.join(map(str, sorted(self.codes)))})"


class Predicate(Filter):
    """A custom predicate, sync or async, on the event (and the context if it takes two arguments).

    ``Predicate(lambda m: len(m.text) > 100)`` or
    ``Predicate(is_vip)`` with ``async def is_vip(message, ctx) -> bool``.
    """

    def __init__(self, predicate: Callable[..., bool | Awaitable[bool] | Mapping[str, Any]]):
        if not callable(predicate):
            raise TypeError(f"Predicate(...) takes a function, not {type(predicate).__name__}")
        self.predicate = predicate
        self.is_async = inspect.iscoroutinefunction(predicate) or inspect.iscoroutinefunction(
            getattr(predicate, "__call__", None)  # noqa: B004 - callable objects
        )
        arity = _positional_arity(predicate)
        if arity == 0:
            raise TypeError(
                f"Predicate(...) takes a function of (message) or (message, ctx); "
                f"{getattr(predicate, '__qualname__', predicate)!r} takes no arguments"
            )
        self._with_ctx = arity >= 2

    def _call(self, ctx: HasEvent) -> Any:
        if self._with_ctx:
            return self.predicate(ctx.event, ctx)
        return self.predicate(ctx.event)

    def check(self, ctx: HasEvent) -> FilterResult:
        result = self._call(ctx)
        if inspect.isawaitable(result):
            raise TypeError(f"{self!r} returned an awaitable from a sync check; use async def")
        return _as_result(result)

    async def check_async(self, ctx: HasEvent) -> FilterResult:
        result = self._call(ctx)
        if inspect.isawaitable(result):
            result = await result
        return _as_result(result)

    def __repr__(self) -> str:
        return f"Predicate({getattr(self.predicate, '__qualname__', self.predicate)!r})"


def _as_result(value: Any) -> FilterResult:
    if isinstance(value, Mapping):
        return value
    return bool(value)


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return 2
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def as_filter(value: object) -> Filter:
    """Turn what a decorator was given into a filter.

    A :class:`Filter` stays as it is, a string becomes ``Text(value)``, a
    compiled pattern becomes ``Regex``, a function becomes ``Predicate(function)``.
    Anything else raises TypeError.
    """
    if isinstance(value, Filter):
        return value
    if isinstance(value, str):
        return Text(value)
    if isinstance(value, re.Pattern):
        return Regex(value)
    if callable(value):
        return Predicate(value)
    raise TypeError(
        f"{value!r} ({type(value).__name__}) is not a filter: use a string, a compiled regex, "
        "a function, or a botkit filter such as Text, Keywords, Regex, MediaType, Mime or Predicate"
    )


def all_of(filters: tuple[Filter, ...]) -> Filter | None:
    """Combine a decorator's filters with AND (None when there are none)."""
    if not filters:
        return None
    combined = filters[0]
    for f in filters[1:]:
        combined = And(combined, f)
    return combined
