"""The Python rule builder: same JSON as hand-written rules, same verdicts, same errors."""

from __future__ import annotations

from typing import Any

import pytest

from persona_sdk.errors import RuleError
from persona_sdk.rules.builder import (
    Condition,
    all_of,
    any_of,
    condition,
    field,
    none_of,
    not_,
    segment,
)
from persona_sdk.rules.compiler import compile_rule
from persona_sdk.rules.conditions import ConditionRegistry

ROUND_TRIPS: list[tuple[Condition, dict[str, Any]]] = [
    (field("traits.ltv") >= 500, {"traits.ltv": {"$gte": 500}}),
    (field("traits.ltv") > 500, {"traits.ltv": {"$gt": 500}}),
    (field("traits.ltv") <= 5.5, {"traits.ltv": {"$lte": 5.5}}),
    (field("traits.ltv") < 0, {"traits.ltv": {"$lt": 0}}),
    (field("traits.plan") == "pro", {"traits.plan": {"$eq": "pro"}}),
    (field("traits.plan") != "free", {"traits.plan": {"$ne": "free"}}),
    (field("traits.plan") == None, {"traits.plan": {"$eq": None}}),  # noqa: E711
    (500 <= field("traits.ltv"), {"traits.ltv": {"$gte": 500}}),
    (field("traits.plan").isin(["pro", "team"]), {"traits.plan": {"$in": ["pro", "team"]}}),
    (field("traits.plan").isin(("pro",)), {"traits.plan": {"$in": ["pro"]}}),
    (field("traits.plan").not_in(["free"]), {"traits.plan": {"$nin": ["free"]}}),
    (field("traits.zip").exists(), {"traits.zip": {"$exists": True}}),
    (field("traits.zip").exists(False), {"traits.zip": {"$exists": False}}),
    (field("traits.email").matches("@acme\\.com$"), {"traits.email": {"$regex": "@acme\\.com$"}}),
    (
        field("traits.email").matches("^ann", "i"),
        {"traits.email": {"$regex": "^ann", "$options": "i"}},
    ),
    (field("traits.tags").has_all(["a", "b"]), {"traits.tags": {"$all": ["a", "b"]}}),
    (field("traits.tags").size(2), {"traits.tags": {"$size": 2}}),
    (field("traits.tags").type("array"), {"traits.tags": {"$type": "array"}}),
    (
        field("traits.orders").elem_match((field("sku") == "A1") & (field("qty") > 1)),
        {"traits.orders": {"$elemMatch": {"$and": [{"sku": {"$eq": "A1"}}, {"qty": {"$gt": 1}}]}}},
    ),
    (
        field("traits.scores").elem_match({"$gte": 80, "$lt": 85}),
        {"traits.scores": {"$elemMatch": {"$gte": 80, "$lt": 85}}},
    ),
    (
        all_of(field("a") == 1, field("b") == 2),
        {"$and": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]},
    ),
    (any_of(field("a") == 1, {"b": 2}), {"$or": [{"a": {"$eq": 1}}, {"b": 2}]}),
    (none_of(field("a") == 1), {"$nor": [{"a": {"$eq": 1}}]}),
    (not_(field("a") == 1), {"$not": {"a": {"$eq": 1}}}),
    (~(field("a") == 1), {"$not": {"a": {"$eq": 1}}}),
    (segment("vip"), {"$segment": "vip"}),
    (condition("geo_country", ["FR"]), {"$geo_country": ["FR"]}),
    (
        (field("a") == 1) & (field("b") == 2) & (field("c") == 3),
        {"$and": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}, {"c": {"$eq": 3}}]},
    ),
    (
        (field("a") == 1) | (field("b") == 2) | segment("vip"),
        {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}, {"$segment": "vip"}]},
    ),
    (
        {"a": 1} & (field("b") == 2),
        {"$and": [{"a": 1}, {"b": {"$eq": 2}}]},
    ),
    (
        ((field("a") == 1) | (field("b") == 2)) & ~segment("staff"),
        {
            "$and": [
                {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]},
                {"$not": {"$segment": "staff"}},
            ]
        },
    ),
]


@pytest.mark.parametrize(("built", "expected"), ROUND_TRIPS)
def test_builder_produces_the_hand_written_json(built: Condition, expected: dict[str, Any]) -> None:
    assert built.to_json() == expected


class Subject(dict):  # type: ignore[type-arg]
    def __init__(self, data: dict[str, Any], segments: tuple[str, ...] = ()) -> None:
        super().__init__(data)
        self.segments = set(segments)

    def in_segment(self, name: str) -> bool:
        return name in self.segments


DOCS = [
    Subject({}),
    Subject({"a": 1, "b": 2, "c": 3}, segments=("vip",)),
    Subject({"a": 2, "b": 2}, segments=("staff",)),
    Subject(
        {
            "traits": {
                "ltv": 820,
                "plan": "pro",
                "email": "Ann@acme.com",
                "tags": ["a", "b"],
                "orders": [{"sku": "A1", "qty": 2}],
                "scores": [70, 82],
            }
        }
    ),
    Subject({"traits": {"ltv": -1, "plan": "free", "zip": "75001", "tags": "a", "scores": [90]}}),
]


def _registry() -> ConditionRegistry:
    registry = ConditionRegistry()
    registry.register("geo_country", lambda arg, where: lambda s: s.get("country") in arg)
    return registry


@pytest.mark.parametrize(("built", "expected"), ROUND_TRIPS)
def test_builder_compiles_to_the_same_verdicts(built: Condition, expected: dict[str, Any]) -> None:
    registry = _registry()
    from_builder = compile_rule(built, conditions=registry)
    by_hand = compile_rule(expected, conditions=registry)
    assert from_builder.spec == by_hand.spec
    for doc in DOCS:
        assert from_builder(doc) == by_hand(doc)


def test_builder_rule_reads_naturally() -> None:
    rule = compile_rule(
        all_of(
            field("behaviour.visits_30d") >= 3,
            field("traits.ltv") >= 500,
            (field("traits.plan") == "pro") | segment("vip"),
        )
    )
    assert rule.refs == frozenset({"vip"})
    subject = Subject(
        {"behaviour": {"visits_30d": 6}, "traits": {"ltv": 820, "plan": "free"}}, segments=("vip",)
    )
    assert rule(subject)
    assert rule.explain(subject).text == "visits_30d=6 >= 3 and ltv=820 >= 500 and in segment vip"


BUILD_ERRORS = [
    (lambda: field("traits.ltv") >= "x", 'traits.ltv: $gte expects a number, got "x"'),
    (lambda: field("a") < True, "a: $lt expects a number, got true"),
    (lambda: field("a").size(-1), "a: $size expects a non-negative integer, got -1"),
    (lambda: field("a").isin("abc"), 'a: $in expects a list, got "abc"'),
    (
        lambda: field("a").type("int"),
        'a: $type expects one of "array", "boolean", "null", '
        '"number", "object", "string", got "int"',
    ),
    (lambda: field("a").exists("yes"), 'a: $exists expects true or false, got "yes"'),
    (lambda: field("a").matches("x", "g"), 'a: $options expects letters among "imsx", got "g"'),
    (lambda: field("traits..x"), 'traits..x: empty part in field path "traits..x"'),
    (lambda: all_of(), "$and expects a non-empty list of objects, got []"),
    (lambda: any_of(), "$or expects a non-empty list of objects, got []"),
    (lambda: segment(""), '$segment expects a segment name, got ""'),
    (lambda: field("a") == {1, 2}, "a.$eq: not a JSON value: {1, 2}"),
    (lambda: field("a").elem_match(field("b") > "x"), 'b: $gt expects a number, got "x"'),
    (
        lambda: condition("Geo"),
        "invalid condition name 'Geo': use lowercase letters, digits "
        'and _, starting with a letter, and no leading "$"',
    ),
    (lambda: condition("and", []), '"and" is a built-in operator, not a custom condition'),
]


@pytest.mark.parametrize(("build", "message"), BUILD_ERRORS)
def test_builder_mistakes_raise_at_build_time(build: Any, message: str) -> None:
    with pytest.raises(RuleError) as info:
        build()
    assert str(info.value) == message


def test_bad_regex_raises_at_build_time() -> None:
    with pytest.raises(RuleError, match=r'^a: \$regex "\(" is not a valid regular expression'):
        field("a").matches("(")


def test_python_boolean_operators_are_refused() -> None:
    a, b = field("a") == 1, field("b") == 2
    with pytest.raises(TypeError, match="combine conditions with"):
        a and b  # noqa: B018
    with pytest.raises(TypeError, match="&"):
        not a  # noqa: B018
    with pytest.raises(TypeError, match=r"\|"):
        if field("a"):
            pass


def test_to_json_returns_fresh_copies() -> None:
    built = field("a").isin([1, 2]) & segment("vip")
    first = built.to_json()
    first["$and"][0]["a"]["$in"].append(3)
    assert built.to_json() == {"$and": [{"a": {"$in": [1, 2]}}, {"$segment": "vip"}]}
    assert built.to_json() is not built.to_json()


def test_builder_nodes_are_immutable_and_readable() -> None:
    built = field("traits.ltv") >= 500
    with pytest.raises(AttributeError):
        built._json = {}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        field("a").path = "b"  # type: ignore[misc]
    assert repr(built) == 'Condition({"traits.ltv": {"$gte": 500}})'
    assert repr(field("a")) == "field('a')"


def test_custom_condition_is_checked_when_compiled_with_the_registry() -> None:
    built = condition("geo_country", ["FR"]) & (field("a") == 1)
    with pytest.raises(RuleError, match=r'unknown operator "\$geo_country"'):
        compile_rule(built)
    rule = compile_rule(built, conditions=_registry())
    assert rule({"country": "FR", "a": 1})
    assert not rule({"country": "DE", "a": 1})


def test_sets_are_accepted_as_lists() -> None:
    rule = compile_rule(field("a").isin({"x", "y"}))
    assert rule({"a": "y"}) and not rule({"a": "z"})
