"""Properties of compiled rules, checked on generated rules and documents (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_sdk.rules.compiler import compile_rule

KEYS = ["a", "b", "c", "0"]
PATHS = ["a", "b", "a.b", "a.0", "b.c", "a.b.c", "a.0.b", "c.a.b.0"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "x", "ab", "AB", "a\nb", "1"])
    | st.text(max_size=4)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=2), children, max_size=4)
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3)
subjects = documents | json_values

finite_numbers = st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)
simple_values = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0, "x", "ab", "", "1"])
)
literals = st.recursive(
    simple_values,
    lambda c: st.lists(c, max_size=2) | st.dictionaries(st.sampled_from(KEYS), c, max_size=2),
    max_leaves=4,
)

leaf_operators = st.one_of(
    st.builds(lambda v: {"$eq": v}, literals),
    st.builds(lambda v: {"$ne": v}, literals),
    st.builds(
        lambda op, n: {op: n}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), finite_numbers
    ),
    st.builds(lambda v: {"$in": v}, st.lists(literals, max_size=4)),
    st.builds(lambda v: {"$nin": v}, st.lists(literals, max_size=4)),
    st.builds(lambda v: {"$all": v}, st.lists(literals, max_size=3)),
    st.builds(lambda n: {"$size": n}, st.integers(0, 3)),
    st.builds(lambda b: {"$exists": b}, st.booleans()),
    st.builds(
        lambda t: {"$type": t},
        st.sampled_from(["string", "number", "boolean", "array", "object", "null"]),
    ),
    st.builds(
        lambda r, o: {"$regex": r, "$options": o},
        st.sampled_from(["^a", "b$", "a.b", "x|1", "^$", "(?:ab)+"]),
        st.sampled_from(["", "i", "m", "s", "x", "ims"]),
    ),
)
leaf_fields = st.builds(lambda p, c: {p: c}, st.sampled_from(PATHS), leaf_operators | literals)
operators = st.one_of(
    leaf_operators,
    st.builds(lambda a, b: {**a, **b}, leaf_operators, leaf_operators),
    st.builds(lambda c: {"$not": c}, leaf_operators | literals),
    st.builds(lambda v: {"$all": v}, st.lists(literals | leaf_operators, max_size=3)),
    st.builds(lambda c: {"$elemMatch": c}, leaf_operators | leaf_fields),
)
field_conditions = st.builds(lambda p, c: {p: c}, st.sampled_from(PATHS), operators | literals)
rules = st.recursive(
    field_conditions | st.just({}),
    lambda children: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$nor": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda r: {"$not": r}, children),
        st.builds(lambda a, b: {**a, **b}, field_conditions, children),
    ),
    max_leaves=6,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rules, st.lists(subjects, min_size=1, max_size=3))
def test_compiled_rules_never_raise_and_explain_agrees(rule: Any, docs: list[Any]) -> None:
    compiled = compile_rule(rule)
    for doc in docs:
        verdict = compiled(doc)
        assert verdict is True or verdict is False
        explanation = compiled.explain(doc)
        assert explanation.matched is verdict
        assert isinstance(explanation.text, str) and explanation.text


@settings(FAST, max_examples=40)
@given(rules, rules, documents)
def test_logical_operators_agree_with_python(a: Any, b: Any, doc: Any) -> None:
    ra, rb = compile_rule(a)(doc), compile_rule(b)(doc)
    assert compile_rule({"$not": a})(doc) is (not ra)
    assert compile_rule({"$nor": [a, b]})(doc) is (not (ra or rb))
    assert compile_rule({"$and": [a, b]})(doc) is all([ra, rb])
    assert compile_rule({"$or": [a, b]})(doc) is any([ra, rb])
    assert compile_rule({"$and": [a, b, a, b, a]})(doc) is all([ra, rb])
    assert compile_rule({"$or": [a, b, a, b, a]})(doc) is any([ra, rb])


@FAST
@given(st.sampled_from(PATHS), operators, documents)
def test_field_not_is_the_negation(path: str, cond: Any, doc: Any) -> None:
    plain = compile_rule({path: cond})(doc)
    assert compile_rule({path: {"$not": cond}})(doc) is (not plain)


def _same(x: Any, y: Any) -> bool:
    """Reference JSON equality for scalars: bools are not numbers, 1 == 1.0."""
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    return type(x) is type(y) and x == y


in_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-3, 3, allow_nan=False)
    | st.sampled_from([1.0, 0.0, "", "x", "1", "True"])
)


@FAST
@given(st.lists(in_scalars, max_size=6), in_scalars | st.lists(in_scalars, max_size=4))
def test_in_agrees_with_membership(members: list[Any], value: Any) -> None:
    candidates = value if isinstance(value, list) else [value]
    expected = any(_same(c, m) for c in candidates for m in members)
    assert compile_rule({"a": {"$in": members}})({"a": value}) is expected
    assert compile_rule({"a": {"$nin": members}})({"a": value}) is (not expected)
    # $in is the OR of $eq
    if members:
        ors = compile_rule({"$or": [{"a": {"$eq": m}} for m in members]})
        assert ors({"a": value}) is expected
