"""The Persona facade: events, identity resolution, consent gates, outbox, erase/export."""

import pytest

from persona_sdk import ConsentPolicy, ConsentState, Identity, Reason, hookimpl
from persona_sdk.errors import ConsentError, EventError, IdentityError
from persona_sdk.outbox import Backoff, DeliveryResult

NOW = 1_795_435_200.0
OPEN = ConsentPolicy(mode="opt-out")
DEFS = {
    "segments": {"buyer": {"rule": {"rfm.frequency": {"$gte": 1}}}},
    "slots": {"hero": {"variants": [{"key": "buyer", "segment": "buyer"}]},
              "banner": {"strategy": "experiment", "variants": [{"key": "x"}, {"key": "y"}]}},
}


class RecordingSink:
    name = "recorder"
    purposes = ("analytics", "sharing")
    max_batch = 2

    def __init__(self):
        self.batches = []
        self.fail_next = None

    def accepts(self, event):
        return event.type != "alias"

    def deliver(self, items):
        self.batches.append([i.message_id for i in items])
        if self.fail_next == "retry":
            self.fail_next = None
            return DeliveryResult(retry={i.id: 30.0 for i in items})
        if self.fail_next == "reject":
            self.fail_next = None
            return DeliveryResult(failed={i.id: "400 invalid payload" for i in items})
        return DeliveryResult.all_delivered(items)


class Observer:
    def __init__(self, sink):
        self.sink = sink
        self.calls = []

    @hookimpl
    def persona_register_sinks(self, register):
        register(self.sink)

    @hookimpl
    def persona_consent_changed(self, profile, purpose, old, new, entry):
        self.calls.append(("consent", purpose, old.value, new.value, entry.source))

    @hookimpl
    def persona_segment_entered(self, profile, segment, at):
        self.calls.append(("entered", segment))

    @hookimpl
    def persona_profile_merged(self, into, merged_id):
        self.calls.append(("merged", merged_id))

    @hookimpl
    def persona_erase(self, profile, identities):
        self.calls.append(("erase", profile.id))
        return {"adapter": "recorder", "status": "deleted"}

    @hookimpl
    def persona_export(self, profile):
        return {"recorder": {"messages": len(self.sink.batches)}}

    @hookimpl
    def persona_exposure(self, profile, decision, channel):
        self.calls.append(("exposure", decision.slot, decision.variant, channel))


@pytest.fixture
def clock():
    return [NOW]


@pytest.fixture
def observer():
    return Observer(RecordingSink())


@pytest.fixture
def persona(make_persona, observer, clock):
    return make_persona(DEFS, plugins=[observer], policy=OPEN, clock=lambda: clock[0])


def test_an_event_updates_the_profile_before_track_returns(persona):
    result = persona.track("Order Completed", {"revenue": 30}, anonymous_id="a1", timestamp=NOW)
    assert result.applied and result.entered == ("buyer",)
    profile = persona.profile_for(Identity.anonymous("a1"))
    assert profile.behaviour.revenue.total == 30
    subject = persona.subject(profile, {}, now=NOW)
    assert persona.decide("hero", subject).variant == "buyer"


def test_identify_links_the_anonymous_visitor_to_the_user_and_email(persona):
    persona.page(anonymous_id="a1", timestamp=NOW - 100)
    persona.identify(user_id="u1", anonymous_id="a1", email="Ada@Example.com", traits={"plan": "pro"})
    by_user = persona.profile_for(Identity.user("u1"))
    assert by_user is not None
    assert persona.profile_for(Identity.email("ada@example.com")).id == by_user.id
    assert persona.profile_for(Identity.anonymous("a1")).id == by_user.id
    assert by_user.trait("email") == "Ada@Example.com" and by_user.trait("plan") == "pro"


def test_logging_in_merges_anonymous_history_into_the_known_profile(persona, observer):
    persona.track("Order Completed", {"revenue": 100}, user_id="u1", timestamp=NOW - 5000)
    known = persona.profile_for(Identity.user("u1"))
    persona.page(anonymous_id="phone", timestamp=NOW - 100)
    persona.page(anonymous_id="phone", timestamp=NOW - 50)
    anon = persona.profile_for(Identity.anonymous("phone"))
    assert anon.id != known.id
    persona.identify(user_id="u1", anonymous_id="phone", timestamp=NOW)
    merged = persona.profile_for(Identity.user("u1"))
    assert merged.id == known.id
    assert merged.behaviour.page_views.total == 2
    assert merged.behaviour.revenue.total == 100
    assert anon.id in merged.aliases
    assert ("merged", anon.id) in observer.calls
    # later events under the old anonymous id land on the merged profile
    persona.page(anonymous_id="phone", timestamp=NOW + 10)
    assert persona.profile_for(Identity.user("u1")).behaviour.page_views.total == 3
    assert persona.store.load(anon.id).id == known.id  # the old id is an alias


def test_alias_merges_the_previous_id(persona):
    persona.page(anonymous_id="old", timestamp=NOW - 100)
    persona.page(user_id="u9", timestamp=NOW - 50)
    persona.alias("old", user_id="u9", timestamp=NOW)
    p = persona.profile_for(Identity.user("u9"))
    assert p.behaviour.page_views.total == 2
    assert persona.profile_for(Identity.anonymous("old")).id == p.id


def test_no_analytics_consent_means_no_profile_writes(make_persona):
    persona = make_persona(DEFS, policy=ConsentPolicy(mode="opt-in"))
    result = persona.page(anonymous_id="shy", timestamp=NOW)
    assert not result.applied and result.reason == "consent"
    assert persona.profile_for(Identity.anonymous("shy")) is None
    persona.set_consent(Identity.anonymous("shy"), {"analytics": "granted"}, source="banner")
    assert persona.page(anonymous_id="shy", timestamp=NOW).applied
    persona.set_consent(Identity.anonymous("shy"), {"analytics": False}, source="banner")
    persona.page(anonymous_id="shy", timestamp=NOW + 1)
    assert persona.profile_for(Identity.anonymous("shy")).behaviour.page_views.total == 1


def test_consent_is_ledgered_and_announced(persona, observer):
    p = persona.set_consent(Identity.anonymous("v"), {"marketing": "granted", "sharing": "denied"},
                            source="banner", at=NOW)
    entries = persona.ledger.entries(p.id)
    assert [(e.purpose, e.state.value, e.source, e.policy_version) for e in entries] == [
        ("marketing", "granted", "banner", "1"), ("sharing", "denied", "banner", "1")]
    assert ("consent", "marketing", "unset", "granted", "banner") in observer.calls
    assert persona.may(p, "marketing") and not persona.may(p, "sharing")
    assert not persona.may(p, "marketing", gpc=True)


@pytest.mark.parametrize("choices, message", [
    ({"marketing": "granted", "telepathy": "granted"}, "unknown consent purpose 'telepathy'"),
    ({"marketing": "granted", "analytics": "maybe"}, "granted, denied or unset"),
])
def test_bad_consent_input_changes_nothing(persona, choices, message):
    with pytest.raises(ConsentError, match=message):
        persona.set_consent(Identity.anonymous("v"), choices, source="api")
    assert persona.profile_for(Identity.anonymous("v")) is None


def test_gpc_is_recorded_as_a_denial_for_later_sends(persona):
    persona.page(anonymous_id="g", timestamp=NOW)
    p = persona.observe_gpc(Identity.anonymous("g"))
    assert p.consent_state("marketing") is ConsentState.DENIED
    assert p.consent["sharing"].source == "gpc"
    assert persona.may(p, "personalization")


def test_events_are_queued_for_sinks_and_delivered_in_batches(persona, observer):
    for i in range(3):
        persona.track("Clicked", anonymous_id="a", message_id=f"m{i}", timestamp=NOW + i)
    persona.track("Clicked", anonymous_id="a", message_id="m0", timestamp=NOW)  # replay
    assert persona.outbox.pending_count() == 3
    report = persona.deliver()
    assert report.delivered == 3
    assert observer.sink.batches == [["m0", "m1"], ["m2"]]
    assert persona.outbox.pending_count() == 0


def test_retry_after_is_honoured_and_permanent_errors_dead_letter(persona, observer, clock):
    persona.track("Clicked", anonymous_id="a", message_id="r1", timestamp=NOW)
    observer.sink.fail_next = "retry"
    assert persona.deliver(backoff=Backoff(base=0.001)).retried == 1
    assert persona.deliver().delivered == 0  # not due for 30 s
    clock[0] += 31
    assert persona.deliver().delivered == 1
    persona.track("Clicked", anonymous_id="a", message_id="r2", timestamp=NOW)
    observer.sink.fail_next = "reject"
    assert persona.deliver().dead == 1
    (dead,) = persona.outbox.dead_letters()
    assert dead.last_error == "400 invalid payload" and dead.message_id == "r2"
    assert persona.outbox.replay([dead.id], now=clock[0]) == 1
    assert persona.deliver().delivered == 1


def test_consent_withdrawn_after_enqueue_is_rechecked_at_delivery(persona, observer):
    persona.track("Clicked", anonymous_id="a", timestamp=NOW)
    persona.set_consent(Identity.anonymous("a"), {"sharing": "denied"}, source="banner")
    report = persona.deliver()
    assert (report.delivered, report.withheld) == (0, 1)
    assert observer.sink.batches == []
    persona.track("Clicked", anonymous_id="a", timestamp=NOW + 1)
    assert persona.outbox.pending_count() == 0  # not even queued now


def test_erase_fans_out_and_purges_pending_items(persona, observer):
    persona.identify(user_id="u1", anonymous_id="a", email="x@example.com", timestamp=NOW)
    persona.set_consent(Identity.user("u1"), {"marketing": "granted"}, source="banner")
    assert persona.outbox.pending_count() == 1
    report = persona.erase(Identity.email("X@example.com"))
    assert report["found"] and report["outbox_items_purged"] == 1
    assert report["ledger_entries_erased"] == 1
    assert report["adapters"] == [{"adapter": "recorder", "status": "deleted"}]
    assert persona.profile_for(Identity.user("u1")) is None
    assert persona.erase(Identity.user("u1")) == {"found": False, "identity": "user:u1"}


def test_export_includes_profile_ledger_and_plugin_sections(persona):
    persona.identify(user_id="u1", traits={"plan": "pro"}, timestamp=NOW)
    persona.set_consent(Identity.user("u1"), {"marketing": "granted"}, source="banner")
    out = persona.export(Identity.user("u1"))
    assert out["profile"]["traits"]["plan"]["value"] == "pro"
    assert out["consent_ledger"][0]["purpose"] == "marketing"
    assert out["adapters"] == {"recorder": {"messages": 0}}
    assert persona.export(Identity.user("nobody")) is None


def test_exposures_keep_experiment_assignments_across_login(persona, observer):
    persona.page(anonymous_id="a", timestamp=NOW)
    anon = persona.profile_for(Identity.anonymous("a"))
    d = persona.decide("banner", persona.subject(anon, {}, now=NOW))
    assert persona.record_exposure(anon.id, d, channel="web")
    assert ("exposure", "banner", d.variant, "web") in observer.calls
    persona.page(user_id="u1", timestamp=NOW - 10)
    persona.identify(user_id="u1", anonymous_id="a", timestamp=NOW + 1)
    merged = persona.profile_for(Identity.user("u1"))
    again = persona.decide("banner", persona.subject(merged, {}, now=NOW))
    assert again.variant == d.variant and again.details["sticky"]
    assert merged.behaviour.events["Experiment Viewed"].counts.total == 1


def test_no_exposure_without_consent_or_for_consent_defaults(make_persona):
    persona = make_persona(DEFS, policy=ConsentPolicy(mode="opt-in"))
    persona.set_consent(Identity.anonymous("a"), {"analytics": "granted"}, source="banner")
    p = persona.profile_for(Identity.anonymous("a"))
    d = persona.decide("hero", persona.subject(p, {}, now=NOW))
    assert d.reason == Reason.CONSENT
    assert persona.record_exposure(p.id, d) is False


def test_bad_identities_and_events_are_refused_before_anything_is_written(persona):
    with pytest.raises(IdentityError):
        persona.identify(user_id="u1", email="not-an-email")
    with pytest.raises(EventError):
        persona.track("", anonymous_id="a")
    assert persona.profile_for(Identity.user("u1")) is None


def test_only_profile_segments_are_kept_on_the_profile(make_persona):
    persona = make_persona(
        {"segments": {
            "buyer": {"rule": {"rfm.frequency": {"$gte": 1}}},
            "mobile": {"rule": {"context.device.type": "mobile"}},
            "mobile-buyer": {"rule": {"$and": [{"$segment": "buyer"}, {"$segment": "mobile"}]}},
        }},
        policy=OPEN,
    )
    assert persona.segments.profile_segments == ("buyer",)
    result = persona.track("Order Completed", {"revenue": 5}, anonymous_id="m",
                           context={"device": {"type": "mobile"}}, timestamp=NOW)
    assert result.entered == ("buyer",)
    assert set(result.profile.segments) == {"buyer"}


def test_decide_or_default_never_raises_for_a_page_or_an_email(persona, caplog):
    subject = persona.subject(None, {}, now=NOW)
    with pytest.raises(LookupError):
        persona.decide("no-such-slot", subject)
    unknown = persona.decide_or_default("no-such-slot", subject)
    assert (unknown.slot, unknown.variant, unknown.reason, unknown.is_default) == (
        "no-such-slot", "default", Reason.ERROR, True)
    assert unknown.details == {"error": "unknown slot"}
    assert "not defined" in unknown.explanation

    class BrokenContext(dict):
        def get(self, *args):
            raise RuntimeError("boom")

    broken = persona.decide_or_default("hero", persona.subject(None, BrokenContext(), now=NOW))
    assert (broken.variant, broken.reason) == ("default", Reason.ERROR)
    assert "deciding slot 'hero' failed" in caplog.text
    # a healthy decision goes through unchanged
    assert persona.decide_or_default("hero", subject).reason == Reason.DEFAULT
