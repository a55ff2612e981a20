"""The rule compiler: MongoDB/GrowthBook semantics, load-time errors, explanations."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from persona_sdk.errors import PluginError, RuleError
from persona_sdk.rules.compiler import (
    MISSING,
    TYPE_NAMES,
    CompiledRule,
    Explanation,
    compile_rule,
    dict_resolver,
)
from persona_sdk.rules.conditions import BUILTIN_OPERATORS, ConditionRegistry


class Subject(dict):  # type: ignore[type-arg]
    """A plain mapping subject that also answers segment membership."""

    def __init__(self, data: dict[str, Any], segments: tuple[str, ...] = ()) -> None:
        super().__init__(data)
        self.segments = set(segments)
        self.asked: list[str] = []

    def in_segment(self, name: str) -> bool:
        self.asked.append(name)
        return name in self.segments


def check(rule: Any, doc: Any) -> bool:
    return compile_rule(rule)(doc)


# (rule, document, expected verdict)
SEMANTICS: list[tuple[Any, Any, bool]] = [
    # implicit equality and $eq: strict JSON types, 1 == 1.0, arrays match on any element
    ({"a": 1}, {"a": 1}, True),
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": 1}, {"a": True}, False),
    ({"a": True}, {"a": 1}, False),
    ({"a": 0}, {"a": False}, False),
    ({"a": "x"}, {"a": "x"}, True),
    ({"a": "x"}, {"a": "X"}, False),
    ({"a": "1"}, {"a": 1}, False),
    ({"a": "x"}, {"a": ["y", "x"]}, True),
    ({"a": 2}, {"a": [1, 2.0]}, True),
    ({"a": 1}, {"a": [True]}, False),
    ({"a": [1, 2]}, {"a": [1, 2]}, True),
    ({"a": [1, 2]}, {"a": [2, 1]}, False),
    ({"a": [1, 2]}, {"a": [[1, 2], 3]}, True),
    ({"a": {"b": 1}}, {"a": {"b": 1}}, True),
    ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, False),
    ({"a": {}}, {"a": {}}, True),
    ({"a": 1}, {}, False),
    ({"a": {"$eq": "x"}}, {"a": "x"}, True),
    ({"a": {"$eq": None}}, {}, True),
    ({"a": {"$eq": None}}, {"a": None}, True),
    ({"a": {"$eq": None}}, {"a": 0}, False),
    ({"a": None}, {"a": [1, None]}, True),
    # $ne: true when missing, false when any element equals
    ({"a": {"$ne": 1}}, {}, True),
    ({"a": {"$ne": 1}}, {"a": 2}, True),
    ({"a": {"$ne": 1}}, {"a": "1"}, True),
    ({"a": {"$ne": 1}}, {"a": 1}, False),
    ({"a": {"$ne": 1}}, {"a": [2, 1]}, False),
    ({"a": {"$ne": 1}}, {"a": [2, 3]}, True),
    ({"a": {"$ne": None}}, {}, False),
    # comparisons: numbers only, never bools or strings; missing never matches
    ({"a": {"$gt": 5}}, {"a": 6}, True),
    ({"a": {"$gt": 5}}, {"a": 5}, False),
    ({"a": {"$gt": 5}}, {"a": 5.5}, True),
    ({"a": {"$gt": 5}}, {"a": "6"}, False),
    ({"a": {"$gt": 0}}, {"a": True}, False),
    ({"a": {"$gt": 5}}, {"a": None}, False),
    ({"a": {"$gt": 5}}, {}, False),
    ({"a": {"$gt": 5}}, {"a": [1, 7]}, True),
    ({"a": {"$gt": 5}}, {"a": [1, 2]}, False),
    ({"a": {"$gt": 5}}, {"a": {"b": 9}}, False),
    ({"a": {"$gte": 5}}, {"a": 5}, True),
    ({"a": {"$gte": 5}}, {"a": 4.99}, False),
    ({"a": {"$lt": 5}}, {"a": 4}, True),
    ({"a": {"$lt": 5}}, {"a": 5}, False),
    ({"a": {"$lt": 5}}, {}, False),
    ({"a": {"$lte": 5}}, {"a": 5}, True),
    ({"a": {"$lte": 5}}, {"a": 6}, False),
    ({"a": {"$lte": -1.5}}, {"a": -2}, True),
    ({"a": {"$gt": 1, "$lt": 5}}, {"a": 3}, True),
    ({"a": {"$gt": 1, "$lt": 5}}, {"a": 6}, False),
    # as in MongoDB, without $elemMatch each operator may be satisfied by a different element
    ({"a": {"$gte": 80, "$lt": 85}}, {"a": [70, 90]}, True),
    # $in / $nin
    ({"a": {"$in": [1, "x"]}}, {"a": 1}, True),
    ({"a": {"$in": [1, "x"]}}, {"a": 1.0}, True),
    ({"a": {"$in": [1, "x"]}}, {"a": True}, False),
    ({"a": {"$in": [1, "x"]}}, {"a": "x"}, True),
    ({"a": {"$in": [1, "x"]}}, {"a": "y"}, False),
    ({"a": {"$in": [1, "x"]}}, {}, False),
    ({"a": {"$in": [1, "x"]}}, {"a": [0, "x"]}, True),
    ({"a": {"$in": [1, "x"]}}, {"a": [0, 2]}, False),
    ({"a": {"$in": [True]}}, {"a": True}, True),
    ({"a": {"$in": [True]}}, {"a": 1}, False),
    ({"a": {"$in": [None]}}, {}, True),
    ({"a": {"$in": [None]}}, {"a": None}, True),
    ({"a": {"$in": [[1, 2]]}}, {"a": [1, 2]}, True),
    ({"a": {"$in": [{"b": 1}]}}, {"a": {"b": 1}}, True),
    ({"a": {"$in": []}}, {"a": 1}, False),
    ({"a": {"$nin": [1, 2]}}, {}, True),
    ({"a": {"$nin": [1, 2]}}, {"a": 3}, True),
    ({"a": {"$nin": [1, 2]}}, {"a": 1}, False),
    ({"a": {"$nin": [1, 2]}}, {"a": [3, 1]}, False),
    ({"a": {"$nin": [1, 2]}}, {"a": [3, 4]}, True),
    ({"a": {"$nin": []}}, {"a": 1}, True),
    # $all: the field must be an array holding every member
    ({"a": {"$all": ["x", "y"]}}, {"a": ["y", "z", "x"]}, True),
    ({"a": {"$all": ["x", "y"]}}, {"a": ["x"]}, False),
    ({"a": {"$all": ["x"]}}, {"a": "x"}, False),
    ({"a": {"$all": ["x"]}}, {}, False),
    ({"a": {"$all": []}}, {"a": []}, True),
    ({"a": {"$all": []}}, {"a": "x"}, False),
    ({"a": {"$all": [{"$gt": 5}, "z"]}}, {"a": [1, 6, "z"]}, True),
    ({"a": {"$all": [{"$gt": 5}, "z"]}}, {"a": [1, 2, "z"]}, False),
    # $size
    ({"a": {"$size": 2}}, {"a": [1, [2, 3]]}, True),
    ({"a": {"$size": 2}}, {"a": [1]}, False),
    ({"a": {"$size": 2}}, {"a": "ab"}, False),
    ({"a": {"$size": 0}}, {"a": []}, True),
    ({"a": {"$size": 0}}, {}, False),
    # $exists
    ({"a": {"$exists": True}}, {"a": None}, True),
    ({"a": {"$exists": True}}, {}, False),
    ({"a": {"$exists": False}}, {}, True),
    ({"a": {"$exists": False}}, {"a": None}, False),
    # $type (bool is not a number; arrays match on any element, except for "array")
    ({"a": {"$type": "string"}}, {"a": "x"}, True),
    ({"a": {"$type": "string"}}, {"a": 1}, False),
    ({"a": {"$type": "string"}}, {"a": [1, "x"]}, True),
    ({"a": {"$type": "number"}}, {"a": 1}, True),
    ({"a": {"$type": "number"}}, {"a": 1.5}, True),
    ({"a": {"$type": "number"}}, {"a": True}, False),
    ({"a": {"$type": "boolean"}}, {"a": False}, True),
    ({"a": {"$type": "boolean"}}, {"a": 0}, False),
    ({"a": {"$type": "null"}}, {"a": None}, True),
    ({"a": {"$type": "null"}}, {}, False),
    ({"a": {"$type": "array"}}, {"a": []}, True),
    ({"a": {"$type": "array"}}, {"a": "x"}, False),
    ({"a": {"$type": "object"}}, {"a": {"b": 1}}, True),
    ({"a": {"$type": "object"}}, {"a": []}, False),
    # $regex: search, strings only, flags
    ({"a": {"$regex": "^ab"}}, {"a": "abc"}, True),
    ({"a": {"$regex": "^ab"}}, {"a": "cab"}, False),
    ({"a": {"$regex": "b"}}, {"a": "abc"}, True),
    ({"a": {"$regex": "1"}}, {"a": 1}, False),
    ({"a": {"$regex": "^ab"}}, {"a": ["x", "abz"]}, True),
    ({"a": {"$regex": "^ab"}}, {}, False),
    ({"a": {"$regex": "^ab"}}, {"a": "ABC"}, False),
    ({"a": {"$regex": "^ab", "$options": "i"}}, {"a": "ABC"}, True),
    ({"a": {"$regex": "^b"}}, {"a": "a\nb"}, False),
    ({"a": {"$regex": "^b", "$options": "m"}}, {"a": "a\nb"}, True),
    ({"a": {"$regex": "a.b"}}, {"a": "a\nb"}, False),
    ({"a": {"$regex": "a.b", "$options": "s"}}, {"a": "a\nb"}, True),
    ({"a": {"$regex": "a b  # comment", "$options": "x"}}, {"a": "ab"}, True),
    # $elemMatch: one element must satisfy everything
    ({"a": {"$elemMatch": {"b": 1, "c": {"$gt": 2}}}}, {"a": [{"b": 1, "c": 3}]}, True),
    (
        {"a": {"$elemMatch": {"b": 1, "c": {"$gt": 2}}}},
        {"a": [{"b": 1, "c": 1}, {"b": 2, "c": 3}]},
        False,
    ),
    ({"a.b": 1, "a.c": {"$gt": 2}}, {"a": [{"b": 1, "c": 1}, {"b": 2, "c": 3}]}, True),
    ({"a": {"$elemMatch": {"b": 1}}}, {"a": {"b": 1}}, False),
    ({"a": {"$elemMatch": {"b": {"$exists": False}}}}, {"a": [1, "x"]}, False),
    ({"a": {"$elemMatch": {}}}, {"a": [{}]}, True),
    ({"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, {"a": [70, 82]}, True),
    ({"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, {"a": [70, 90]}, False),
    ({"a": {"$elemMatch": {"$gte": 80}}}, {}, False),
    # field-level $not: negates the whole field condition (so it matches a missing field)
    ({"a": {"$not": {"$gt": 5}}}, {"a": 3}, True),
    ({"a": {"$not": {"$gt": 5}}}, {"a": 6}, False),
    ({"a": {"$not": {"$gt": 5}}}, {}, True),
    ({"a": {"$not": {"$gt": 5}}}, {"a": [1, 6]}, False),
    ({"a": {"$not": {"$regex": "^x"}}}, {"a": "xy"}, False),
    ({"a": {"$not": {"$regex": "^x"}}}, {"a": "y"}, True),
    ({"a": {"$not": "x"}}, {"a": "y"}, True),
    # logical operators, top-level $not, implicit AND, the empty rule
    ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}, True),
    ({"$and": [{"a": 1}, {"b": 2}]}, {"a": 1}, False),
    ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
    ({"$or": [{"a": 1}, {"b": 2}]}, {}, False),
    ({"$nor": [{"a": 1}, {"b": 2}]}, {}, True),
    ({"$nor": [{"a": 1}, {"b": 2}]}, {"b": 2}, False),
    ({"$not": {"a": 1}}, {}, True),
    ({"$not": {"a": 1}}, {"a": 1}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
    ({"a": 1, "$or": [{"b": 2}, {"c": 3}]}, {"a": 1, "c": 3}, True),
    ({"$and": [{"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}, {"e": 1}]}, dict.fromkeys("abcde", 1), True),
    ({"$and": [{"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}, {"e": 1}]}, dict.fromkeys("abcd", 1), False),
    ({"$or": [{"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}, {"e": 1}]}, {"e": 1}, True),
    ({"$or": [{"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}, {"e": 1}]}, {"f": 1}, False),
    ({}, {}, True),
    ({}, None, True),
    # dotted paths: nesting, list indexes, collecting a field across a list of objects
    ({"traits.address.city": "Paris"}, {"traits": {"address": {"city": "Paris"}}}, True),
    ({"traits.address.city": "Paris"}, {"traits": {"address": "Paris"}}, False),
    ({"a.b.c.d": 1}, {"a": {"b": {"c": {"d": 1}}}}, True),
    ({"a.b.c.d": {"$exists": False}}, {"a": {"b": 7}}, True),
    ({"a.0": "x"}, {"a": ["x", "y"]}, True),
    ({"a.1": "x"}, {"a": ["x", "y"]}, False),
    ({"a.5": "x"}, {"a": ["x", "y"]}, False),
    ({"a.0.b": 2}, {"a": [{"b": 2}]}, True),
    ({"a.0": "x"}, {"a": {"0": "x"}}, True),
    ({"orders.amount": {"$gt": 100}}, {"orders": [{"amount": 50}, {"amount": 150}]}, True),
    ({"orders.amount": {"$gt": 100}}, {"orders": [{"amount": 50}, {"sku": "x"}]}, False),
    ({"orders.tags": "b"}, {"orders": [{"tags": ["a"]}, {"tags": ["b"]}]}, True),
    ({"orders.amount": {"$exists": True}}, {"orders": [1, 2]}, False),
    ({"a.b": 1}, {"a": "text"}, False),
    ({"a.b": {"$exists": False}}, {"a": 5}, True),
]


@pytest.mark.parametrize(("rule", "doc", "expected"), SEMANTICS)
def test_semantics(rule: Any, doc: Any, expected: bool) -> None:
    compiled = compile_rule(rule)
    assert compiled(doc) is expected
    assert compiled.explain(doc).matched is expected


@pytest.mark.parametrize("subject", [None, 5, "text", [1, {"a": 1}], {"a": {"b": [None]}}, 1.5])
def test_odd_subjects_never_raise(subject: Any) -> None:
    rule = compile_rule(
        {
            "$or": [
                {"a": 1},
                {"a.b": {"$gt": 1}},
                {"a.0.b": {"$in": ["x", 2]}},
                {"a": {"$elemMatch": {"b": {"$size": 1}}}},
                {"a.b": {"$regex": "x", "$options": "i"}},
            ]
        }
    )
    assert rule(subject) in (True, False)
    assert isinstance(rule.explain(subject).text, str)


# -- errors ------------------------------------------------------------------------------------


def test_error_names_the_place_exactly() -> None:
    spec = {"$and": [{"traits.plan": "pro"}, {"traits.ltv": {"$gte": "abc"}}]}
    with pytest.raises(RuleError) as info:
        compile_rule(spec, where="segments.vip.rule")
    assert (
        str(info.value) == 'segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"'
    )
    assert info.value.where == "segments.vip.rule.$and[1].traits.ltv"
    assert info.value.problem == '$gte expects a number, got "abc"'


ERRORS: list[tuple[Any, str]] = [
    ({"a": {"$gt": "5"}}, 'rule.a: $gt expects a number, got "5"'),
    ({"a": {"$lt": True}}, "rule.a: $lt expects a number, got true"),
    ({"a": {"$lte": None}}, "rule.a: $lte expects a number, got null"),
    ({"a": {"$gte": [1]}}, "rule.a: $gte expects a number, got [1]"),
    ({"a": {"$gte": float("nan")}}, "rule.a: $gte expects a number, got NaN"),
    ({"a": {"$in": 5}}, "rule.a: $in expects a list, got 5"),
    ({"a": {"$nin": "ab"}}, 'rule.a: $nin expects a list, got "ab"'),
    ({"a": {"$all": {"x": 1}}}, 'rule.a: $all expects a list, got {"x": 1}'),
    ({"a": {"$size": -1}}, "rule.a: $size expects a non-negative integer, got -1"),
    ({"a": {"$size": 1.5}}, "rule.a: $size expects a non-negative integer, got 1.5"),
    ({"a": {"$size": True}}, "rule.a: $size expects a non-negative integer, got true"),
    ({"a": {"$exists": 1}}, "rule.a: $exists expects true or false, got 1"),
    (
        {"a": {"$type": "int"}},
        'rule.a: $type expects one of "array", "boolean", "null", "number", "object", '
        '"string", got "int"',
    ),
    ({"a": {"$elemMatch": [1]}}, "rule.a: $elemMatch expects an object, got [1]"),
    (
        {"a": {"$elemMatch": {"b": {"$gt": "x"}}}},
        'rule.a.$elemMatch.b: $gt expects a number, got "x"',
    ),
    ({"a": {"$not": {"$gt": "x"}}}, 'rule.a.$not: $gt expects a number, got "x"'),
    ({"a": {"$all": [{"$gt": "x"}]}}, 'rule.a.$all[0]: $gt expects a number, got "x"'),
    ({"a": {"$regex": 5}}, "rule.a: $regex expects a string, got 5"),
    (
        {"a": {"$regex": "x", "$options": "g"}},
        'rule.a: $options expects letters among "imsx", got "g"',
    ),
    ({"a": {"$options": "i"}}, "rule.a: $options needs a $regex"),
    (
        {"a": {"$gt": 1, "b": 2}},
        "rule.a: cannot mix operators ($gt) with plain keys in one condition",
    ),
    ({"$and": []}, "rule: $and expects a non-empty list of objects, got []"),
    ({"$or": {"a": 1}}, 'rule: $or expects a non-empty list of objects, got {"a": 1}'),
    ({"$nor": [{"a": 1}, 5]}, "rule.$nor[1]: expected an object, got 5"),
    ({"$not": [{"a": 1}]}, 'rule: $not expects an object, got [{"a": 1}]'),
    ({"$not": {"a": {"$in": 1}}}, "rule.$not.a: $in expects a list, got 1"),
    (
        {"$or": [{"a": 1}, {"$and": [{"b": 1}, {"c": {"$size": "2"}}]}]},
        'rule.$or[1].$and[1].c: $size expects a non-negative integer, got "2"',
    ),
    (["a"], 'rule: expected an object, got ["a"]'),
    ({"traits..x": 1}, 'rule.traits..x: empty part in field path "traits..x"'),
    ({".x": 1}, 'rule..x: empty part in field path ".x"'),
    ({"x.": 1}, 'rule.x.: empty part in field path "x."'),
    ({"": 1}, 'rule: a field path must be a non-empty string, got ""'),
    ({"$segment": ""}, 'rule: $segment expects a segment name, got ""'),
    ({"$segment": 5}, "rule: $segment expects a segment name, got 5"),
    ({"a": {"$and": [{"b": 1}]}}, "rule.a: $and cannot be used inside a field condition"),
    ({"$gt": 5}, 'rule: $gt applies to a field, e.g. {"traits.x": {"$gt": ...}}'),
    (
        {"a": {"$elemMatch": {"$segment": "vip"}}},
        "rule.a.$elemMatch: $segment cannot be used inside $elemMatch",
    ),
    ({"a": {1, 2}}, "rule.a: not a JSON value: {1, 2}"),
    ({"a": {"$in": [object]}}, "rule.a.$in[0]: not a JSON value: <class 'object'>"),
]


@pytest.mark.parametrize(("spec", "message"), ERRORS)
def test_error_messages(spec: Any, message: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_rule(spec)
    assert str(info.value) == message


def test_unknown_operators() -> None:
    with pytest.raises(RuleError) as info:
        compile_rule({"$foo": 1})
    assert str(info.value) == (
        'rule: unknown operator "$foo" (known: $and, $nor, $not, $or, $segment)'
    )
    with pytest.raises(RuleError) as info:
        compile_rule({"a": {"$foo": 1}})
    assert str(info.value).startswith('rule.a: unknown operator "$foo" (known: $all, $elemMatch,')
    assert "$regex" in str(info.value)
    # GrowthBook's version operators are not built in: refused, not silently false
    with pytest.raises(RuleError, match=r'unknown operator "\$veq"'):
        compile_rule({"a": {"$veq": "1.2.0"}})


def test_bad_and_overlong_regex() -> None:
    with pytest.raises(RuleError) as info:
        compile_rule({"traits.email": {"$regex": "(unclosed"}})
    assert str(info.value).startswith(
        'rule.traits.email: $regex "(unclosed" is not a valid regular expression: '
    )
    with pytest.raises(RuleError) as info:
        compile_rule({"a": {"$regex": "x" * 501}})
    assert str(info.value) == (
        "rule.a: $regex pattern is too long (501 characters, the maximum is 500)"
    )
    assert compile_rule({"a": {"$regex": "x" * 500}})({"a": "x" * 500})


def test_errors_are_load_time_only() -> None:
    # a rule that compiled is never going to raise on unexpected types at request time
    rule = compile_rule({"a": {"$gt": 1}, "b": {"$regex": "x"}, "c": {"$size": 1}})
    for value in (None, "x", [None, {"k": []}], {"x": 1}, True, 2**100, -0.0):
        assert rule({"a": value, "b": value, "c": value}) in (True, False)


# -- $segment ----------------------------------------------------------------------------------


def test_segment_membership_and_refs() -> None:
    spec = {
        "$or": [
            {"$segment": "vip"},
            {"$and": [{"a": 1}, {"$not": {"$segment": "churned"}}]},
            {"$nor": [{"$segment": "staff"}, {"$segment": "vip"}]},
        ]
    }
    rule = compile_rule(spec)
    assert rule.refs == frozenset({"vip", "churned", "staff"})
    assert rule(Subject({}, segments=("vip",)))
    assert rule(Subject({"a": 1}))
    assert not rule(Subject({"a": 1}, segments=("churned", "staff")))
    subject = Subject({})
    rule(subject)
    assert subject.asked[0] == "vip"


def test_rule_without_segments_has_no_refs() -> None:
    assert compile_rule({"a": 1}).refs == frozenset()


# -- custom conditions -------------------------------------------------------------------------


def _country_factory(arg: Any, where: str) -> Any:
    if not isinstance(arg, list) or not all(isinstance(c, str) for c in arg):
        raise RuleError(where, f"expects a list of country codes, got {arg!r}")
    countries = frozenset(arg)
    return lambda subject: subject.get("country") in countries


def _registry() -> ConditionRegistry:
    registry = ConditionRegistry()
    registry.register("geo_country", _country_factory, doc="the visitor's country is one of")
    return registry


def test_custom_condition_compiles_and_matches() -> None:
    rule = compile_rule(
        {"$and": [{"$geo_country": ["FR", "BE"]}, {"a": 1}]}, conditions=_registry()
    )
    assert rule({"country": "FR", "a": 1})
    assert not rule({"country": "DE", "a": 1})
    assert rule.explain({"country": "DE", "a": 1}).text == '$geo_country(["FR", "BE"]) is false'


def test_custom_condition_factory_gets_where_and_validates() -> None:
    with pytest.raises(RuleError) as info:
        compile_rule(
            {"$or": [{"a": 1}, {"$geo_country": "FR"}]}, where="seg.eu.rule", conditions=_registry()
        )
    assert str(info.value) == (
        "seg.eu.rule.$or[1].$geo_country: expects a list of country codes, got 'FR'"
    )


def test_custom_condition_factory_crash_becomes_rule_error() -> None:
    registry = ConditionRegistry()
    registry.register("boom", lambda arg, where: 1 / 0)
    with pytest.raises(RuleError, match=r"rule\.\$boom: invalid argument 1: division by zero"):
        compile_rule({"$boom": 1}, conditions=registry)
    registry.register("nothing", lambda arg, where: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(PluginError):
        compile_rule({"$nothing": 1}, conditions=registry)


def test_unknown_custom_condition_lists_registered_ones() -> None:
    with pytest.raises(RuleError) as info:
        compile_rule({"$geo_city": ["Paris"]}, conditions=_registry())
    assert str(info.value) == (
        'rule: unknown operator "$geo_city" (known: $and, $nor, $not, $or, $segment, $geo_country)'
    )
    with pytest.raises(RuleError, match="unknown operator"):
        compile_rule({"$geo_country": ["FR"]})  # no registry given


def test_custom_condition_not_allowed_inside_elem_match() -> None:
    with pytest.raises(RuleError, match=r"\$geo_country cannot be used inside \$elemMatch"):
        compile_rule({"a": {"$elemMatch": {"$geo_country": ["FR"]}}}, conditions=_registry())


def test_registry_rejects_bad_names_and_duplicates() -> None:
    registry = _registry()
    for bad in ("$geo", "Geo", "9x", "", "geo-city", "geo city"):
        with pytest.raises(PluginError):
            registry.register(bad, _country_factory)
    for builtin in ("and", "in", "segment", "not", "regex"):
        with pytest.raises(PluginError, match="built-in"):
            registry.register(builtin, _country_factory)
    with pytest.raises(PluginError, match="already registered"):
        registry.register("geo_country", _country_factory)
    with pytest.raises(PluginError, match="not callable"):
        registry.register("geo_x", "nope")  # type: ignore[arg-type]
    registry.register("a_1", _country_factory)
    assert registry.names() == ["a_1", "geo_country"]
    assert registry.docs() == {"a_1": "", "geo_country": "the visitor's country is one of"}
    assert registry.get("geo_country") is _country_factory
    assert registry.get("missing") is None


def _outcome(spec: Any) -> str:
    try:
        compile_rule(spec)
    except RuleError as exc:
        return str(exc)
    return "compiled"


def test_builtin_operator_names_match_the_compiler() -> None:
    # every name the registry reserves is one the compiler implements...
    for name in BUILTIN_OPERATORS:
        outcomes = [_outcome({f"${name}": "?"}), _outcome({"a": {f"${name}": "?"}})]
        assert not all("unknown operator" in o for o in outcomes), name
    # ...and every operator the compiler lists as known is reserved
    listed = _outcome({"a": {"$foo": 1}}) + " " + _outcome({"$foo": 1})
    names = {word.strip(",()$") for word in listed.split() if word.startswith("$")}
    assert names - {"foo"} <= BUILTIN_OPERATORS


# -- explanations ------------------------------------------------------------------------------

PROFILE = {
    "behaviour": {"visits_30d": 6},
    "traits": {"ltv": 820, "plan": "pro", "email": "ann@example.com", "tags": ["a", "b"]},
}
POOR = {"behaviour": {"visits_30d": 6}, "traits": {"ltv": 120, "plan": "free"}}
RULE = {"$and": [{"behaviour.visits_30d": {"$gte": 3}}, {"traits.ltv": {"$gte": 500}}]}


def test_explain_and_that_matches_joins_its_leaves() -> None:
    explanation = compile_rule(RULE).explain(PROFILE)
    assert explanation == Explanation(matched=True, text="visits_30d=6 >= 3 and ltv=820 >= 500")
    assert str(explanation) == explanation.text


def test_explain_failing_rule_shows_first_failing_condition() -> None:
    explanation = compile_rule(RULE).explain(POOR)
    assert explanation == Explanation(matched=False, text="ltv=120 >= 500 is false")
    assert compile_rule(RULE).explain({}).text == "visits_30d=(missing) >= 3 is false"


def test_explain_or_shows_first_matching_branch_or_all_failures() -> None:
    rule = compile_rule({"$or": [{"traits.ltv": {"$gt": 1000}}, {"traits.plan": "pro"}]})
    assert rule.explain(PROFILE).text == 'plan="pro" == "pro"'
    assert rule.explain(POOR).text == 'ltv=120 > 1000 is false and plan="free" == "pro" is false'


def test_explain_not_and_nor() -> None:
    rule = compile_rule({"$not": {"traits.plan": "pro"}})
    assert rule.explain(POOR) == Explanation(True, 'plan="free" == "pro" is false')
    assert rule.explain(PROFILE) == Explanation(False, 'not (plan="pro" == "pro") is false')
    nor = compile_rule({"$nor": [{"traits.plan": "pro"}, {"traits.ltv": {"$lt": 200}}]})
    assert nor.explain(POOR) == Explanation(False, "not (ltv=120 < 200) is false")
    field_not = compile_rule({"traits.ltv": {"$not": {"$lt": 200}}})
    assert field_not.explain(PROFILE).text == "ltv=820 < 200 is false"
    assert field_not.explain(POOR).text == "not (ltv=120 < 200) is false"


def test_explain_operator_renderings() -> None:
    cases = [
        ({"traits.plan": {"$ne": "free"}}, 'plan="pro" != "free"'),
        ({"traits.plan": {"$in": ["pro", "team"]}}, 'plan="pro" in ["pro", "team"]'),
        ({"traits.plan": {"$nin": ["free"]}}, 'plan="pro" not in ["free"]'),
        ({"traits.ltv": {"$lte": 900.5}}, "ltv=820 <= 900.5"),
        (
            {"traits.email": {"$regex": "@example\\.com$", "$options": "i"}},
            'email="ann@example.com" matches /@example\\.com$/i',
        ),
        ({"traits.tags": {"$all": ["a"]}}, 'tags=["a", "b"] has all ["a"]'),
        ({"traits.tags": {"$size": 2}}, 'tags=["a", "b"] has size 2'),
        ({"traits.plan": {"$exists": True}}, 'plan="pro" exists'),
        ({"traits.zip": {"$exists": False}}, "zip=(missing) does not exist"),
        ({"traits.plan": {"$type": "string"}}, 'plan="pro" has type "string"'),
        (
            {"traits.tags": {"$elemMatch": {"$eq": "b"}}},
            'tags=["a", "b"] has an element matching {"$eq": "b"}',
        ),
        ({"traits.ltv": {"$gt": 100, "$lt": 1000}}, "ltv=820 > 100 and ltv=820 < 1000"),
        ({"plan": "x"}, 'plan=(missing) == "x" is false'),
        ({}, "always true (empty condition)"),
    ]
    for spec, text in cases:
        assert compile_rule(spec).explain(PROFILE).text == text


def test_explain_segments() -> None:
    rule = compile_rule({"$segment": "vip"})
    assert rule.explain(Subject({}, segments=("vip",))) == Explanation(True, "in segment vip")
    assert rule.explain(Subject({})) == Explanation(False, "not in segment vip")


def test_explain_long_values_are_shortened() -> None:
    text = compile_rule({"a": {"$size": 1}}).explain({"a": list(range(100))}).text
    assert "..." in text and len(text) < 120


# -- compiled rule object, spec, resolvers ---------------------------------------------------


def test_spec_is_a_normalized_private_copy() -> None:
    source: dict[str, Any] = {"a": {"$in": (1, 2)}, "b": [1, 2]}
    rule = compile_rule(source)
    assert rule.spec == {"a": {"$in": [1, 2]}, "b": [1, 2]}
    source["b"].append(3)
    source["a"]["$in"] = (5,)
    assert rule.spec == {"a": {"$in": [1, 2]}, "b": [1, 2]}
    assert rule({"a": 1, "b": [1, 2]})
    assert isinstance(rule, CompiledRule)


def test_compiled_rule_calls_predicate() -> None:
    rule = compile_rule({"a": 1})
    assert rule.predicate({"a": 1}) is True
    assert "predicate" not in repr(rule) and "spec" in repr(rule)


def test_missing_sentinel() -> None:
    assert repr(MISSING) == "MISSING"
    assert not MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert dict_resolver(("a", "b"), "rule.a.b")({"a": {}}) is MISSING


def test_dict_resolver_paths() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": [2, 3]}, {"d": 4}], "e": None}, "t": (5, 6)}
    assert dict_resolver(("a", "b", "0", "c"), "w")(doc) == 1
    assert dict_resolver(("a", "b", "c"), "w")(doc) == [1, 2, 3]
    assert dict_resolver(("a", "b", "9"), "w")(doc) is MISSING
    assert dict_resolver(("a", "e"), "w")(doc) is None
    assert dict_resolver(("a", "e", "x"), "w")(doc) is MISSING
    assert dict_resolver(("t", "1"), "w")(doc) == 6
    assert dict_resolver(("a", "b", "x"), "w")(doc) is MISSING
    assert dict_resolver(("0",), "w")(["first"]) == "first"
    assert dict_resolver(("x",), "w")(None) is MISSING
    with pytest.raises(RuleError):
        dict_resolver(("a", ""), "w")


def test_custom_field_resolver_gets_parts_and_where() -> None:
    seen: list[tuple[tuple[str, ...], str]] = []

    def resolver(path: tuple[str, ...], where: str) -> Any:
        seen.append((path, where))
        if path[0] not in ("traits", "behaviour"):
            raise RuleError(where, f'unknown namespace "{path[0]}"')
        return lambda subject: subject[path[0]].get(path[1], MISSING)

    rule = compile_rule(RULE, where="segments.vip.rule", fields=resolver)
    assert rule(PROFILE)
    assert seen == [
        (("behaviour", "visits_30d"), "segments.vip.rule.$and[0].behaviour.visits_30d"),
        (("traits", "ltv"), "segments.vip.rule.$and[1].traits.ltv"),
    ]
    with pytest.raises(RuleError) as info:
        compile_rule({"$or": [{"trait.ltv": 1}]}, fields=resolver)
    assert str(info.value) == 'rule.$or[0].trait.ltv: unknown namespace "trait"'


def test_type_names_are_the_documented_ones() -> None:
    assert set(TYPE_NAMES) == {"string", "number", "boolean", "array", "object", "null"}


def test_too_deep_rules_are_refused() -> None:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(100):
        spec = {"$not": spec}
    with pytest.raises(RuleError, match="nested too deeply"):
        compile_rule(spec)


def test_explain_survives_values_that_cannot_be_printed() -> None:
    text = compile_rule({"a": {"$gt": 1}}).explain({"a": 10**5000}).text
    assert text == "a=<int> > 1"
