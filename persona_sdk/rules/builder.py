"""A small Python builder for rules: it produces the same JSON you would write by hand.

::

    from persona_sdk.rules import all_of, field, segment

    rule = all_of(
        field("behaviour.visits_30d") >= 3,
        field("traits.ltv") >= 500,
        (field("traits.plan") == "pro") | segment("vip"),
    )
    rule.to_json()
    # {"$and": [{"behaviour.visits_30d": {"$gte": 3}}, {"traits.ltv": {"$gte": 500}},
    #           {"$or": [{"traits.plan": {"$eq": "pro"}}, {"$segment": "vip"}]}]}

Mistakes raise :class:`~persona_sdk.errors.RuleError` when the node is built, with the same
messages as the compiler (the builder runs the compiler's checks): ``field("traits.ltv") >= "x"``
raises ``traits.ltv: $gte expects a number, got "x"``.

Combine conditions with ``&`` (and), ``|`` (or), ``~`` (not) — never with Python's
``and``/``or``/``not``, which cannot be overloaded: a condition refuses to be used as a truth value
so that mistake is caught at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from persona_sdk.errors import RuleError
from persona_sdk.rules.compiler import compile_rule, split_path
from persona_sdk.rules.conditions import (
    BUILTIN_OPERATORS,
    CONDITION_NAME_RE,
    ConditionFactory,
    ConditionRegistry,
)

__all__ = [
    "Condition",
    "ConditionLike",
    "Field",
    "all_of",
    "any_of",
    "condition",
    "field",
    "none_of",
    "not_",
    "segment",
]

_NO_TRUTH = (
    "a rule condition has no truth value: combine conditions with & (and), | (or), ~ (not), "
    "or all_of()/any_of()/none_of()/not_(); Python's `and`, `or`, `not` and `if` do not build rules"
)


def _never(_subject: Any) -> bool:
    return False


def _accept_any(_arg: Any, _where: str) -> Any:
    return _never


class _AnyConditions(ConditionRegistry):
    """At build time the real registry is unknown: accept every well-formed custom name."""

    def get(self, name: str) -> ConditionFactory | None:
        return _accept_any


_ANY_CONDITIONS = _AnyConditions()


class Condition:
    """A rule (or a part of one), as built by :func:`field` operators and the combinators.

    ``to_json()`` returns the JSON form (a fresh copy); ``compile_rule(condition)`` compiles it.
    """

    __slots__ = ("_json",)
    _json: dict[str, Any]

    def __init__(self, spec: Mapping[str, Any]) -> None:
        """Wrap a JSON rule object, checking it as the compiler would (RuleError if wrong)."""
        checked = compile_rule(spec, where="", conditions=_ANY_CONDITIONS).spec
        object.__setattr__(self, "_json", checked)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: plain dicts and lists, a fresh copy on every call."""
        return copy.deepcopy(self._json)

    def __and__(self, other: ConditionLike) -> Condition:
        if not isinstance(other, (Condition, Mapping)):
            return NotImplemented
        return _combine("$and", self, other)

    def __rand__(self, other: ConditionLike) -> Condition:
        if not isinstance(other, (Condition, Mapping)):
            return NotImplemented
        return _combine("$and", other, self)

    def __or__(self, other: ConditionLike) -> Condition:
        if not isinstance(other, (Condition, Mapping)):
            return NotImplemented
        return _combine("$or", self, other)

    def __ror__(self, other: ConditionLike) -> Condition:
        if not isinstance(other, (Condition, Mapping)):
            return NotImplemented
        return _combine("$or", other, self)

    def __invert__(self) -> Condition:
        return not_(self)

    def __bool__(self) -> NoReturn:
        raise TypeError(_NO_TRUTH)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Condition objects are immutable")

    def __repr__(self) -> str:
        return f"Condition({json.dumps(self._json, ensure_ascii=False)})"


ConditionLike = Condition | Mapping[str, Any]
"""A builder :class:`Condition`, or a JSON rule object written by hand."""


def _json_of(cond: ConditionLike) -> dict[str, Any]:
    if isinstance(cond, Condition):
        return cond.to_json()
    if isinstance(cond, Mapping):
        return dict(cond)
    raise RuleError("", f"expected a condition or a JSON object, got {cond!r}")


def _combine(op: str, left: ConditionLike, right: ConditionLike) -> Condition:
    """``left op right``, flattening ``(a & b) & c`` into one ``$and`` (same verdicts)."""
    items: list[Any] = []
    for side in (left, right):
        spec = _json_of(side)
        if len(spec) == 1 and isinstance(spec.get(op), list):
            items.extend(spec[op])
        else:
            items.append(spec)
    return Condition({op: items})


def _as_list(values: Any) -> Any:
    """Sets, tuples and other iterables become lists; anything else is left for the checks."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        return values
    return list(values)


class Field:
    """A field path; its operators build conditions: ``field("traits.ltv") >= 500``."""

    __slots__ = ("path",)
    path: str

    def __init__(self, path: str) -> None:
        """``path`` is dotted (``"traits.address.city"``); an empty part raises RuleError."""
        split_path(path, path if isinstance(path, str) else "")
        object.__setattr__(self, "path", path)

    def _op(self, op: str, arg: Any) -> Condition:
        return Condition({self.path: {op: arg}})

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        """``field == value`` -> ``{path: {"$eq": value}}`` (arrays match on any element)."""
        return self._op("$eq", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        """``field != value`` -> ``{path: {"$ne": value}}`` (true when the field is missing)."""
        return self._op("$ne", value)

    def __gt__(self, number: float) -> Condition:
        """``field > number`` -> ``$gt``."""
        return self._op("$gt", number)

    def __ge__(self, number: float) -> Condition:
        """``field >= number`` -> ``$gte``."""
        return self._op("$gte", number)

    def __lt__(self, number: float) -> Condition:
        """``field < number`` -> ``$lt``."""
        return self._op("$lt", number)

    def __le__(self, number: float) -> Condition:
        """``field <= number`` -> ``$lte``."""
        return self._op("$lte", number)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[Any]) -> Condition:
        """The field (or an element of it) equals one of ``values`` -> ``$in``."""
        return self._op("$in", _as_list(values))

    def not_in(self, values: Iterable[Any]) -> Condition:
        """The field equals none of ``values`` (true when missing) -> ``$nin``."""
        return self._op("$nin", _as_list(values))

    def exists(self, flag: bool = True) -> Condition:
        """The field is present (``flag=True``) or absent -> ``$exists``."""
        return self._op("$exists", flag)

    def matches(self, pattern: str, options: str = "") -> Condition:
        """A string field (or element) contains a match of ``pattern`` -> ``$regex``.

        ``options`` holds letters among ``"imsx"`` (ignore case, multi-line, dot-all, verbose).
        """
        spec: dict[str, Any] = {"$regex": pattern}
        if options:
            spec["$options"] = options
        return Condition({self.path: spec})

    def has_all(self, values: Iterable[Any]) -> Condition:
        """The array field contains every one of ``values`` -> ``$all``."""
        return self._op("$all", _as_list(values))

    def size(self, n: int) -> Condition:
        """The array field has exactly ``n`` elements -> ``$size``."""
        return self._op("$size", n)

    def type(self, name: str) -> Condition:
        """The field has JSON type ``name`` ("string", "number", "boolean", "array",
        "object", "null") -> ``$type``."""
        return self._op("$type", name)

    def elem_match(self, cond: ConditionLike) -> Condition:
        """Some element of the array field matches ``cond`` -> ``$elemMatch``.

        ``cond`` is a condition on the elements' fields (``field("sku") == "A1"``), or an
        operator object on the elements themselves (``{"$gte": 80, "$lt": 85}``).
        """
        return self._op("$elemMatch", _json_of(cond))

    def __bool__(self) -> NoReturn:
        raise TypeError(_NO_TRUTH)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Field objects are immutable")

    def __repr__(self) -> str:
        return f"field({self.path!r})"


def field(path: str) -> Field:
    """The field at a dotted ``path``, whose operators build conditions.

    ``field("traits.ltv") >= 500`` -> ``{"traits.ltv": {"$gte": 500}}``.
    """
    return Field(path)


def all_of(*conditions: ConditionLike) -> Condition:
    """Every condition matches -> ``{"$and": [...]}`` (at least one condition)."""
    return Condition({"$and": [_json_of(c) for c in conditions]})


def any_of(*conditions: ConditionLike) -> Condition:
    """At least one condition matches -> ``{"$or": [...]}`` (at least one condition)."""
    return Condition({"$or": [_json_of(c) for c in conditions]})


def none_of(*conditions: ConditionLike) -> Condition:
    """No condition matches -> ``{"$nor": [...]}`` (at least one condition)."""
    return Condition({"$nor": [_json_of(c) for c in conditions]})


def not_(cond: ConditionLike) -> Condition:
    """The condition does not match -> ``{"$not": cond}``."""
    return Condition({"$not": _json_of(cond)})


def segment(name: str) -> Condition:
    """Membership of the named segment -> ``{"$segment": name}``."""
    return Condition({"$segment": name})


def condition(name: str, arg: Any = True) -> Condition:
    """A custom condition type registered by a plugin -> ``{"$name": arg}``.

    ``name`` is written without ``$``. Whether it is registered (and ``arg`` valid) is checked
    when the rule is compiled with the registry.
    """
    if not isinstance(name, str) or not CONDITION_NAME_RE.fullmatch(name):
        raise RuleError(
            "",
            f"invalid condition name {name!r}: use lowercase letters, digits and _, "
            'starting with a letter, and no leading "$"',
        )
    if name in BUILTIN_OPERATORS:
        raise RuleError("", f'"{name}" is a built-in operator, not a custom condition')
    return Condition({f"${name}": arg})
