"""An event's profile change and its outbox items are one write: both are kept or neither.

Before, ``ingest`` saved the profile and then enqueued: an enqueue that failed (or a process
that died between the two) left the event applied to the profile but never queued for the
sinks, and re-sending the event was then refused as a duplicate, so it was lost for good.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from persona_sdk import ConsentPolicy, Event, Identity, Persona, Profile, hookimpl
from persona_sdk.errors import ConcurrentUpdateError
from persona_sdk.outbox import DeliveryResult, InMemoryOutbox, OutboxItem
from persona_sdk.stores import InMemoryProfileStore, save, update_profile

NOW = 1_795_435_200.0


class Sink:
    name = "crm"
    purposes = ("analytics",)
    max_batch = 100

    def accepts(self, event: Event) -> bool:
        return True

    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        return DeliveryResult.all_delivered(items)


class RegistersSink:
    @hookimpl
    def persona_register_sinks(self, register: Callable[[Sink], None]) -> None:
        register(Sink())


class FlakyOutbox(InMemoryOutbox):
    """Fails the next ``failures`` enqueues, as a database that went away would."""

    failures = 0

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError("outbox unavailable")
        return super().enqueue(items)


@pytest.fixture
def outbox() -> FlakyOutbox:
    return FlakyOutbox()


@pytest.fixture
def persona(make_persona: Callable[..., Persona], outbox: FlakyOutbox) -> Persona:
    return make_persona(
        plugins=[RegistersSink()],
        policy=ConsentPolicy(mode="opt-out"),
        outbox=outbox,
        clock=lambda: NOW,
    )


def test_a_failed_enqueue_leaves_the_profile_as_it_was_and_the_event_can_be_sent_again(
    persona: Persona, outbox: FlakyOutbox
) -> None:
    persona.page(anonymous_id="v", message_id="first", timestamp=NOW)
    before = persona.profile_for(Identity.anonymous("v"))
    assert before is not None and outbox.pending_count() == 1

    outbox.failures = 1
    with pytest.raises(OSError, match="outbox unavailable"):
        persona.page(anonymous_id="v", message_id="second", timestamp=NOW + 1)
    after = persona.profile_for(Identity.anonymous("v"))
    assert after is not None
    assert after.revision == before.revision  # the event did not reach the profile
    assert after.to_dict() == before.to_dict()
    assert outbox.pending_count() == 1

    # the sender retries the same event: it is applied and queued, not refused as a duplicate
    result = persona.page(anonymous_id="v", message_id="second", timestamp=NOW + 1)
    assert (result.applied, result.queued) == (True, 1)
    assert outbox.pending_count() == 2


def test_a_failed_enqueue_for_a_new_visitor_creates_no_profile(
    persona: Persona, outbox: FlakyOutbox
) -> None:
    outbox.failures = 1
    with pytest.raises(OSError):
        persona.track("Signed Up", anonymous_id="new", message_id="m1", timestamp=NOW)
    assert persona.profile_for(Identity.anonymous("new")) is None
    result = persona.track("Signed Up", anonymous_id="new", message_id="m1", timestamp=NOW)
    assert result.applied and result.queued == 1


def test_the_items_are_queued_by_the_save_that_commits_not_by_a_retried_one(
    make_persona: Callable[..., Persona],
) -> None:
    """A save that loses the revision race queues nothing; its retry queues the event once."""
    saves: list[int] = []

    class RacingStore(InMemoryProfileStore):
        def save(
            self, profile: Profile, *, then: Callable[[Profile], object] | None = None
        ) -> Profile:
            if len(saves) == 1 and profile.revision:
                # another request updates this profile between our load and our save
                other = super().load(profile.id)
                assert other is not None
                super().save(other)
            saves.append(profile.revision)
            return super().save(profile, then=then)

    outbox = InMemoryOutbox()
    persona = make_persona(
        plugins=[RegistersSink()],
        policy=ConsentPolicy(mode="opt-out"),
        store=RacingStore(),
        outbox=outbox,
        clock=lambda: NOW,
    )
    persona.page(anonymous_id="v", message_id="a", timestamp=NOW)
    result = persona.page(anonymous_id="v", message_id="b", timestamp=NOW + 1)
    assert len(saves) == 3  # create, the save that lost the race, its retry
    assert (result.applied, result.queued) == (True, 1)
    assert sorted(i.message_id for i in outbox.claim(limit=10, now=NOW + 5, lease=30)) == [
        "a",
        "b",
    ]


def test_then_runs_inside_the_save_and_its_failure_undoes_it() -> None:
    store = InMemoryProfileStore()
    profile = store.save(Profile(id="p1"))
    seen: list[int] = []

    def then(p: Profile) -> None:
        seen.append(p.revision)
        raise RuntimeError("no")

    loaded = store.load("p1")
    assert loaded is not None
    loaded.set_trait("plan", "pro", source="app", at=NOW)
    with pytest.raises(RuntimeError):
        store.save(loaded, then=then)
    stored = store.load("p1")
    assert stored is not None and stored.revision == profile.revision
    assert stored.trait("plan") is None
    assert seen == [profile.revision]


def test_then_is_not_called_when_the_revision_check_fails() -> None:
    store = InMemoryProfileStore()
    store.save(Profile(id="p1"))
    stale = store.load("p1")
    fresh = store.load("p1")
    assert stale is not None and fresh is not None
    store.save(fresh)
    called: list[Profile] = []
    with pytest.raises(ConcurrentUpdateError):
        store.save(stale, then=called.append)
    assert called == []


def test_update_profile_passes_then_to_the_save() -> None:
    store = InMemoryProfileStore()
    store.save(Profile(id="p1"))
    called: list[str] = []
    update_profile(store, "p1", lambda p: None, then=lambda p: called.append(p.id))
    assert called == ["p1"]


def test_a_store_whose_save_predates_then_still_works() -> None:
    class OldStore(InMemoryProfileStore):
        def save(self, profile: Profile) -> Profile:  # type: ignore[override]
            return super().save(profile)

    store = OldStore()
    order: list[str] = []
    saved = save(store, Profile(id="p1"), lambda p: order.append(f"then r{p.revision}"))
    assert saved.revision == 1
    assert order == ["then r1"]  # called after the save (not atomic with it)
