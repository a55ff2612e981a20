"""Compile JSON rules into fast predicates.

A rule is DATA: a JSON object written with MongoDB-style operators, so a condition written for a
GrowthBook or Optimizely audience reads the same here::

    {"$and": [
        {"behaviour.visits_30d": {"$gte": 3}},
        {"traits.ltv": {"$gte": 500}},
        {"$or": [{"traits.plan": "pro"}, {"$segment": "vip"}]},
    ]}

:func:`compile_rule` checks the rule once, at load time (every type error is a
:class:`~persona_sdk.errors.RuleError` naming the place, e.g.
``segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"``), and turns it into a
tree of specialised Python closures; evaluating it is one call that never dispatches on operator
names and never raises on JSON-like values. Nothing is ever ``eval``-ed: the compiler is an
interpreter of the data.

Semantics (MongoDB / GrowthBook):

* Field conditions: ``{"path": {"$op": arg, ...}}`` (several operators are AND-ed), or an implicit
  equality ``{"path": value}``. Several keys in one object are AND-ed.
* Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $all $size $exists $type $regex`` (with
  ``$options`` of ``i m s x``), ``$elemMatch``, ``$not`` (on a field, or at the top level), and
  the logical ``$and $or $nor``; plus ``{"$segment": "name"}`` and custom conditions from a
  :class:`~persona_sdk.rules.conditions.ConditionRegistry`.
* Arrays: a condition on an array field matches when the whole array or ANY element matches it;
  ``$size``, ``$all`` and ``$elemMatch`` act on the array itself.
* Missing fields: ``$eq null``, ``$exists false``, ``$ne x`` and ``$nin`` match; comparisons do not.
* Types are strict: numbers compare with numbers only (``true`` is not ``1``), strings with
  strings; a value of an unexpected type simply fails the condition. ``$gt``/``$gte``/``$lt``/
  ``$lte`` take numbers only (no string or date comparisons).
* ``$all``: the field must be an array holding, for each member, an element equal to it (a
  member may also be an operator object, as in GrowthBook); ``$all: []`` matches any array.
* ``$elemMatch``: an object made only of field operators applies to each element's value
  (``{"$gte": 80, "$lt": 85}``); any other object is a query on each element that is an object,
  with paths relative to the element (``$segment`` and custom conditions are refused there).
* ``$regex``: Python :mod:`re` syntax, at most 500 characters, ``search`` semantics, strings only.
* A custom condition's factory receives the ``where`` of its own key, e.g. ``rule.$geo_country``.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from operator import methodcaller
from typing import Any, Final

import attrs

from persona_sdk.errors import PluginError, RuleError
from persona_sdk.rules.conditions import CONDITION_NAME_RE, ConditionRegistry

__all__ = [
    "MISSING",
    "TYPE_NAMES",
    "CompiledRule",
    "Explanation",
    "FieldResolver",
    "Getter",
    "Predicate",
    "compile_rule",
    "dict_resolver",
    "split_path",
]

Getter = Callable[[Any], Any]
"""``getter(subject) -> value``, or :data:`MISSING` when the field is absent."""

Predicate = Callable[[Any], bool]
"""``predicate(subject) -> bool``."""

FieldResolver = Callable[[tuple[str, ...], str], Getter]
"""``resolver(path_parts, where) -> getter``, called at compile time; may raise RuleError.

A getter may also carry a ``fuse`` attribute, ``fuse(op, arg, generic) -> predicate | None``:
for ``op`` one of ``$gt $gte $lt $lte $in $eq`` (``arg`` already checked), a predicate that
reads the field in its own body (one call per condition instead of two) and must answer
exactly as ``generic`` does, the compiler's predicate for the same condition, to which it
may hand any value it does not special-case. None: use ``generic``."""

MAX_REGEX_LENGTH: Final = 500
"""The longest ``$regex`` pattern accepted, in characters."""

MAX_DEPTH: Final = 64
"""The deepest nesting of objects and lists accepted in a rule."""

TYPE_NAMES: Final[tuple[str, ...]] = ("array", "boolean", "null", "number", "object", "string")
"""The names ``$type`` accepts."""


class _Missing:
    """The type of :data:`MISSING`: the value of a field that is absent."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What a getter returns for an absent field (distinct from ``None``, JSON ``null``)."""

_EMPTY: Final[Mapping[str, Any]] = {}

_FIELD_OPS: Final = frozenset(
    {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$all",
        "$size",
        "$exists",
        "$type",
        "$regex",
        "$options",
        "$elemMatch",
        "$not",
    }
)
_DOC_OPS: Final = frozenset({"$and", "$or", "$nor", "$not", "$segment"})
_REGEX_FLAGS: Final = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


# --------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Explanation:
    """Why a rule matched or not, for humans.

    ``text`` reads like ``visits_30d=6 >= 3 and ltv=820 >= 500`` when it matched, or names the
    first failing condition, like ``ltv=120 >= 500 is false``.
    """

    matched: bool
    text: str

    def __str__(self) -> str:
        return self.text


@attrs.frozen(eq=False)
class CompiledRule:
    """A rule compiled by :func:`compile_rule`.

    Calling it evaluates the rule against a subject: ``rule(subject) -> bool``. For the tightest
    loops, ``rule.predicate`` is the underlying closure itself: calling it skips the Python-level
    ``__call__`` (worth about a third of a 3-condition rule's cost).
    """

    spec: Mapping[str, Any]
    """The JSON form the rule was compiled from (a normalized private copy; do not mutate)."""
    refs: frozenset[str]
    """Every segment name referenced through ``$segment``, however deeply nested."""
    predicate: Predicate = attrs.field(repr=False)
    """The compiled closure: ``predicate(subject) -> bool``."""
    _root: _Node = attrs.field(repr=False, alias="root")

    def __call__(self, subject: Any) -> bool:
        """Evaluate the rule: True when ``subject`` matches."""
        return self.predicate(subject)

    def explain(self, subject: Any) -> Explanation:
        """Evaluate the rule and say why it matched or not (slower than calling the rule)."""
        matched, text = self._root.explain(subject)
        return Explanation(matched=matched, text=text)


# --------------------------------------------------------------------------------------------
# Paths and the plain-mapping resolver
# --------------------------------------------------------------------------------------------


def split_path(path: Any, where: str) -> tuple[str, ...]:
    """Split a dotted field path (``"traits.address.city"``) into its parts.

    Raises RuleError(where, ...) for an empty path or an empty part (``"traits..x"``).
    """
    if type(path) is not str or not path:
        raise RuleError(where, f"a field path must be a non-empty string, got {_show(path)}")
    parts = tuple(path.split("."))
    if "" in parts:
        raise RuleError(where, f"empty part in field path {_show(path)}")
    return parts


def dict_resolver(path: tuple[str, ...], where: str) -> Getter:
    """Resolve dotted paths in a plain mapping subject (nested dicts/lists); MISSING when absent.

    Numeric path parts index into lists, as in MongoDB (``"orders.0.amount"``); a non-numeric
    part applied to a list collects that field from every object in it, flattening arrays
    (``"orders.amount"`` -> ``[10, 25]``), so ``{"orders.amount": {"$gt": 20}}`` matches when any
    order is above 20. Used by tests, the CLI, and inside ``$elemMatch``.
    """
    if not path or "" in path:
        raise RuleError(where, f"empty part in field path {_show('.'.join(path))}")
    parts = tuple(path)
    missing = MISSING
    empty = _EMPTY
    resolve = _resolve

    # Fast paths: chains of Mapping.get; anything unusual (a list on the way, a scalar, an odd
    # object) raises inside the try and takes the general, careful path.
    if len(parts) == 1:
        (a,) = parts

        def get1(subject: Any) -> Any:
            try:
                return subject.get(a, missing)
            except Exception:
                return resolve(subject, parts)

        return get1
    if len(parts) == 2:
        a, b = parts

        def get2(subject: Any) -> Any:
            try:
                return subject.get(a, empty).get(b, missing)
            except Exception:
                return resolve(subject, parts)

        return get2
    if len(parts) == 3:
        a, b, c = parts

        def get3(subject: Any) -> Any:
            try:
                return subject.get(a, empty).get(b, empty).get(c, missing)
            except Exception:
                return resolve(subject, parts)

        return get3
    middle, last = parts[:-1], parts[-1]

    def get_n(subject: Any) -> Any:
        try:
            value = subject
            for part in middle:
                value = value.get(part, empty)
            return value.get(last, missing)
        except Exception:
            return resolve(subject, parts)

    return get_n


def _resolve(value: Any, parts: Sequence[str]) -> Any:
    """The general (slow, never raising on JSON-like data) path resolution of dict_resolver."""
    for i, part in enumerate(parts):
        if isinstance(value, Mapping):
            try:
                value = value.get(part, MISSING)
            except Exception:
                return MISSING
        elif type(value) is list or type(value) is tuple:
            if part.isascii() and part.isdigit():
                index = int(part)
                value = value[index] if index < len(value) else MISSING
            else:
                rest = parts[i:]
                found: list[Any] = []
                for item in value:
                    if isinstance(item, Mapping):
                        sub = _resolve(item, rest)
                        if type(sub) is list or type(sub) is tuple:
                            found.extend(sub)
                        elif sub is not MISSING:
                            found.append(sub)
                return found if found else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _identity(value: Any) -> Any:
    return value


# --------------------------------------------------------------------------------------------
# Rendering and JSON helpers
# --------------------------------------------------------------------------------------------


def _show(value: Any, limit: int = 80) -> str:
    """Render a value compactly as JSON (for messages and explanations)."""
    if value is MISSING:
        return "(missing)"
    if type(value) is float and value.is_integer() is False and abs(value) < 1e15:
        return f"{value:.2f}".rstrip("0").rstrip(".")  # 50.000000988 → 50, 12.345 → 12.35
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except Exception:
        try:
            text = repr(value)
        except Exception:  # e.g. an int too long to print
            text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _join(where: str, part: str) -> str:
    if not part:
        return where
    return f"{where}.{part}" if where else part


class _NotJSON(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _json_copy(value: Any, path: str = "", depth: int = 0) -> Any:
    """A deep copy of a JSON-like value as plain dict/list/str/int/float/bool/None.

    Tuples become lists; str/int/float subclasses become the plain type; objects with a
    ``to_json()`` method (builder nodes) are converted. Raises _NotJSON otherwise.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if depth >= MAX_DEPTH:
        raise _NotJSON(path, f"nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSON(path, f"object keys must be strings, got {key!r}")
            key = str.__str__(key)
            out[key] = _json_copy(item, _join(path, key), depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_copy(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _json_copy(to_json(), path, depth + 1)
    raise _NotJSON(path, f"not a JSON value: {value!r}")


def _json_eq(a: Any, b: Any) -> bool:
    """JSON equality: numbers equal numbers (1 == 1.0) but never booleans; deep on lists/objects.

    Recursion is bounded by the depth of the shallower value (rule arguments are bounded).
    """
    ta = type(a)
    if ta is str:
        return type(b) is str and a == b
    if ta is int or ta is float:
        tb = type(b)
        return (tb is int or tb is float) and a == b
    if ta is bool or a is None:
        return a is b
    if ta is list or ta is tuple:
        tb = type(b)
        if not (tb is list or tb is tuple) or len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):
            if not _json_eq(x, y):
                return False
        return True
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping) or len(a) != len(b):
            return False
        for key, x in a.items():
            y = b.get(key, MISSING)
            if y is MISSING or not _json_eq(x, y):
                return False
        return True
    return False


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


# --------------------------------------------------------------------------------------------
# Predicate combinators
# --------------------------------------------------------------------------------------------


def _all(preds: Sequence[Predicate]) -> Predicate:
    """AND of predicates, specialised by arity (no per-call loop for up to 4 parts)."""
    n = len(preds)
    if n == 1:
        return preds[0]
    if n == 2:
        a, b = preds
        return lambda s: a(s) and b(s)
    if n == 3:
        a, b, c = preds
        return lambda s: a(s) and b(s) and c(s)
    if n == 4:
        a, b, c, d = preds
        return lambda s: a(s) and b(s) and c(s) and d(s)
    parts = tuple(preds)

    def all_n(s: Any) -> bool:
        for pred in parts:
            if not pred(s):
                return False
        return True

    return all_n


def _any(preds: Sequence[Predicate]) -> Predicate:
    """OR of predicates, specialised by arity."""
    n = len(preds)
    if n == 1:
        return preds[0]
    if n == 2:
        a, b = preds
        return lambda s: a(s) or b(s)
    if n == 3:
        a, b, c = preds
        return lambda s: a(s) or b(s) or c(s)
    if n == 4:
        a, b, c, d = preds
        return lambda s: a(s) or b(s) or c(s) or d(s)
    parts = tuple(preds)

    def any_n(s: Any) -> bool:
        for pred in parts:
            if pred(s):
                return True
        return False

    return any_n


def _negate(pred: Predicate) -> Predicate:
    return lambda s: not pred(s)


def _always(_subject: Any) -> bool:
    return True


# --------------------------------------------------------------------------------------------
# Field operator closures. Each takes the field's getter and returns a predicate over the
# subject; the array rule (whole value or any element) is inlined in each.
# --------------------------------------------------------------------------------------------


def _eq_pred(get: Getter, arg: Any) -> Predicate:
    kind = type(arg)
    if kind is str:

        def eq_str(s: Any) -> bool:
            v = get(s)
            if type(v) is str:
                ok: bool = v == arg
                return ok
            t = type(v)
            if t is list or t is tuple:
                return arg in v
            return False

        return eq_str
    if kind is int or kind is float:

        def eq_num(s: Any) -> bool:
            v = get(s)
            t = type(v)
            if t is int or t is float:
                ok: bool = v == arg
                return ok
            if t is list or t is tuple:
                for e in v:
                    t = type(e)
                    if (t is int or t is float) and e == arg:
                        return True
            return False

        return eq_num
    if kind is bool or arg is None:
        null = arg is None

        def eq_const(s: Any) -> bool:
            v = get(s)
            if v is arg or (null and v is MISSING):
                return True
            t = type(v)
            if t is list or t is tuple:
                for e in v:
                    if e is arg:
                        return True
            return False

        return eq_const

    def eq_json(s: Any) -> bool:
        v = get(s)
        if _json_eq(v, arg):
            return True
        t = type(v)
        if t is list or t is tuple:
            for e in v:
                if _json_eq(e, arg):
                    return True
        return False

    return eq_json


def _in_pred(get: Getter, members: list[Any]) -> Predicate:
    strs = frozenset(m for m in members if type(m) is str)
    nums = frozenset(m for m in members if _is_number(m))
    bools = frozenset(m for m in members if type(m) is bool)
    has_null = any(m is None for m in members)
    others = tuple(m for m in members if type(m) is list or type(m) is dict)

    def one(v: Any) -> bool:
        """Membership of a single value (no array expansion)."""
        t = type(v)
        if t is str:
            return v in strs
        if t is int or t is float:
            return v in nums
        if t is bool:
            return v in bools
        if v is None:
            return has_null
        for m in others:
            if _json_eq(v, m):
                return True
        return False

    def in_(s: Any) -> bool:
        v = get(s)
        t = type(v)
        if t is str:
            return v in strs
        if t is int or t is float:
            return v in nums
        if t is list or t is tuple:
            for e in v:
                if one(e):
                    return True
            return bool(others) and one(v)
        if v is MISSING:
            return has_null
        return one(v)

    return in_


def _gt_pred(get: Getter, arg: float) -> Predicate:
    def gt(s: Any) -> bool:
        v = get(s)
        t = type(v)
        if t is int or t is float:
            ok: bool = v > arg
            return ok
        if t is list or t is tuple:
            for e in v:
                t = type(e)
                if (t is int or t is float) and e > arg:
                    return True
        return False

    return gt


def _gte_pred(get: Getter, arg: float) -> Predicate:
    def gte(s: Any) -> bool:
        v = get(s)
        t = type(v)
        if t is int or t is float:
            ok: bool = v >= arg
            return ok
        if t is list or t is tuple:
            for e in v:
                t = type(e)
                if (t is int or t is float) and e >= arg:
                    return True
        return False

    return gte


def _lt_pred(get: Getter, arg: float) -> Predicate:
    def lt(s: Any) -> bool:
        v = get(s)
        t = type(v)
        if t is int or t is float:
            ok: bool = v < arg
            return ok
        if t is list or t is tuple:
            for e in v:
                t = type(e)
                if (t is int or t is float) and e < arg:
                    return True
        return False

    return lt


def _lte_pred(get: Getter, arg: float) -> Predicate:
    def lte(s: Any) -> bool:
        v = get(s)
        t = type(v)
        if t is int or t is float:
            ok: bool = v <= arg
            return ok
        if t is list or t is tuple:
            for e in v:
                t = type(e)
                if (t is int or t is float) and e <= arg:
                    return True
        return False

    return lte


_COMPARISONS: Final[dict[str, tuple[str, Callable[[Getter, float], Predicate]]]] = {
    "$gt": (">", _gt_pred),
    "$gte": (">=", _gte_pred),
    "$lt": ("<", _lt_pred),
    "$lte": ("<=", _lte_pred),
}


def _fused(get: Getter, op: str, arg: Any, generic: Predicate) -> Predicate:
    """The getter's own fused predicate for ``op`` if it offers one (see FieldResolver)."""
    fuse = getattr(get, "fuse", None)
    if fuse is None:
        return generic
    pred: Predicate | None = fuse(op, arg, generic)
    return generic if pred is None else pred


def _regex_pred(get: Getter, rx: re.Pattern[str]) -> Predicate:
    search = rx.search

    def regex(s: Any) -> bool:
        v = get(s)
        if type(v) is str:
            return search(v) is not None
        t = type(v)
        if t is list or t is tuple:
            for e in v:
                if type(e) is str and search(e) is not None:
                    return True
        return False

    return regex


def _expand(get: Getter, test: Callable[[Any], bool]) -> Predicate:
    """Generic array rule: the value, or any element of an array value, passes ``test``."""

    def expanded(s: Any) -> bool:
        v = get(s)
        if test(v):
            return True
        t = type(v)
        if t is list or t is tuple:
            for e in v:
                if test(e):
                    return True
        return False

    return expanded


def _is_array(v: Any) -> bool:
    t = type(v)
    return t is list or t is tuple


_TYPE_TESTS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda v: type(v) is str,
    "number": _is_number,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
    "array": _is_array,
}


# --------------------------------------------------------------------------------------------
# The node tree: fast predicates plus (slow) explanations
# --------------------------------------------------------------------------------------------


class _Node(ABC):
    """A document-level condition: ``pred(subject)`` and ``explain(subject)``."""

    __slots__ = ("pred",)

    def __init__(self, pred: Predicate) -> None:
        self.pred = pred

    @abstractmethod
    def explain(self, subject: Any) -> tuple[bool, str]:
        """Whether the condition holds for ``subject``, and a sentence saying why."""


class _VNode(ABC):
    """A condition on one field's value; ``pred`` already includes the field's getter."""

    __slots__ = ("pred",)

    def __init__(self, pred: Predicate) -> None:
        self.pred = pred

    @abstractmethod
    def explain(self, subject: Any, name: str, value: Any) -> tuple[bool, str]:
        """Whether the field's ``value`` (called ``name``) meets it, and why."""


class _VOp(_VNode):
    __slots__ = ("arg_text", "symbol")

    def __init__(self, pred: Predicate, symbol: str, arg_text: str) -> None:
        super().__init__(pred)
        self.symbol = symbol
        self.arg_text = arg_text

    def explain(self, subject: Any, name: str, value: Any) -> tuple[bool, str]:
        ok = bool(self.pred(subject))
        text = f"{name}={_show(value)} {self.symbol}"
        if self.arg_text:
            text = f"{text} {self.arg_text}"
        return ok, text if ok else f"{text} is false"


class _VAnd(_VNode):
    __slots__ = ("parts",)

    def __init__(self, parts: list[_VNode]) -> None:
        super().__init__(_all([p.pred for p in parts]))
        self.parts = parts

    def explain(self, subject: Any, name: str, value: Any) -> tuple[bool, str]:
        texts = []
        for part in self.parts:
            ok, text = part.explain(subject, name, value)
            if not ok:
                return False, text
            texts.append(text)
        return True, " and ".join(texts)


class _VNot(_VNode):
    __slots__ = ("inner",)

    def __init__(self, inner: _VNode) -> None:
        super().__init__(_negate(inner.pred))
        self.inner = inner

    def explain(self, subject: Any, name: str, value: Any) -> tuple[bool, str]:
        ok, text = self.inner.explain(subject, name, value)
        return (True, text) if not ok else (False, f"not ({text}) is false")


class _Field(_Node):
    __slots__ = ("cond", "get", "name")

    def __init__(self, name: str, get: Getter, cond: _VNode) -> None:
        super().__init__(cond.pred)
        self.name = name
        self.get = get
        self.cond = cond

    def explain(self, subject: Any) -> tuple[bool, str]:
        return self.cond.explain(subject, self.name, self.get(subject))


class _And(_Node):
    __slots__ = ("parts",)

    def __init__(self, parts: list[_Node]) -> None:
        super().__init__(_all([p.pred for p in parts]))
        self.parts = parts

    def explain(self, subject: Any) -> tuple[bool, str]:
        texts = []
        for part in self.parts:
            ok, text = part.explain(subject)
            if not ok:
                return False, text
            texts.append(text)
        return True, " and ".join(texts)


class _Or(_Node):
    __slots__ = ("parts",)

    def __init__(self, parts: list[_Node]) -> None:
        super().__init__(_any([p.pred for p in parts]))
        self.parts = parts

    def explain(self, subject: Any) -> tuple[bool, str]:
        texts = []
        for part in self.parts:
            ok, text = part.explain(subject)
            if ok:
                return True, text
            texts.append(text)
        return False, " and ".join(texts)


class _Nor(_Node):
    __slots__ = ("parts",)

    def __init__(self, parts: list[_Node]) -> None:
        super().__init__(_negate(_any([p.pred for p in parts])))
        self.parts = parts

    def explain(self, subject: Any) -> tuple[bool, str]:
        texts = []
        for part in self.parts:
            ok, text = part.explain(subject)
            if ok:
                return False, f"not ({text}) is false"
            texts.append(text)
        return True, " and ".join(texts)


class _Not(_Node):
    __slots__ = ("inner",)

    def __init__(self, inner: _Node) -> None:
        super().__init__(_negate(inner.pred))
        self.inner = inner

    def explain(self, subject: Any) -> tuple[bool, str]:
        ok, text = self.inner.explain(subject)
        return (True, text) if not ok else (False, f"not ({text}) is false")


class _Segment(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        # methodcaller: the call `subject.in_segment(name)` without a Python-level frame
        super().__init__(methodcaller("in_segment", name))
        self.name = name

    def explain(self, subject: Any) -> tuple[bool, str]:
        # A subject that can explain segments (persona_sdk.rules.subject.Subject) lets the
        # nested segment's own reasons show, e.g. "visits_30d=6 >= 3 and ltv=820 >= 500".
        inner = getattr(subject, "explain_segment", None)
        if inner is not None:
            detail: Explanation | None = inner(self.name)
            if detail is not None:
                if detail.matched:
                    return True, detail.text
                return False, f"not in segment {self.name}: {detail.text}"
        if subject.in_segment(self.name):
            return True, f"in segment {self.name}"
        return False, f"not in segment {self.name}"


class _Custom(_Node):
    __slots__ = ("arg", "name")

    def __init__(self, name: str, arg: Any, pred: Callable[[Any], Any]) -> None:
        super().__init__(lambda s: bool(pred(s)))
        self.name = name
        self.arg = arg

    def explain(self, subject: Any) -> tuple[bool, str]:
        ok = bool(self.pred(subject))
        return ok, f"${self.name}({_show(self.arg)}) is {'true' if ok else 'false'}"


class _Always(_Node):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_always)

    def explain(self, subject: Any) -> tuple[bool, str]:
        return True, "always true (empty condition)"


# --------------------------------------------------------------------------------------------
# The compiler
# --------------------------------------------------------------------------------------------


def _unknown(key: str, known: list[str]) -> str:
    listing = ", ".join(known)
    if len(listing) <= 200:
        return f'unknown operator "{key}" (known: {listing})'
    return f'unknown operator "{key}" ({len(known)} operators are known)'


class _Compiler:
    def __init__(
        self,
        fields: FieldResolver,
        conditions: ConditionRegistry | None,
        *,
        in_elem_match: bool = False,
    ) -> None:
        self.fields = fields
        self.conditions = conditions
        self.in_elem_match = in_elem_match
        self.refs: set[str] = set()

    # -- document level ---------------------------------------------------------------------

    def doc(self, spec: Any, where: str) -> _Node:
        if type(spec) is not dict:
            raise RuleError(where, f"expected an object, got {_show(spec)}")
        nodes = [self.doc_key(key, arg, where) for key, arg in spec.items()]
        if not nodes:
            return _Always()
        return nodes[0] if len(nodes) == 1 else _And(nodes)

    def doc_key(self, key: str, arg: Any, where: str) -> _Node:
        if not key.startswith("$"):
            return self.field(key, arg, where)
        if key in ("$and", "$or", "$nor"):
            if type(arg) is not list or not arg:
                raise RuleError(
                    where, f"{key} expects a non-empty list of objects, got {_show(arg)}"
                )
            base = _join(where, key)
            parts = [self.doc(item, f"{base}[{i}]") for i, item in enumerate(arg)]
            if key == "$and":
                return _And(parts)
            return _Or(parts) if key == "$or" else _Nor(parts)
        if key == "$not":
            if type(arg) is not dict:
                raise RuleError(where, f"$not expects an object, got {_show(arg)}")
            return _Not(self.doc(arg, _join(where, key)))
        if key == "$segment":
            if self.in_elem_match:
                raise RuleError(where, "$segment cannot be used inside $elemMatch")
            if type(arg) is not str or not arg:
                raise RuleError(where, f"$segment expects a segment name, got {_show(arg)}")
            self.refs.add(arg)
            return _Segment(arg)
        if key in _FIELD_OPS:
            raise RuleError(
                where, f'{key} applies to a field, e.g. {{"traits.x": {{"{key}": ...}}}}'
            )
        return self.custom(key, arg, where)

    def custom(self, key: str, arg: Any, where: str) -> _Node:
        name = key[1:]
        factory = None
        if self.conditions is not None and CONDITION_NAME_RE.fullmatch(name):
            factory = self.conditions.get(name)
        if factory is None:
            known = sorted(_DOC_OPS)
            if self.conditions is not None:
                known += [f"${n}" for n in self.conditions.names()]
            raise RuleError(where, _unknown(key, known))
        if self.in_elem_match:
            raise RuleError(where, f"{key} cannot be used inside $elemMatch")
        cwhere = _join(where, key)
        try:
            pred = factory(arg, cwhere)
        except RuleError:
            raise
        except Exception as exc:
            raise RuleError(cwhere, f"invalid argument {_show(arg)}: {exc}") from exc
        if not callable(pred):
            raise PluginError(f"condition {key}: factory returned {pred!r}, not a predicate")
        return _Custom(name, arg, pred)

    # -- field level ------------------------------------------------------------------------

    def field(self, path: str, cond: Any, where: str) -> _Node:
        fwhere = _join(where, path)
        parts = split_path(path, fwhere)
        get = self.fields(parts, fwhere)
        name = ".".join(parts[1:]) if len(parts) > 1 else parts[0]
        return _Field(name, get, self.value(cond, get, fwhere))

    def value(self, cond: Any, get: Getter, where: str) -> _VNode:
        """A field's condition: an operator object, or a literal (implicit equality)."""
        if type(cond) is dict and cond:
            ops = [k for k in cond if k.startswith("$")]
            if len(ops) == len(cond):
                return self.operators(cond, get, where)
            if ops:
                raise RuleError(
                    where,
                    f"cannot mix operators ({', '.join(ops)}) with plain keys in one condition",
                )
        return _VOp(_fused(get, "$eq", cond, _eq_pred(get, cond)), "==", _show(cond))

    def operators(self, cond: dict[str, Any], get: Getter, where: str) -> _VNode:
        if "$options" in cond and "$regex" not in cond:
            raise RuleError(where, "$options needs a $regex")
        nodes = [
            self.operator(key, arg, cond, get, where)
            for key, arg in cond.items()
            if key != "$options"
        ]
        return nodes[0] if len(nodes) == 1 else _VAnd(nodes)

    def operator(self, key: str, arg: Any, cond: dict[str, Any], get: Getter, where: str) -> _VNode:
        if key in _COMPARISONS:
            symbol, make = _COMPARISONS[key]
            if not _is_number(arg) or (type(arg) is float and not math.isfinite(arg)):
                raise RuleError(where, f"{key} expects a number, got {_show(arg)}")
            return _VOp(_fused(get, key, arg, make(get, arg)), symbol, _show(arg))
        if key == "$eq":
            return _VOp(_fused(get, "$eq", arg, _eq_pred(get, arg)), "==", _show(arg))
        if key == "$ne":
            return _VOp(_negate(_eq_pred(get, arg)), "!=", _show(arg))
        if key in ("$in", "$nin"):
            if type(arg) is not list:
                raise RuleError(where, f"{key} expects a list, got {_show(arg)}")
            pred = _fused(get, "$in", arg, _in_pred(get, arg))
            if key == "$in":
                return _VOp(pred, "in", _show(arg))
            return _VOp(_negate(pred), "not in", _show(arg))
        if key == "$exists":
            if type(arg) is not bool:
                raise RuleError(where, f"$exists expects true or false, got {_show(arg)}")
            if arg:
                return _VOp(lambda s: get(s) is not MISSING, "exists", "")
            return _VOp(lambda s: get(s) is MISSING, "does not exist", "")
        if key == "$size":
            if type(arg) is not int or arg < 0:
                raise RuleError(where, f"$size expects a non-negative integer, got {_show(arg)}")
            size = arg

            def size_pred(s: Any) -> bool:
                v = get(s)
                t = type(v)
                return (t is list or t is tuple) and len(v) == size

            return _VOp(size_pred, "has size", str(size))
        if key == "$type":
            if arg not in TYPE_NAMES:
                names = ", ".join(f'"{n}"' for n in TYPE_NAMES)
                raise RuleError(where, f"$type expects one of {names}, got {_show(arg)}")
            test = _TYPE_TESTS[arg]
            pred = (lambda s: test(get(s))) if arg == "array" else _expand(get, test)
            return _VOp(pred, "has type", _show(arg))
        if key == "$regex":
            return self.regex(arg, cond.get("$options", ""), get, where)
        if key == "$all":
            return self.all(arg, get, where)
        if key == "$elemMatch":
            return self.elem_match(arg, get, where)
        if key == "$not":
            return _VNot(self.value(arg, get, _join(where, key)))
        if key in _DOC_OPS:
            raise RuleError(where, f"{key} cannot be used inside a field condition")
        raise RuleError(where, _unknown(key, sorted(_FIELD_OPS)))

    def regex(self, pattern: Any, options: Any, get: Getter, where: str) -> _VNode:
        if type(pattern) is not str:
            raise RuleError(where, f"$regex expects a string, got {_show(pattern)}")
        if len(pattern) > MAX_REGEX_LENGTH:
            raise RuleError(
                where,
                f"$regex pattern is too long ({len(pattern)} characters, "
                f"the maximum is {MAX_REGEX_LENGTH})",
            )
        if type(options) is not str or any(c not in _REGEX_FLAGS for c in options):
            raise RuleError(where, f'$options expects letters among "imsx", got {_show(options)}')
        flags = 0
        for c in options:
            flags |= _REGEX_FLAGS[c]
        try:
            rx = re.compile(pattern, flags)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise RuleError(
                where, f"$regex {_show(pattern)} is not a valid regular expression: {exc}"
            ) from None
        return _VOp(_regex_pred(get, rx), "matches", f"/{pattern}/{options}")

    def all(self, arg: Any, get: Getter, where: str) -> _VNode:
        if type(arg) is not list:
            raise RuleError(where, f"$all expects a list, got {_show(arg)}")
        base = _join(where, "$all")
        tests = tuple(
            self.value(item, _identity, f"{base}[{i}]").pred for i, item in enumerate(arg)
        )

        def all_pred(s: Any) -> bool:
            v = get(s)
            t = type(v)
            if not (t is list or t is tuple):
                return False
            for test in tests:
                for e in v:
                    if test(e):
                        break
                else:
                    return False
            return True

        return _VOp(all_pred, "has all", _show(arg))

    def elem_match(self, arg: Any, get: Getter, where: str) -> _VNode:
        if type(arg) is not dict:
            raise RuleError(where, f"$elemMatch expects an object, got {_show(arg)}")
        ewhere = _join(where, "$elemMatch")
        if arg and all(k in _FIELD_OPS for k in arg):
            # {"$elemMatch": {"$gte": 80, "$lt": 85}}: conditions on each element's value.
            test = self.value(arg, _identity, ewhere).pred
            objects_only = False
        else:
            # {"$elemMatch": {"sku": "A1", "qty": {"$gt": 1}}}: a query on each object element.
            sub = _Compiler(dict_resolver, self.conditions, in_elem_match=True)
            test = sub.doc(arg, ewhere).pred
            objects_only = True

        def elem_match_pred(s: Any) -> bool:
            v = get(s)
            t = type(v)
            if t is list or t is tuple:
                for e in v:
                    if (not objects_only or isinstance(e, Mapping)) and test(e):
                        return True
            return False

        return _VOp(elem_match_pred, "has an element matching", _show(arg))


def compile_rule(
    spec: Any,
    *,
    where: str = "rule",
    fields: FieldResolver = dict_resolver,
    conditions: ConditionRegistry | None = None,
) -> CompiledRule:
    """Compile a rule (a JSON object, or a builder node with ``.to_json()``) once.

    ``where`` prefixes the place named in errors (``segments.vip.rule`` gives
    ``segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"``).
    ``fields`` maps a split dotted path to a getter (default: :func:`dict_resolver`, for plain
    nested dicts); ``conditions`` supplies custom ``"$name"`` condition types.

    Every mistake (bad operator argument, unknown operator, bad regex, empty path part, value
    that is not JSON) raises :class:`~persona_sdk.errors.RuleError` here, never at request time.
    The result is callable: ``rule(subject) -> bool``; see :class:`CompiledRule`.
    """
    if not isinstance(spec, Mapping) and callable(getattr(spec, "to_json", None)):
        spec = spec.to_json()
    try:
        normalized = _json_copy(spec)
    except _NotJSON as exc:
        raise RuleError(_join(where, exc.path), exc.problem) from None
    compiler = _Compiler(fields, conditions)
    root = compiler.doc(normalized, where)
    return CompiledRule(
        spec=_json_copy(normalized),
        refs=frozenset(compiler.refs),
        predicate=root.pred,
        root=root,
    )
