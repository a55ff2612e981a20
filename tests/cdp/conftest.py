"""Fixtures for the CDP adapter's tests: the fakes, started on 127.0.0.1 and stopped after."""

from __future__ import annotations

import logging

import pytest

from persona_cdp import plugin as cdp_plugin

from .fakes import FakeProfileAPI, FakeRudderStack, FakeSegment


@pytest.fixture
def segment_fake():
    with FakeSegment() as fake:
        yield fake


@pytest.fixture
def rudder_fake():
    with FakeRudderStack() as fake:
        yield fake


@pytest.fixture
def profile_fake():
    with FakeProfileAPI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_plugin_state():
    """The plugin keeps the settings it was last configured with (one Persona per process):
    start and end every test unconfigured, and keep its logs quiet."""
    cdp_plugin.persona_configure(settings={})
    logging.getLogger("persona_cdp").setLevel(logging.CRITICAL)
    yield
    cdp_plugin.persona_configure(settings={})
    logging.getLogger("persona_cdp").setLevel(logging.NOTSET)
