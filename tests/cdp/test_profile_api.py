"""Segment Profile API read-through: traits and audiences merged with source ``segment``,
a strict time budget, a TTL cache refreshed in the background, failures never raised."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from persona_cdp.config import parse
from persona_cdp.profile_api import SegmentProfileSource
from persona_sdk import Persona
from persona_sdk.testing import build_profile

from .fakes import FakeProfileAPI

#: What "within the budget" tolerates on a loaded CI machine: thread start-up and GIL waits.
SLACK = 0.15


def source_config(fake, **extra):
    parsed, problems = parse("segment", {
        "write_key": "WK", "profile_space_id": "spa_test", "profile_token": "PTOKEN",
        "profile_host": fake.url, **extra})
    assert parsed is not None and parsed.profile is not None, problems
    return parsed.profile


def visitor(user_id="u1", anonymous_id="a-1", consent=True):
    return build_profile(user_id=user_id, anonymous_id=anonymous_id,
                         consent={"personalization": "granted"} if consent else None)


def wait_until(predicate, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_slow_cdp_never_delays_refresh_past_the_budget_and_the_answer_is_used_next_time():
    with FakeProfileAPI(slow=0.5) as fake:
        fake.add_profile("user_id:u1", {"plan": "pro"}, audiences={"vip": True, "churn": False},
                         computed={"ltv": 820})
        persona = Persona(plugin_settings={"segment": {
            "write_key": "WK", "profile_space_id": "spa_test", "profile_token": "PTOKEN",
            "profile_host": fake.url, "profile_budget_ms": 50}})
        source = persona.registry.sources["segment"]
        assert source.budget == pytest.approx(0.05)
        profile = visitor()
        started = time.monotonic()
        report = persona.refresh(profile)
        elapsed = time.monotonic() - started
        assert elapsed < 0.05 + SLACK, elapsed
        assert report["late"] == ["segment"] or report["ok"] == ["segment"]
        assert profile.trait("plan") is None  # not known yet: the decision uses what is known
        # the fetch went on in the background and filled the cache
        assert wait_until(lambda: source.cached("user_id:u1") is not None, timeout=5)
        again = visitor()
        started = time.monotonic()
        report = persona.refresh(again)
        assert time.monotonic() - started < 0.05 + SLACK
        assert report == {"ok": ["segment"], "late": [], "failed": []}
        assert again.trait("plan") == "pro" and again.trait("ltv") == 820
        assert again.trait("vip") is True and again.trait("segment_audiences") == ["vip"]
        assert again.traits["plan"].source == "segment"
        assert fake.distinct == 1  # one person asked about (twice: traits, then audiences)
        assert len(fake.requests) == 2


def test_without_personalization_consent_the_cdp_is_not_asked(profile_fake):
    persona = Persona(plugin_settings={"segment": {
        "write_key": "WK", "profile_space_id": "spa_test", "profile_token": "PTOKEN",
        "profile_host": profile_fake.url}})
    assert persona.refresh(visitor(consent=False)) == {"ok": [], "late": [], "failed": []}
    assert profile_fake.requests == []


def test_keys_user_id_first_else_anonymous_id_and_plus_is_escaped(profile_fake):
    profile_fake.add_profile("anonymous_id:a+1", {"seen": True})
    source = SegmentProfileSource(source_config(profile_fake, profile_budget_ms=2000))
    assert source.key_for(visitor(user_id=None, anonymous_id="a+1")) == "anonymous_id:a+1"
    assert source.key_for(visitor(user_id="u9")) == "user_id:u9"
    assert source.fetch(visitor(user_id=None, anonymous_id="a+1"))["seen"] is True
    assert profile_fake.requests[0].path.endswith("/anonymous_id:a%2B1/traits")


def test_not_found_is_cached_briefly(profile_fake):
    clock = Clock()
    source = SegmentProfileSource(source_config(profile_fake, profile_budget_ms=2000,
                                                profile_not_found_ttl=30), clock=clock)
    assert source.fetch(visitor("nobody")) == {}
    assert source.fetch(visitor("nobody")) == {}
    assert len(profile_fake.requests) == 1 and source.stats["not_found"] == 1
    clock.t += 31
    assert source.fetch(visitor("nobody")) == {}
    assert len(profile_fake.requests) == 2


def test_stale_entries_are_served_and_refreshed_in_the_background(profile_fake):
    clock = Clock()
    profile_fake.add_profile("user_id:u1", {"plan": "basic"})
    source = SegmentProfileSource(source_config(
        profile_fake, profile_budget_ms=2000, profile_ttl=300, profile_refresh_after=60,
        profile_audiences=False), clock=clock)
    assert source.fetch(visitor())["plan"] == "basic"
    profile_fake.add_profile("user_id:u1", {"plan": "pro"})
    clock.t += 30
    assert source.fetch(visitor())["plan"] == "basic"  # fresh: no request
    assert len(profile_fake.requests) == 1
    clock.t += 40
    assert source.fetch(visitor())["plan"] == "basic"  # stale: served, refresh started
    assert wait_until(lambda: source.cached("user_id:u1") == {"plan": "pro"})
    assert source.fetch(visitor())["plan"] == "pro"
    clock.t += 400  # past the TTL: a miss again
    assert source.cached("user_id:u1") is None


def test_failures_are_logged_not_raised_and_backed_off(profile_fake, caplog):
    clock = Clock()
    profile_fake.add_profile("user_id:u1", {"plan": "pro"})
    source = SegmentProfileSource(source_config(
        profile_fake, profile_budget_ms=2000, profile_failure_backoff=10), clock=clock)
    profile_fake.script("500")
    with caplog.at_level("WARNING", logger="persona_cdp"):
        assert source.fetch(visitor()) is None
    assert "HTTP 500 from Segment Profile API: internal_error" in caplog.text
    assert source.fetch(visitor()) is None  # backing off: not asked again
    assert len(profile_fake.requests) == 1
    clock.t += 11
    assert source.fetch(visitor())["plan"] == "pro"


def test_bad_token_and_429_are_failures_and_429_pauses_the_whole_space(profile_fake):
    clock = Clock()
    profile_fake.add_profile("user_id:u1", {"plan": "pro"})
    profile_fake.add_profile("user_id:u2", {"plan": "team"})
    bad = SegmentProfileSource(source_config(profile_fake, profile_token="WRONG",
                                             profile_budget_ms=2000), clock=clock)
    assert bad.fetch(visitor()) is None and bad.stats["failures"] == 1
    source = SegmentProfileSource(source_config(profile_fake, profile_budget_ms=2000),
                                  clock=clock)
    profile_fake.retry_after = "20"
    profile_fake.script("429")
    assert source.fetch(visitor("u1")) is None
    before = len(profile_fake.requests)
    assert source.fetch(visitor("u2")) is None  # another person, same space: held
    assert len(profile_fake.requests) == before
    clock.t += 21
    assert source.fetch(visitor("u2"))["plan"] == "team"


def test_concurrent_misses_share_one_fetch():
    with FakeProfileAPI(slow=0.2) as fake:
        fake.add_profile("user_id:u1", {"plan": "pro"})
        source = SegmentProfileSource(source_config(fake, profile_budget_ms=2000,
                                                    profile_audiences=False))
        results = []
        threads = [threading.Thread(target=lambda: results.append(source.fetch(visitor())))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [{"plan": "pro"}] * 6
        assert len(fake.requests) == 1


def test_a_silent_host_costs_at_most_the_budget():
    """A server that accepts the connection and never answers (a hung CDP)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        parsed, _ = parse("segment", {"write_key": "WK", "profile_space_id": "s",
                                      "profile_token": "t", "profile_host": host,
                                      "profile_budget_ms": 30, "profile_timeout": 1})
        source = SegmentProfileSource(parsed.profile)
        started = time.monotonic()
        assert source.fetch(visitor()) is None
        assert time.monotonic() - started < 0.03 + SLACK
        assert source.stats["late"] == 1
