"""The mid-merge event race on the Django stores (SQLite + locmem by default, PostgreSQL +
Redis with ``PERSONA_TEST_BACKEND=postgres``): see tests/core/test_merge_race.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from persona_django.stores import DatabaseConsentLedger, DatabaseOutbox, DatabaseProfileStore
from persona_sdk import ConsentPolicy, Identity, Persona, Profile
from persona_sdk.plugins import make_plugin_manager

NOW = 1_795_435_200.0


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


class InterleavingStore(DatabaseProfileStore):
    """Calls ``before_merged_save`` once, just before saving a profile that has absorbed
    ``watched`` as an alias: the moment another request could write the merged-away one."""

    watched: str | None = None
    before_merged_save: Callable[[], object] | None = None

    def save(self, profile: Profile) -> Profile:
        hook = self.before_merged_save
        if hook is not None and self.watched in profile.aliases:
            self.before_merged_save = None
            hook()
        return super().save(profile)


@pytest.mark.django_db(transaction=True)
def test_an_event_landing_on_the_anonymous_profile_during_a_merge_is_kept() -> None:
    store = InterleavingStore()
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
