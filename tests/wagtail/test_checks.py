"""System checks ``persona_wagtail.*`` and the entry-point plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.apps import apps
from django.core.checks import run_checks
from django.test import override_settings

from persona_wagtail import checks, plugin, views
from persona_wagtail.models import Segment
from tests.wagtail.conftest import personalized, variant
from tests.wagtail.testapp.models import PlainPage

pytestmark = pytest.mark.django_db


def ours(databases=None):
    return [
        m for m in run_checks(databases=databases) if m.id and m.id.startswith("persona_wagtail.")
    ]


def ids(messages):
    return sorted(m.id for m in messages)


def test_the_test_project_is_clean():
    assert ours(databases=["default"]) == []


def not_installed(monkeypatch, *names):
    real = apps.is_installed
    monkeypatch.setattr(checks.apps, "is_installed", lambda name: name not in names and real(name))


def test_e001_without_the_django_adapter(monkeypatch):
    not_installed(monkeypatch, "persona_django")
    (message,) = checks.check_installed()
    assert message.id == "persona_wagtail.E001" and "persona_django" in message.hint


def test_e002_without_wagtail_apps(monkeypatch):
    not_installed(monkeypatch, "wagtail.snippets")
    (message,) = checks.check_installed()
    assert message.id == "persona_wagtail.E002" and "wagtail.snippets" in message.msg


@override_settings(PERSONA_WAGTAIL={"COUNT_LIMTI": 10})
def test_w003_unknown_setting():
    assert ids(ours()) == ["persona_wagtail.W003"]
    assert "COUNT_LIMTI" in ours()[0].msg


def test_i004_a_page_model_without_segment_previews(monkeypatch):
    monkeypatch.setattr(views, "personalized_page_models", lambda: [PlainPage])
    (message,) = checks.check_page_models()
    assert message.id == "persona_wagtail.I004" and message.obj is PlainPage
    assert "PersonalizedPageMixin" in message.hint


def test_e010_a_saved_segment_that_does_not_compile():
    Segment.objects.bulk_create([Segment(name="gold", rule={"$tier": "gold"})])  # no validation
    Segment.objects.create(name="fine", rule={"traits.plan": "pro"})
    assert ours() == []  # database checks only run with databases
    (message,) = ours(databases=["default"])
    assert message.id == "persona_wagtail.E010"
    assert '"gold"' in message.msg and 'unknown operator "$tier"' in message.msg


def test_w011_and_w012_blocks_that_cannot_decide_as_written(make_page):
    segment = Segment.objects.create(name="pro-users", rule={"traits.plan": "pro"})
    make_page(
        personalized("hero", [variant(segment="pro-users", content=(("heading", "P"),))]),
        personalized("hero", [variant(segment="mobile", content=(("heading", "M"),))]),
    )
    assert ids(ours(databases=["default"])) == ["persona_wagtail.W012"]
    segment.delete()
    found = ours(databases=["default"])
    assert ids(found) == ["persona_wagtail.W011", "persona_wagtail.W012"]
    w011 = next(m for m in found if m.id == "persona_wagtail.W011")
    assert 'targets segment "pro-users", which does not exist' in w011.msg
    assert "Offers" in w011.msg


def test_the_plugin_is_quiet_when_the_app_is_installed(monkeypatch):
    assert plugin.persona_check_config(persona=None) is None
    real = apps.is_installed
    monkeypatch.setattr(apps, "is_installed", lambda name: name != "persona_wagtail" and real(name))
    (message,) = plugin.persona_check_config(persona=None)
    assert message.id == "persona_wagtail.W030"


def test_the_entry_point_plugin_imports_neither_django_nor_wagtail():
    code = (
        "import sys, importlib.metadata as md\n"
        "ep = [e for e in md.entry_points(group='persona_sdk') if e.name == 'persona_wagtail'][0]\n"
        "ep.load()\n"
        "bad = [m for m in ('django', 'wagtail') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
