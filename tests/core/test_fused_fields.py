"""Fused field predicates (``persona_sdk.rules.fields``) answer exactly as the compiler's
generic predicates do, for any value a trait or a context key may hold (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_sdk import Profile
from persona_sdk.clock import DAY
from persona_sdk.rules.compiler import MISSING, Getter, compile_rule
from persona_sdk.rules.fields import profile_fields
from persona_sdk.rules.subject import Subject

NOW = 1_748_865_600.0

strings = st.sampled_from(["", "DE", "FR", "x", "1"])
scalars = st.one_of(
    strings,
    st.integers(-4, 4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
)
values = st.one_of(
    strings,
    scalars,
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), scalars, max_size=2),
)
numbers = st.integers(-4, 4) | st.floats(-4, 4, allow_nan=False)
members = st.lists(
    st.one_of(strings, st.none(), st.booleans(), st.integers(-2, 2), st.just(1.0)),
    max_size=4,
)
conditions = st.one_of(
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), numbers),
    st.tuples(st.just("$eq"), strings),
    st.tuples(st.just("$eq"), scalars),
    st.tuples(st.just("$in"), members),
    st.tuples(st.just("$nin"), members),
    st.tuples(st.just("$ne"), scalars),
)


def generic_fields(path: tuple[str, ...], where: str) -> Getter:
    """The same fields without their ``fuse``: the compiler's generic predicates only."""
    get = profile_fields(path, where)
    return lambda s: get(s)


def subject_with(value: Any) -> Subject:
    profile = Profile(id="p")
    context: dict[str, Any] = {}
    if value is not MISSING:
        profile.set_trait("t", value, source="test", at=NOW)
        context["k"] = value
    return Subject(profile, context, NOW)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(value=values | st.just(MISSING), cond=conditions, implicit=st.booleans())
def test_fused_trait_and_context_conditions_answer_as_the_generic_ones(
    value: Any, cond: tuple[str, Any], implicit: bool
) -> None:
    op, arg = cond
    subject = subject_with(value)
    for path in ("traits.t", "context.k"):
        rule = {path: arg} if implicit and op == "$eq" else {path: {op: arg}}
        fused = compile_rule(rule, fields=profile_fields)
        generic = compile_rule(rule, fields=generic_fields)
        assert fused.predicate(subject) == generic.predicate(subject), (rule, value)
        assert fused.explain(subject).text == generic.explain(subject).text


@pytest.mark.parametrize("op", ["$gt", "$gte", "$lt", "$lte"])
@given(visits=st.lists(st.integers(0, 40), max_size=12), arg=numbers)
def test_fused_window_comparisons_answer_as_the_generic_ones(
    op: str, visits: list[int], arg: float
) -> None:
    profile = Profile(id="p")
    for days_ago in visits:
        profile.behaviour.sessions.add(int(NOW // DAY) - days_ago)
    rule = {"behaviour.visits_30d": {op: arg}}
    fused = compile_rule(rule, fields=profile_fields).predicate
    generic = compile_rule(rule, fields=generic_fields).predicate
    # twice: the first read fills the counter's memo of window sums, the second uses it
    for _ in range(2):
        subject = Subject(profile, {}, NOW)
        assert fused(subject) == generic(subject)
    expected = sum(1 for d in visits if d < 30)
    assert profile_fields(("behaviour", "visits_30d"), "w")(Subject(profile, {}, NOW)) == expected


def test_a_window_sum_memo_is_dropped_when_the_counter_changes() -> None:
    profile = Profile(id="p")
    today = int(NOW // DAY)
    profile.behaviour.sessions.add(today)
    rule = compile_rule({"behaviour.visits_7d": {"$gte": 2}}, fields=profile_fields)
    assert not rule.predicate(Subject(profile, {}, NOW))  # 1 visit: memoized as 1
    profile.behaviour.sessions.add(today)
    assert rule.predicate(Subject(profile, {}, NOW))  # 2 visits: not the stale 1
    # a later day reads its own sums, not the day before's
    assert not rule.predicate(Subject(profile, {}, NOW + 8 * DAY))
