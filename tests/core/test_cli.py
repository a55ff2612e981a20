import io
import json

import pytest

from persona_sdk.cli import main
from persona_sdk.demo import DEMO_DEFINITIONS, DEMO_NOW, tour
from persona_sdk.testing import build_profile


def run(*argv):
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_validate_accepts_good_definitions(tmp_path):
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(DEMO_DEFINITIONS))
    code, out = run("validate", str(path))
    assert code == 0
    assert out.strip() == f"{path}: ok (6 segments, 3 slots)"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"segments": {"vip": {"rule": {"$and": [{"traits.plan": "pro"}, {"traits.ltv": {"$gte": "abc"}}]}}}}',
         'segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"'),
        ('{"segments": {"a": {"rule": {"$segment": "b"}}, "b": {"rule": {"$segment": "a"}}}}',
         "cycle: a -> b -> a"),
        ('{"segments": {"a": {"rule": {"traits.x": {"$frobnicate": 1}}}}}', "$frobnicate"),
        ('{"segments": {', "not valid JSON"),
    ],
)
def test_validate_names_the_place_of_each_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out = run("validate", str(path))
    assert code == 1
    assert message in out and str(path) in out


def test_explain_says_what_and_why(tmp_path):
    defs = tmp_path / "defs.json"
    defs.write_text(json.dumps(DEMO_DEFINITIONS))
    profile = build_profile(now=DEMO_NOW, visits=4, visit_spacing_days=3, purchases=[400, 300],
                            consent={"personalization": "granted"})
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps(profile.to_dict()))
    code, out = run("explain", str(prof), "hero", "-d", str(defs), "--now", str(DEMO_NOW))
    assert code == 0
    assert "variant:     vip-hero" in out
    assert "reason:      matched (strategy priority)" in out
    assert "matched segment returning-high-value" in out
    code, out = run("explain", str(prof), "hero", "-d", str(defs), "--now", str(DEMO_NOW), "--json")
    assert json.loads(out)["variant"] == "vip-hero"


def test_explain_reports_bad_input(tmp_path):
    defs = tmp_path / "defs.json"
    defs.write_text(json.dumps(DEMO_DEFINITIONS))
    prof = tmp_path / "p.json"
    prof.write_text('{"schema": 1}')
    code, out = run("explain", str(prof), "hero", "-d", str(defs))
    assert code == 1 and "malformed profile document" in out
    prof.write_text(json.dumps(build_profile().to_dict()))
    code, out = run("explain", str(prof), "nope", "-d", str(defs))
    assert code == 1 and "no slot named 'nope'" in out


def test_plugins_lists_builtins_with_versions_and_hooks():
    code, out = run("plugins")
    assert code == 0
    assert "persona_strategies" in out and "persona-sdk" in out and "persona_register_strategies" in out
    code, out = run("plugins", "--json")
    names = {p["name"] for p in json.loads(out)}
    assert "persona_enrichers_campaign" in names


def test_the_tour_shows_each_step_of_the_maturity_path():
    rows = {(r["visitor"], r["slot"]): r for r in tour()}
    assert rows[("new visitor", "hero")]["variant"] == "first-visit"
    assert rows[("returning, likes shoes", "hero")]["variant"] == "welcome-back"
    assert rows[("returning, likes shoes", "recommendations")]["variant"] == "shoes"
    assert rows[("high value", "hero")]["variant"] == "vip-hero"
    denied = rows[("consent denied", "hero")]
    assert (denied["variant"], denied["reason"]) == ("generic-hero", "consent")
    gpc = rows[("GPC, from a campaign", "recommendations")]
    assert gpc["variant"] == "campaign-sale" and gpc["marketing"] is False
    login = rows[("logged in after browsing", "hero")]
    assert login["variant"] == "vip-hero"  # phone visits + laptop orders, merged at login
    assert rows[("logged in after browsing", "recommendations")]["variant"] == "shoes"
    banners = {rows[(v, "banner")]["reason"] for v, _ in rows}
    assert banners <= {"experiment", "holdout", "consent"}


def test_demo_prints_a_table():
    code, out = run("demo", "-v")
    assert code == 0
    assert out.count("vip-hero") >= 2 and "consent" in out
    assert "GPC, from a campaign: first-time; marketing email not allowed" in out
    assert "logged in after browsing: frequent, high-value, returning, returning-high-value, shoe-lover; marketing email allowed" in out
