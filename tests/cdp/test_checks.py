"""Misconfiguration is a system check error with a hint, never a crash at runtime; the
plugin matches the hook contract and imports neither Django nor requests when loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings

from persona_cdp import plugin as cdp_plugin
from persona_django.runtime import get_persona
from persona_sdk import Persona
from persona_sdk.testing import check_plugin

BASE = dict(django_settings.PERSONA)


def cdp_messages(plugins, **persona):
    with override_settings(PERSONA={**BASE, **persona, "PLUGINS": plugins}):
        return [m for m in run_checks() if m.id.startswith("persona_cdp.")]


def only(messages, check_id):
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, [str(m) for m in messages]
    return found[0]


def test_a_missing_write_key_is_an_error_with_a_hint():
    message = only(cdp_messages({"segment": {}}), "persona_cdp.E002")
    assert isinstance(message, Error)
    assert 'PERSONA["PLUGINS"]["segment"]["write_key"] is missing' in message.msg
    assert "Sources" in message.hint and "write key" in message.hint


@pytest.mark.parametrize("host", ["api.segment.io", "ftp://api.segment.io", "https://", "",
                                  "https://api.segment.io:99999", "https://x.io/?a=1"])
def test_a_bad_url_is_an_error_with_a_hint(host):
    message = only(cdp_messages({"segment": {"write_key": "k", "host": host}}),
                   "persona_cdp.E003")
    assert isinstance(message, Error) and "not a valid URL" in message.msg
    assert "https://api.segment.io" in message.hint


def test_rudderstack_needs_a_data_plane_url_and_a_good_one():
    message = only(cdp_messages({"rudderstack": {"write_key": "k"}}), "persona_cdp.E004")
    assert "data_plane_url" in message.msg and "Data Plane URL" in message.hint
    message = only(cdp_messages({"rudderstack": {"write_key": "k",
                                                 "data_plane_url": "htp://dp.example"}}),
                   "persona_cdp.E003")
    assert "data_plane_url" in message.msg


def test_other_problems_have_their_own_ids():
    messages = cdp_messages({"segment": {"write_key": "k", "profile_space_id": "spa",
                                         "profile_token": "t", "profile_budget_ms": -5,
                                         "max_batch": 5000, "purposes": ["sharing"],
                                         "colour": "blue"}})
    ids = sorted(m.id for m in messages)
    assert ids == ["persona_cdp.E005", "persona_cdp.E005", "persona_cdp.E007",
                   "persona_cdp.W001"]
    assert "colour" in only(messages, "persona_cdp.W001").msg
    assert only(cdp_messages({"segment": "WK"}), "persona_cdp.E001")
    message = only(cdp_messages({"segment": {"write_key": "k", "profile_space_id": "spa"}}),
                   "persona_cdp.E006")
    assert "profile_token" in message.msg


def test_purposes_must_exist_in_the_consent_policy():
    message = only(cdp_messages({"segment": {"write_key": "k", "public_api_token": "t",
                                             "integrations": {"ads": ["Facebook"]}}}),
                   "persona_cdp.E010")
    assert "'ads'" in message.msg and "EXTRA_PURPOSES" in message.hint
    assert cdp_messages({"segment": {"write_key": "k", "public_api_token": "t",
                                     "integrations": {"ads": ["Facebook"]}}},
                        EXTRA_PURPOSES=["ads"]) == []


def test_a_good_configuration_only_warns_about_erasure_until_a_token_is_set():
    message = only(cdp_messages({"segment": {"write_key": "k"}}), "persona_cdp.W003")
    assert isinstance(message, Warning) and "public_api_token" in message.msg
    assert cdp_messages({"segment": {"write_key": "k", "public_api_token": "t"},
                         "rudderstack": {"write_key": "r",
                                         "data_plane_url": "https://dp.example.com",
                                         "api_token": "t"}}) == []
    message = only(cdp_messages({"segment": {"write_key": "k", "public_api_token": "t",
                                             "host": "http://segment.internal"}}),
                   "persona_cdp.W002")
    assert "unencrypted" in message.msg


def test_no_cdp_settings_no_messages():
    assert cdp_messages({}) == []


@pytest.mark.django_db
def test_a_misconfigured_adapter_does_not_break_the_site(client):
    with override_settings(PERSONA={**BASE, "PLUGINS": {"segment": {"host": "nope"}}}):
        persona = get_persona()
        assert "segment" not in persona.registry.sinks
        assert client.get("/").status_code == 200


def test_the_core_reports_the_same_problems_without_django():
    persona = Persona(plugin_settings={"segment": {"write_key": ""},
                                       "rudderstack": {"write_key": "k", "data_plane_url": "x"}})
    ids = sorted(m.id for m in persona.check() if m.id.startswith("persona_cdp."))
    assert ids == ["persona_cdp.E002", "persona_cdp.E003"]
    assert persona.registry.sinks == {}


def test_the_plugin_matches_the_hook_contract():
    check_plugin(cdp_plugin)


def test_loading_the_plugin_imports_neither_django_nor_requests():
    code = ("import sys, persona_cdp.plugin; "
            "bad = [m for m in ('django', 'requests') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
