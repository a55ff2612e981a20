"""Fixtures for the email adapter's tests: a real SMTP server on loopback, the vendor fakes,
settings wiring them in, and people built through the real event path."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pytest

from persona_django.runtime import get_persona
from persona_sdk import Identity
from persona_sdk.clock import DAY

from .fakes import FakeKlaviyo, FakeMailchimp, FakeSendGrid
from .smtp import SMTPServer

PROJECT = Path(__file__).resolve().parents[1] / "django_project"

#: the test project's definitions (hero, banner...) plus a trait segment that can be left
DEFINITIONS = json.loads((PROJECT / "definitions.json").read_text())
DEFINITIONS["segments"]["pro"] = {"rule": {"traits.plan": "pro"}}

KLAVIYO_KEY = "pk_persona_test"
MAILCHIMP_KEY = "0123456789abcdef0123456789abcdef-us19"
ALL_CONSENT = {"personalization": "granted", "analytics": "granted", "marketing": "granted",
               "sharing": "granted"}


@pytest.fixture(autouse=True)
def _quiet_sendgrid_warning():
    # anymail warns that it no longer officially supports SendGrid; we test against a fake
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="django-anymail has dropped official support")
        yield


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Each test its own cache key prefix (Redis outlives the per-test transaction)."""
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


@pytest.fixture
def persona_settings(settings):
    """PERSONA with the email definitions and no vendors; returns a function that adds
    PLUGINS settings."""
    base = {"CONSENT_MODE": "opt-in", "DEFINITIONS": DEFINITIONS, "DEBUG_EXPLAIN": False}
    settings.PERSONA = dict(base)

    def configure(**plugins):
        settings.PERSONA = {**base, "PLUGINS": plugins}
        return get_persona()

    return configure


@pytest.fixture(scope="session")
def smtp_server():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server, settings):
    """Django's SMTP backend pointed at the loopback server."""
    smtp_server.clear()
    smtp_server.refuse.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 10
    return smtp_server


@pytest.fixture
def klaviyo():
    fake = FakeKlaviyo(api_keys=(KLAVIYO_KEY,))
    yield fake
    fake.stop()


@pytest.fixture
def mailchimp():
    fake = FakeMailchimp(api_key=MAILCHIMP_KEY)
    yield fake
    fake.stop()


@pytest.fixture
def sendgrid():
    fake = FakeSendGrid()
    yield fake
    fake.stop()


def klaviyo_settings(fake, **extra):
    return {"api_key": KLAVIYO_KEY, "base_url": fake.url,
            "lists": {"returning-high-value": "LVIP01", "pro": "LRET02"}, **extra}


def mailchimp_settings(fake, **extra):
    return {"api_key": MAILCHIMP_KEY, "base_url": fake.url + "/3.0", "list_id": "aud001",
            "tags": {"returning-high-value": "VIP", "pro": "Pro"}, **extra}


@pytest.fixture
def vendors(persona_settings, klaviyo, mailchimp):
    """The site's Persona with both vendors configured against the fakes."""
    return persona_settings(klaviyo=klaviyo_settings(klaviyo), mailchimp=mailchimp_settings(mailchimp))


@pytest.fixture
def make_person():
    """``make_person("ada", email=..., visits=3, revenue=600.0, consent={...}, plan=...)``:
    a profile built through the real API (consent, identify, page views on past days,
    orders). Returns the stored profile."""

    def make(user_id, *, email=None, visits=0, revenue=0.0, consent=ALL_CONSENT, traits=None,
             persona=None):
        persona = persona or get_persona()
        identity = Identity.user(user_id)
        persona.set_consent(identity, consent, source="test")
        now = persona.clock()
        # history first (sessions count in time order), then who they are
        for i in range(visits):
            persona.page(user_id=user_id, timestamp=now - (visits - i) * DAY + 60)
        if revenue:
            persona.track("Order Completed", {"revenue": revenue}, user_id=user_id)
        all_traits = dict(traits or {})
        if email is not None:
            persona.identify(user_id=user_id, email=email, traits=all_traits)
        elif all_traits:
            persona.identify(user_id=user_id, traits=all_traits)
        return persona.profile_for(identity)

    return make
