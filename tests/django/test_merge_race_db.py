"""The mid-merge event race on the Django stores (SQLite + locmem by default, PostgreSQL +
Redis with ``PERSONA_TEST_BACKEND=postgres``): see tests/core/test_merge_race.py."""

from __future__ import annotations

import uuid

import pytest

from persona_django.stores import DatabaseConsentLedger, DatabaseOutbox, DatabaseProfileStore
from persona_sdk import ConsentPolicy, Identity, Persona
from persona_sdk.plugins import make_plugin_manager
from tests.core.test_merge_race import InterleavingSaves

NOW = 1_795_435_200.0


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


class InterleavingStore(InterleavingSaves, DatabaseProfileStore):
    """The Django store, with the hook of the core test."""


@pytest.mark.django_db(transaction=True)
def test_an_event_landing_on_the_anonymous_profile_during_a_merge_is_kept() -> None:
    store = InterleavingStore()
    store.watched = None
    store.before_merged_save = None
    persona = Persona(
        store=store, ledger=DatabaseConsentLedger(), outbox=DatabaseOutbox(),
        policy=ConsentPolicy(mode="opt-out"), plugin_manager=make_plugin_manager(),
    )
    persona.track("Order Completed", {"revenue": 100}, user_id="u1", timestamp=NOW - 5000)
    persona.page(anonymous_id="phone", timestamp=NOW - 100)
    persona.page(anonymous_id="phone", timestamp=NOW - 50)
    known = persona.profile_for(Identity.user("u1"))
    anon = persona.profile_for(Identity.anonymous("phone"))
    assert known is not None and anon is not None and known.id != anon.id

    late = []
    store.watched = anon.id
    store.before_merged_save = lambda: late.append(
        persona.page(anonymous_id="phone", timestamp=NOW - 10)
    )
    persona.identify(user_id="u1", anonymous_id="phone", timestamp=NOW)

    assert late and late[0].applied
    # a second process (its own local caches) reads the same merged profile
    fresh = Persona(
        store=DatabaseProfileStore(), ledger=DatabaseConsentLedger(), outbox=DatabaseOutbox(),
        policy=ConsentPolicy(mode="opt-out"), plugin_manager=make_plugin_manager(),
    )
    for reader in (persona, fresh):
        for identity in (Identity.user("u1"), Identity.anonymous("phone")):
            merged = reader.profile_for(identity)
            assert merged is not None and merged.id == known.id
            assert merged.behaviour.page_views.total == 3  # 2 before + the late one
            assert merged.merged_into is None
