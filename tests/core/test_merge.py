"""Identity resolution: merging an anonymous profile into a known one."""

from hypothesis import given, settings
from hypothesis import strategies as st

from persona_sdk.clock import day_of
from persona_sdk.consent import ConsentDecision, ConsentState
from persona_sdk.events import Event, apply_event
from persona_sdk.identity import Identity
from persona_sdk.profile import Profile, merge_profiles

NOW = 1_795_435_200.0
PURPOSES = ["personalization", "analytics", "marketing", "sharing"]

event_st = st.builds(
    lambda kind, name, offset, cat, amount: (kind, name, offset, cat, amount),
    st.sampled_from(["page", "track", "identify"]),
    st.sampled_from(["Product Viewed", "Order Completed", "Signed Up"]),
    st.floats(min_value=-400 * 86400, max_value=0),
    st.sampled_from(["shoes", "bags", "hats"]),
    st.integers(min_value=0, max_value=1000),
)
consent_st = st.dictionaries(
    st.sampled_from(PURPOSES),
    st.builds(
        ConsentDecision,
        st.sampled_from(list(ConsentState)),
        st.floats(min_value=NOW - 1e6, max_value=NOW),
        st.sampled_from(["banner", "api", "gpc"]),
        st.just("1"),
    ),
)


@st.composite
def profiles(draw, anon):
    p = Profile(created_at=NOW - 500 * 86400)
    for i, (kind, name, offset, cat, amount) in enumerate(draw(st.lists(event_st, max_size=12))):
        ts = NOW + offset
        if kind == "page":
            e = Event.create("page", anonymous_id=anon, timestamp=ts, message_id=f"{anon}-{i}")
        elif kind == "track":
            e = Event.create("track", anonymous_id=anon, event=name, timestamp=ts,
                             properties={"category": cat, "revenue": amount}, message_id=f"{anon}-{i}")
        else:
            e = Event.create("identify", anonymous_id=anon, timestamp=ts,
                             traits={"plan": name, "score": amount}, message_id=f"{anon}-{i}")
        apply_event(p, e)
    p.consent = draw(consent_st)
    p.segments = {s: NOW - draw(st.integers(0, 100)) for s in draw(st.sets(st.sampled_from(["a", "b"])))}
    p.identities.add(Identity.anonymous(anon))
    return p


@settings(max_examples=150, deadline=None)
@given(profiles("known"), profiles("anon"))
def test_merging_is_idempotent(known, anon):
    once = merge_profiles(known, anon)
    assert merge_profiles(once, anon) == once
    assert merge_profiles(once, once) == once


@settings(max_examples=150, deadline=None)
@given(profiles("known"), profiles("anon"))
def test_counters_add_and_identities_union(known, anon):
    m = merge_profiles(known, anon)
    kb, ab, mb = known.behaviour, anon.behaviour, m.behaviour
    assert mb.page_views.total == kb.page_views.total + ab.page_views.total
    assert mb.sessions.total == kb.sessions.total + ab.sessions.total
    assert mb.revenue.total == kb.revenue.total + ab.revenue.total
    today = day_of(NOW)
    for n in (1, 7, 30, 90, 365):
        assert mb.purchases.window(n, today) == kb.purchases.window(n, today) + ab.purchases.window(n, today)
    assert m.identities == known.identities | anon.identities
    assert anon.id in m.aliases and m.id == known.id


@settings(max_examples=150, deadline=None)
@given(profiles("known"), profiles("anon"))
def test_traits_keep_the_latest_value(known, anon):
    m = merge_profiles(known, anon)
    for name in set(known.traits) | set(anon.traits):
        candidates = [p.traits[name] for p in (known, anon) if name in p.traits]
        assert m.traits[name].updated_at == max(t.updated_at for t in candidates)


@settings(max_examples=200, deadline=None)
@given(profiles("known"), profiles("anon"))
def test_a_merge_never_turns_a_denial_into_a_grant(known, anon):
    m = merge_profiles(known, anon)
    for purpose in PURPOSES:
        states = {p.consent_state(purpose) for p in (known, anon)}
        if ConsentState.DENIED in states:
            assert m.consent_state(purpose) is ConsentState.DENIED
        elif ConsentState.GRANTED in states:
            assert m.consent_state(purpose) is ConsentState.GRANTED


def test_the_most_recent_explicit_decision_wins_between_equals():
    known, anon = Profile(), Profile()
    known.consent["marketing"] = ConsentDecision(ConsentState.GRANTED, NOW - 100, "banner", "1")
    anon.consent["marketing"] = ConsentDecision(ConsentState.GRANTED, NOW, "api", "2")
    anon.consent["analytics"] = ConsentDecision(ConsentState.UNSET, NOW, "api", "2")
    known.consent["analytics"] = ConsentDecision(ConsentState.GRANTED, NOW - 100, "banner", "1")
    m = merge_profiles(known, anon)
    assert m.consent["marketing"].source == "api"
    assert m.consent["analytics"].state is ConsentState.GRANTED


def test_segment_entry_and_experiments_survive_a_merge():
    known, anon = Profile(), Profile()
    known.segments["vip"] = NOW
    anon.segments["vip"] = NOW - 50
    known.experiments["hero@1"] = "a"
    anon.experiments.update({"hero@1": "b", "banner@1": "x"})
    m = merge_profiles(known, anon)
    assert m.segments["vip"] == NOW - 50
    assert m.experiments == {"hero@1": "a", "banner@1": "x"}
