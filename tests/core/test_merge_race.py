"""An event that reaches the anonymous profile while it is being merged is not lost.

The store below runs a "late" event at the worst moment, deterministically: after the merge
has read the anonymous profile and just before it writes the merged one (the moment another
request could update the anonymous profile, which the merge then deletes).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from persona_sdk import ConsentPolicy, Identity, Persona, Profile
from persona_sdk.stores import InMemoryProfileStore

NOW = 1_795_435_200.0


class InterleavingSaves:
    """A store mixin: calls ``before_merged_save`` once, just before saving a profile that
    has absorbed ``watched`` (a profile id) as an alias."""

    watched: str | None = None
    before_merged_save: Callable[[], object] | None = None

    def save(self, profile: Profile, *, then: Callable[[Profile], object] | None = None) -> Profile:
        hook = self.before_merged_save
        if hook is not None and self.watched in profile.aliases:
            self.before_merged_save = None
            hook()
        saved: Profile = super().save(profile, then=then)  # type: ignore[misc]
        return saved


class InterleavingStore(InterleavingSaves, InMemoryProfileStore):
    """The in-memory store with the hook."""


@pytest.fixture
def persona() -> Persona:
    return Persona(store=InterleavingStore(), policy=ConsentPolicy(mode="opt-out"))


def _known_and_anonymous(persona: Persona) -> tuple[Profile, Profile]:
    persona.track("Order Completed", {"revenue": 100}, user_id="u1", timestamp=NOW - 5000)
    persona.page(anonymous_id="phone", timestamp=NOW - 100)
    persona.page(anonymous_id="phone", timestamp=NOW - 50)
    known = persona.profile_for(Identity.user("u1"))
    anon = persona.profile_for(Identity.anonymous("phone"))
    assert known is not None and anon is not None and known.id != anon.id
    return known, anon


def test_an_event_landing_on_the_anonymous_profile_during_a_merge_is_kept(
    persona: Persona,
) -> None:
    known, anon = _known_and_anonymous(persona)
    store = persona.store
    assert isinstance(store, InterleavingStore)
    late = []
    store.watched = anon.id
    store.before_merged_save = lambda: late.append(
        persona.page(anonymous_id="phone", timestamp=NOW - 10)
    )

    persona.identify(user_id="u1", anonymous_id="phone", timestamp=NOW)

    assert late and late[0].applied, "the late event ran and was applied"
    merged = persona.profile_for(Identity.user("u1"))
    assert merged is not None and merged.id == known.id
    assert merged.behaviour.page_views.total == 3  # 2 before the merge + the late one
    assert late[0].profile.id == known.id  # it was redirected to the merged profile
    assert persona.store.load(anon.id).id == known.id  # the old id is an alias
    # and later events under the anonymous id keep landing on the merged profile
    persona.page(anonymous_id="phone", timestamp=NOW + 10)
    after = persona.profile_for(Identity.anonymous("phone"))
    assert after is not None and after.behaviour.page_views.total == 4


def test_a_merge_that_fails_leaves_the_other_profile_writable(persona: Persona) -> None:
    _, anon = _known_and_anonymous(persona)
    with pytest.raises(LookupError):
        persona.merge("no-such-profile", anon.id)
    result = persona.page(anonymous_id="phone", timestamp=NOW)
    assert result.applied and result.profile.id == anon.id
    reloaded = persona.store.load(anon.id)
    assert reloaded is not None and reloaded.merged_into is None
    assert reloaded.behaviour.page_views.total == 3


def test_two_merges_of_one_profile_into_two_others_end_in_one_profile(
    persona: Persona,
) -> None:
    known, anon = _known_and_anonymous(persona)
    persona.track("Signed Up", user_id="u2", timestamp=NOW - 4000)
    second = persona.profile_for(Identity.user("u2"))
    assert second is not None
    persona.merge(known.id, anon.id)
    # anon is already part of known: merging it into u2's profile brings known along
    merged = persona.merge(second.id, anon.id)
    for identity in (Identity.user("u1"), Identity.user("u2"), Identity.anonymous("phone")):
        found = persona.profile_for(identity)
        assert found is not None and found.id == merged.id, identity
    assert merged.behaviour.page_views.total == 2
    assert merged.behaviour.revenue.total == 100


def test_a_frozen_profile_survives_the_json_round_trip() -> None:
    profile = Profile(id="a")
    profile.merged_into = "b"
    assert Profile.from_dict(profile.to_dict()).merged_into == "b"
    assert "merged_into" not in Profile(id="c").to_dict()


def test_two_profiles_merged_into_each_other_at_once_end_as_one(persona: Persona) -> None:
    known, anon = _known_and_anonymous(persona)
    store = persona.store
    assert isinstance(store, InterleavingStore)
    backed_off: list[Exception] = []

    original_save = InterleavingStore.save

    def save(profile: Profile) -> Profile:
        saved = original_save(store, profile)
        if profile.id == anon.id and profile.merged_into == known.id and not backed_off:
            # anon is now marked as merging into known; a concurrent request merges the
            # other way round before this merge reads anything
            try:
                persona.merge(anon.id, known.id)
            except Exception as exc:  # recorded and asserted below
                backed_off.append(exc)
        return saved

    store.save = save  # type: ignore[method-assign]
    merged = persona.merge(known.id, anon.id)

    assert backed_off and "merged into each other" in str(backed_off[0])
    assert merged.id == known.id
    assert merged.behaviour.page_views.total == 2 and merged.behaviour.revenue.total == 100
    for identity in (Identity.user("u1"), Identity.anonymous("phone")):
        found = persona.profile_for(identity)
        assert found is not None and found.id == known.id and found.merged_into is None
