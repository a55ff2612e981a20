"""The fields a rule can read, and how each is read from a :class:`Subject`.

Paths are dotted; the first part is the namespace:

``traits.<name>[.<key>...]``
    a trait value (nested keys dig into objects and lists).
``context.<key>[.<key>...]``
    the request context built by the enricher plugins, e.g. ``context.utm.source``,
    ``context.device.type``, ``context.country``, ``context.hour``, ``context.weekday``,
    ``context.path``, ``context.referrer_host``, ``context.authenticated``.
``behaviour.<metric>``
    ``visits`` (sessions), ``page_views``, each also as ``visits_<N>d`` over the last N days;
    ``first_seen_days`` / ``last_seen_days`` (days since), ``tenure_days`` (same as
    first_seen_days), ``returning`` (more than one visit), ``new`` (at most one),
    ``categories`` (number of categories with affinity), ``top_category``.
``events.<event name>.<metric>``
    ``count``, ``count_<N>d``, ``last_days`` and ``first_days`` (days since; missing if never).
``rfm.<metric>``
    ``recency_days`` (days since the last purchase; missing if none), ``frequency``
    (purchases), ``monetary`` (revenue), each of those two also ``_<N>d``; ``aov`` (average
    order value).
``affinity.<category>``
    the time-decayed interest score (0 when none).
``identity.<key>``
    ``known`` (has a user id or an email), ``user_id``.

``N`` is one of the rolling windows: 1, 7, 30, 90 or 365. Anything else is refused when the
rule is loaded, with the place and the list of what is allowed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..clock import DAY
from ..errors import RuleError
from ..profile import WINDOWS, DayCounter
from .compiler import MISSING, Getter, Predicate
from .subject import Subject

__all__ = ["NAMESPACES", "profile_fields"]

_WINDOWED = re.compile(r"^(?P<base>[a-z_]+?)_(?P<n>\d+)d$")


def _dig(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list) and key.isdigit():
            index = int(key)
            value = value[index] if index < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _window(n_text: str, where: str) -> int:
    n = int(n_text)
    if n not in WINDOWS:
        raise RuleError(where, f"windows are {', '.join(map(str, WINDOWS))} days; got {n}")
    return n


def _days_since(ts: float | None, now: float) -> Any:
    return MISSING if ts is None else max(0.0, (now - ts) / DAY)


# --------------------------------------------------------------------------------------------
# Fused predicates (see FieldResolver in the compiler): the commonest conditions — a number
# compared with a trait, a context value or a behaviour window; a string trait or context
# value tested with $eq or $in — read their field in their own body, which halves the calls
# per condition. Each handles only the plain scalar case and hands every other value (arrays,
# missing fields, other types) to ``generic``, the compiler's own predicate, so the answers
# are the same by construction (a property test compares them on arbitrary values).
# --------------------------------------------------------------------------------------------

_NUMERIC: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
Fuse = Callable[[str, Any, Predicate], "Predicate | None"]


def _string_set(op: str, arg: Any) -> frozenset[str] | None:
    """The strings a scalar string must be among for ``$eq``/``$in``; None: not fusable."""
    if op == "$eq" and type(arg) is str:
        return frozenset((arg,))
    if op == "$in":
        return frozenset(m for m in arg if type(m) is str)
    return None


def _fuse_trait(name: str) -> Fuse:
    def fuse(op: str, arg: Any, generic: Predicate) -> Predicate | None:
        cmp = _NUMERIC.get(op)
        if cmp is not None:

            def trait_cmp(s: Subject) -> bool:
                trait = s.profile.traits.get(name)
                if trait is not None:
                    v = trait.value
                    t = type(v)
                    if t is int or t is float:
                        return cmp(v, arg)
                return generic(s)

            return trait_cmp
        strings = _string_set(op, arg)
        if strings is None:
            return None

        def trait_str(s: Subject) -> bool:
            trait = s.profile.traits.get(name)
            if trait is not None:
                v = trait.value
                if type(v) is str:
                    return v in strings
            return generic(s)

        return trait_str

    return fuse


def _fuse_context(key: str) -> Fuse:
    def fuse(op: str, arg: Any, generic: Predicate) -> Predicate | None:
        cmp = _NUMERIC.get(op)
        if cmp is not None:

            def context_cmp(s: Subject) -> bool:
                v = s.context.get(key, MISSING)
                t = type(v)
                if t is int or t is float:
                    return cmp(v, arg)
                return generic(s)

            return context_cmp
        strings = _string_set(op, arg)
        if strings is None:
            return None

        def context_str(s: Subject) -> bool:
            v = s.context.get(key, MISSING)
            if type(v) is str:
                return v in strings
            return generic(s)

        return context_str

    return fuse


def _window_getter(counter: str, n: int) -> Getter:
    """``behaviour.<counter>`` summed over the last ``n`` days. Its fused comparison reads
    the counter's memo of this day's sums directly when the sum is known (no call)."""
    counter_of = operator.attrgetter(f"profile.behaviour.{counter}")

    def get(s: Subject) -> Any:
        return counter_of(s).window(n, s.today)

    def fuse(op: str, arg: Any, generic: Predicate) -> Predicate | None:
        cmp = _NUMERIC.get(op)
        if cmp is None:
            return None

        def window_cmp(s: Subject) -> bool:  # a window sum is always a number
            c: DayCounter = counter_of(s)
            memo = c.window_memo
            if memo is not None and memo[0] == s.today:
                v = memo[1].get(n)
                if v is not None:
                    return cmp(v, arg)
            return cmp(c.window(n, s.today), arg)

        return window_cmp

    get.fuse = fuse  # type: ignore[attr-defined]
    return get


def _traits(rest: tuple[str, ...], where: str) -> Getter:
    if not rest:
        raise RuleError(where, "traits.<name> needs a trait name")
    name, keys = rest[0], rest[1:]

    def get(s: Subject) -> Any:
        trait = s.profile.traits.get(name)
        if trait is None:
            return MISSING
        return _dig(trait.value, keys) if keys else trait.value

    if not keys:
        get.fuse = _fuse_trait(name)  # type: ignore[attr-defined]
    return get


def _context(rest: tuple[str, ...], where: str) -> Getter:
    if not rest:
        raise RuleError(where, "context.<key> needs a key")
    if len(rest) == 1:
        key = rest[0]

        def get(s: Subject) -> Any:
            return s.context.get(key, MISSING)

        get.fuse = _fuse_context(key)  # type: ignore[attr-defined]
        return get
    return lambda s: _dig(s.context, rest)


_BEHAVIOUR: dict[str, Callable[[Subject], Any]] = {
    "visits": lambda s: s.profile.behaviour.sessions.total,
    "page_views": lambda s: s.profile.behaviour.page_views.total,
    "first_seen_days": lambda s: _days_since(s.profile.behaviour.first_seen, s.now),
    "tenure_days": lambda s: _days_since(s.profile.behaviour.first_seen, s.now),
    "last_seen_days": lambda s: _days_since(s.profile.behaviour.last_seen, s.now),
    "returning": lambda s: s.profile.behaviour.sessions.total > 1,
    "new": lambda s: s.profile.behaviour.sessions.total <= 1,
    "categories": lambda s: len(s.profile.behaviour.affinity),
    "top_category": lambda s: s.profile.behaviour.top_category(s.now) or MISSING,
}
_BEHAVIOUR_WINDOWED = {"visits": "sessions", "page_views": "page_views"}


def _behaviour(rest: tuple[str, ...], where: str) -> Getter:
    known = sorted([*_BEHAVIOUR, *(f"{k}_<N>d" for k in _BEHAVIOUR_WINDOWED)])
    if len(rest) != 1:
        raise RuleError(where, f"behaviour.<metric> takes one of: {', '.join(known)}")
    metric = rest[0]
    if metric in _BEHAVIOUR:
        return _BEHAVIOUR[metric]
    m = _WINDOWED.match(metric)
    if m and m["base"] in _BEHAVIOUR_WINDOWED:
        n = _window(m["n"], where)
        return _window_getter(_BEHAVIOUR_WINDOWED[m["base"]], n)
    raise RuleError(where, f"unknown behaviour metric {metric!r}; known: {', '.join(known)}")


def _events(rest: tuple[str, ...], where: str) -> Getter:
    if len(rest) != 2:
        raise RuleError(
            where,
            "events.<event name>.<metric> with metric count, count_<N>d, last_days, first_days",
        )
    name, metric = rest
    if metric == "count":
        return lambda s: e.counts.total if (e := s.profile.behaviour.events.get(name)) else 0
    if metric == "last_days":
        return lambda s: (
            _days_since(e.last_at, s.now)
            if (e := s.profile.behaviour.events.get(name))
            else MISSING
        )
    if metric == "first_days":
        return lambda s: (
            _days_since(e.first_at, s.now)
            if (e := s.profile.behaviour.events.get(name))
            else MISSING
        )
    m = _WINDOWED.match(metric)
    if m and m["base"] == "count":
        n = _window(m["n"], where)
        return lambda s: (
            e.counts.window(n, s.today) if (e := s.profile.behaviour.events.get(name)) else 0
        )
    raise RuleError(
        where, f"unknown event metric {metric!r}; known: count, count_<N>d, last_days, first_days"
    )


def _aov(s: Subject) -> Any:
    b = s.profile.behaviour
    return b.revenue.total / b.purchases.total if b.purchases.total else MISSING


def _rfm(rest: tuple[str, ...], where: str) -> Getter:
    known = "recency_days, frequency, frequency_<N>d, monetary, monetary_<N>d, aov"
    if len(rest) != 1:
        raise RuleError(where, f"rfm.<metric> takes one of: {known}")
    metric = rest[0]
    if metric == "recency_days":
        return lambda s: _days_since(s.profile.behaviour.last_purchase_at, s.now)
    if metric == "frequency":
        return lambda s: s.profile.behaviour.purchases.total
    if metric == "monetary":
        return lambda s: s.profile.behaviour.revenue.total
    if metric == "aov":
        return _aov
    m = _WINDOWED.match(metric)
    if m and m["base"] in ("frequency", "monetary"):
        n = _window(m["n"], where)
        return _window_getter("purchases" if m["base"] == "frequency" else "revenue", n)
    raise RuleError(where, f"unknown rfm metric {metric!r}; known: {known}")


def _affinity(rest: tuple[str, ...], where: str) -> Getter:
    if len(rest) != 1:
        raise RuleError(where, "affinity.<category> names one category")
    category = rest[0]

    def get(s: Subject) -> Any:
        b = s.profile.behaviour
        a = b.affinity.get(category)
        return 0.0 if a is None else a.value(s.now, b.affinity_half_life)

    return get


def _identity(rest: tuple[str, ...], where: str) -> Getter:
    if rest == ("known",):
        return lambda s: s.profile.is_known
    if rest == ("user_id",):
        return lambda s: s.profile.user_id or MISSING
    raise RuleError(where, "identity.<key> takes known or user_id")


NAMESPACES: dict[str, Callable[[tuple[str, ...], str], Getter]] = {
    "traits": _traits,
    "context": _context,
    "behaviour": _behaviour,
    "events": _events,
    "rfm": _rfm,
    "affinity": _affinity,
    "identity": _identity,
}


def profile_fields(path: tuple[str, ...], where: str) -> Getter:
    """The :data:`~persona_sdk.rules.compiler.FieldResolver` for profiles: see the module doc."""
    namespace = NAMESPACES.get(path[0]) if path else None
    if namespace is None:
        raise RuleError(
            where,
            f"unknown field namespace {path[0] if path else ''!r}; a path starts with one of: "
            + ", ".join(sorted(NAMESPACES)),
        )
    return namespace(path[1:], where)
