import persona_plugin_example as plugin
import pytest

from persona_sdk import ConsentPolicy, Identity, RequestInfo
from persona_sdk.errors import RuleError
from persona_sdk.testing import check_plugin

pytest_plugins = ["persona_sdk.testing"]


def test_the_plugin_matches_the_hookspecs():
    check_plugin(plugin)


def test_the_condition_reads_the_local_weekday(make_persona):
    persona = make_persona(
        {"segments": {"weekend": {"rule": {"$weekday_in": ["saturday", "sunday"]}}}},
        plugins=[plugin],
    )
    saturday = persona.subject(None, {"weekday_name": "saturday"})
    monday = persona.subject(None, {"weekday_name": "monday"})
    assert persona.segments.test("weekend", saturday)
    assert not persona.segments.test("weekend", monday)


def test_a_bad_argument_fails_when_the_rule_loads(make_persona):
    with pytest.raises(RuleError, match=r"segments.x.rule.\$weekday_in: unknown weekday"):
        make_persona({"segments": {"x": {"rule": {"$weekday_in": ["caturday"]}}}}, plugins=[plugin])


def test_the_enricher_adds_its_key(make_persona):
    persona = make_persona(plugins=[plugin])
    context = persona.context(RequestInfo.build("/", headers={"X-Example-Preview": "1"}))
    assert context["example"] == {"is_preview": True}


def test_orders_are_forwarded_only_with_consent(make_persona):
    sent = []
    plugin.SEND[:] = [sent.extend]
    persona = make_persona(plugins=[plugin], policy=ConsentPolicy(mode="opt-out"))
    persona.track("Order Completed", {"revenue": 10}, anonymous_id="a")
    persona.track("Product Viewed", {}, anonymous_id="a")
    persona.deliver()
    assert [m["event"] for m in sent] == ["Order Completed"]
    strict = make_persona(plugins=[plugin], policy=ConsentPolicy(mode="opt-in"))
    strict.set_consent(Identity.anonymous("b"), {"analytics": True}, source="test")
    strict.track("Order Completed", {"revenue": 10}, anonymous_id="b")
    assert strict.outbox.pending_count() == 0  # no sharing consent: not even queued
