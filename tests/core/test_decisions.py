"""Segments, slots and decisions through the public Persona API."""

import logging
from collections import Counter

import pytest

from persona_sdk import ConsentPolicy, Reason
from persona_sdk.errors import RuleError, SegmentCycleError, UnknownSegmentError, UnknownSlotError
from persona_sdk.testing import build_profile

NOW = 1_795_435_200.0

DEFS = {
    "segments": {
        "frequent": {"rule": {"behaviour.visits_30d": {"$gte": 3}}},
        "high-value": {"rule": {"traits.ltv": {"$gte": 500}}},
        "returning-high-value": {
            "rule": {"$and": [{"$segment": "frequent"}, {"$segment": "high-value"}]}
        },
        "first-time": {"rule": {"behaviour.visits": {"$lte": 1}}},
    },
    "slots": {
        "hero": {
            "variants": [
                {"key": "b", "segment": "first-time", "priority": 5},
                {"key": "vip", "segment": "returning-high-value", "priority": 10},
                {"key": "a", "segment": "first-time", "priority": 5},
                {"key": "mobile", "rule": {"context.device.type": "mobile"}, "priority": 1},
            ],
            "default": "plain",
        },
        "banner": {
            "strategy": "experiment",
            "experiment": {"version": "3", "holdout": 0.2, "seed": "s"},
            "variants": [{"key": "x", "weight": 3}, {"key": "y", "weight": 1}],
        },
    },
}

OPEN = ConsentPolicy(mode="opt-out")


@pytest.fixture
def persona(make_persona):
    return make_persona(DEFS, policy=OPEN, clock=lambda: NOW)


def decide(persona, profile, slot, context=None):
    return persona.decide(slot, persona.subject(profile, context or {}, now=NOW))


def test_the_explanation_names_the_segment_and_the_values(persona):
    profile = build_profile(now=NOW, visits=6, visit_spacing_days=2, traits={"ltv": 820})
    d = decide(persona, profile, "hero")
    assert (d.variant, d.reason, d.is_default) == ("vip", Reason.MATCHED, False)
    assert d.explanation == (
        "matched segment returning-high-value: visits_30d=6 >= 3 and ltv=820 >= 500"
    )
    assert d.to_dict()["details"] == {"segment": "returning-high-value"}


def test_priority_ties_keep_declaration_order(persona):
    d = decide(persona, build_profile(now=NOW, visits=1), "hero")
    assert d.variant == "b"  # "b" and "a" both priority 5 and matching: first declared wins


def test_context_rules_and_the_default(persona):
    returning = build_profile(now=NOW, visits=2, visit_spacing_days=20)
    assert decide(persona, returning, "hero", {"device": {"type": "mobile"}}).variant == "mobile"
    d = decide(persona, returning, "hero", {"device": {"type": "desktop"}})
    assert (d.variant, d.reason, d.is_default) == ("plain", Reason.DEFAULT, True)
    assert "no variant matched" in d.explanation


def test_no_personalization_consent_means_the_default(make_persona):
    persona = make_persona(DEFS, policy=ConsentPolicy(mode="opt-in"))
    profile = build_profile(now=NOW, visits=6, traits={"ltv": 900})
    d = decide(persona, profile, "hero")
    assert (d.variant, d.reason) == ("plain", Reason.CONSENT)
    granted = build_profile(now=NOW, visits=1, consent={"personalization": "granted"})
    assert decide(persona, granted, "hero").variant == "b"


def test_experiment_assignment_is_sticky_weighted_and_has_a_holdout(persona):
    counts = Counter()
    for i in range(4000):
        p = build_profile(now=NOW)
        p.id = f"visitor-{i}"
        d1 = decide(persona, p, "banner")
        assert decide(persona, p, "banner") == d1  # sticky
        counts[d1.variant] += 1
        if d1.reason == Reason.HOLDOUT:
            assert d1.is_default and d1.variant == "default"
        else:
            assert d1.reason == Reason.EXPERIMENT
            assert d1.assignment == ("banner@3", d1.variant)
    assert 0.17 < counts["default"] / 4000 < 0.23
    assert 2.6 < counts["x"] / counts["y"] < 3.4


def test_a_recorded_assignment_wins_over_the_hash(persona):
    p = build_profile(now=NOW)
    natural = decide(persona, p, "banner").variant
    other = "y" if natural != "y" else "x"
    p.experiments["banner@3"] = other
    d = decide(persona, p, "banner")
    assert d.variant == other and d.details["sticky"] is True
    assert "recorded assignment" in d.explanation


def test_a_failing_strategy_falls_back_to_the_default_and_logs(make_persona, caplog):
    from persona_sdk import hookimpl

    class Boom:
        name = "boom"

        def decide(self, slot, subject):
            raise RuntimeError("kaput")

    class Plugin:
        @hookimpl
        def persona_register_strategies(self, register):
            register(Boom())

    persona = make_persona(
        {"slots": {"s": {"strategy": "boom", "variants": [{"key": "v"}]}}},
        plugins=[Plugin()], policy=OPEN,
    )
    with caplog.at_level(logging.ERROR, logger="persona_sdk.decisions"):
        d = decide(persona, build_profile(now=NOW), "s")
    assert (d.variant, d.reason) == ("default", Reason.ERROR)
    assert "kaput" in caplog.text


def test_unknown_slot_is_a_typed_error(persona):
    with pytest.raises(UnknownSlotError, match="no slot named 'nope'; defined: banner, hero"):
        persona.slot("nope")


@pytest.mark.parametrize(
    "defs, error, message",
    [
        ({"segments": {"a": {"rule": {"$segment": "b"}}, "b": {"rule": {"$segment": "a"}}}},
         SegmentCycleError, "cycle: a -> b -> a"),
        ({"segments": {"a": {"rule": {"$segment": "a"}}}}, SegmentCycleError, "a -> a"),
        ({"segments": {"a": {"rule": {"$segment": "ghost"}}}}, UnknownSegmentError,
         'segments.a.rule: refers to segment "ghost"'),
        ({"segments": {"vip": {"rule": {"$and": [{"traits.plan": "pro"}, {"traits.ltv": {"$gte": "abc"}}]}}}},
         RuleError, 'segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"'),
        ({"segments": {"Bad Name": {"rule": {}}}}, RuleError, "segment name"),
        ({"segments": {"a": {"rule": {"behaviour.visits_14d": {"$gt": 1}}}}}, RuleError,
         "segments.a.rule.behaviour.visits_14d: windows are 1, 7, 30, 90, 365 days"),
        ({"segments": {"a": {"rule": {"nowhere.x": 1}}}}, RuleError, "unknown field namespace 'nowhere'"),
        ({"slots": {"s": {"variants": [{"key": "v", "segment": "ghost"}]}}}, UnknownSegmentError,
         'slots.s.variants[0].segment: segment "ghost" is not defined'),
        ({"slots": {"s": {"variants": [{"key": "v"}, {"key": "v"}]}}}, RuleError, "used twice"),
        ({"slots": {"s": {"strategy": "psychic", "variants": []}}}, RuleError, "unknown strategy 'psychic'"),
        ({"slots": {"s": {"variants": [{"key": "v", "weight": -1}]}}}, RuleError, "positive number"),
        ({"slots": {"s": {"experiment": {"holdout": 1.5}}}}, RuleError, "slots.s.experiment.holdout"),
        ({"slots": {"s": {"variants": [{"key": "v", "rule": {"$frob": 1}}]}}}, RuleError,
         "slots.s.variants[0].rule"),
        ({"extra": {}}, RuleError, "unknown top-level key"),
    ],
)
def test_bad_definitions_fail_at_load_and_change_nothing(persona, defs, error, message):
    before = (persona.segments.names(), sorted(persona.slots))
    with pytest.raises(error) as info:
        persona.load_definitions(defs)
    assert message in str(info.value)
    assert (persona.segments.names(), sorted(persona.slots)) == before


def test_nested_segments_are_evaluated_once_per_subject(make_persona):
    from persona_sdk import hookimpl

    calls = Counter()

    class Counting:
        @hookimpl
        def persona_register_conditions(self, register):
            def factory(arg, where):
                def predicate(subject):
                    calls[arg] += 1
                    return True
                return predicate
            register("counted", factory)

    persona = make_persona(
        {
            "segments": {
                "inner": {"rule": {"$counted": "inner"}},
                "outer": {"rule": {"$and": [{"$segment": "inner"}, {"$segment": "inner"}]}},
            },
            "slots": {"hero": {"variants": [{"key": "o", "segment": "outer", "priority": 1},
                                            {"key": "i", "segment": "inner"}]},
                      "side": {"variants": [{"key": "i", "segment": "inner"}]}},
        },
        plugins=[Counting()], policy=OPEN,
    )
    subject = persona.subject(build_profile(now=NOW), {}, now=NOW)
    assert persona.decide("hero", subject).variant == "o"
    assert persona.decide("side", subject).variant == "i"
    assert calls["inner"] == 1
    fresh = persona.subject(build_profile(now=NOW), {}, now=NOW)
    persona.decide("hero", fresh)
    assert calls["inner"] == 2  # memoized per subject (per request), not forever


def test_unused_segments_are_not_evaluated(make_persona):
    many = {f"s{i}": {"rule": {"traits.x": i}} for i in range(500)}
    many["used"] = {"rule": {"traits.plan": "pro"}}
    persona = make_persona(
        {"segments": many, "slots": {"hero": {"variants": [{"key": "p", "segment": "used"}]}}},
        policy=OPEN,
    )
    subject = persona.subject(build_profile(now=NOW, traits={"plan": "pro"}), {}, now=NOW)
    assert persona.decide("hero", subject).variant == "p"
    assert set(subject._memo) == {"used"}
