"""DatabaseProfileStore and DatabaseConsentLedger.

Runs on SQLite + locmem by default and on PostgreSQL + Redis with
``PERSONA_TEST_BACKEND=postgres``. Each test gets its own cache key prefix, so tests (and
test runs sharing one Redis) never see each other's cached profiles.
"""

import os
import threading
import uuid

import pytest
from django.core.cache import caches
from django.db import connection
from django.db.models import F

import persona_sdk
from persona_django.models import AliasRecord, ConsentEntry, IdentityRecord, ProfileRecord
from persona_django.stores import (
    DatabaseConsentLedger,
    DatabaseOutbox,
    DatabaseProfileStore,
    alias_key,
    identity_key,
    profile_key,
)
from persona_sdk import ConsentPolicy, ConsentState, Identity, Profile
from persona_sdk.consent import ConsentDecision, LedgerEntry
from persona_sdk.errors import ConcurrentUpdateError
from persona_sdk.events import Event, apply_event
from persona_sdk.outbox import OutboxItem
from persona_sdk.plugins import make_plugin_manager
from persona_sdk.stores import update_profile
from persona_sdk.testing import build_profile

BACKEND = os.environ.get("PERSONA_TEST_BACKEND", "sqlite")
NOW = 1_795_435_200.0

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    conf = {alias: dict(options) for alias, options in settings.CACHES.items()}
    conf["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = conf


@pytest.fixture
def store():
    return DatabaseProfileStore(timeout=120)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run the store's after-commit cache writes, as a real commit would (the test itself
    runs inside a transaction that is rolled back)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def cache():
    return caches["default"]


def drop(*keys):
    """Forget cache entries (never ``cache.clear()``: on Redis that would flush the whole
    database other test runs may be using)."""
    cache().delete_many(list(keys))


def tick(message_id, *, anonymous_id="a", timestamp=NOW):
    return Event.create("track", event="Tick", anonymous_id=anonymous_id,
                        message_id=message_id, timestamp=timestamp)


# -- round trip ----------------------------------------------------------------------------


def test_a_profile_round_trips_through_the_database_and_the_cache(store, committed):
    profile = build_profile(now=NOW, visits=3, page_views=5, purchases=[20.0, 35.5],
                            categories={"shoes": 2}, traits={"plan": "pro"}, user_id="u1",
                            consent={"analytics": "granted", "marketing": "denied"})
    profile.aliases.add("0" * 32)
    with committed():
        saved = store.save(profile)
    assert saved is profile and saved.revision == 1

    from_cache = store.load(profile.id)
    store.forget(profile.id)
    from_db = store.load(profile.id)
    for loaded in (from_cache, from_db):
        assert loaded == profile
        assert loaded.to_dict() == profile.to_dict()
        assert loaded.revision == 1
    row = ProfileRecord.objects.get(id=profile.id)
    assert row.revision == 1 and row.data["id"] == profile.id
    assert store.load("f" * 32) is None
    assert store.resolve_id(profile.id) == profile.id
    assert store.resolve_id("f" * 32) is None


def test_loads_are_private_copies(store):
    profile = store.save(Profile())
    copy = store.load(profile.id)
    copy.behaviour.page_views.add(1)
    assert store.load(profile.id).behaviour.page_views.total == 0


# -- optimistic concurrency ----------------------------------------------------------------


def test_a_stale_write_is_refused_not_lost(store):
    p = store.save(Profile())
    a, b = store.load(p.id), store.load(p.id)
    a.set_trait("x", 1, source="t", at=1)
    store.save(a)
    b.set_trait("y", 2, source="t", at=1)
    with pytest.raises(ConcurrentUpdateError, match="at revision 2, the update was based on 1"):
        store.save(b)
    fresh = store.load(p.id)
    assert fresh.trait("x") == 1 and fresh.trait("y") is None and fresh.revision == 2


def test_update_profile_retries_a_stale_write_and_keeps_both_changes(store):
    p = store.save(Profile())
    calls = []

    def change(profile):
        calls.append(profile.revision)
        if len(calls) == 1:  # someone else writes between our load and our save
            update_profile(store, p.id, lambda other: other.set_trait("x", 1, source="t", at=1))
        profile.set_trait("y", 2, source="t", at=1)

    saved, _ = update_profile(store, p.id, change)
    assert calls == [1, 2]
    assert saved.revision == 3
    final = store.load(p.id)
    assert final.trait("x") == 1 and final.trait("y") == 2


def test_creating_a_profile_whose_id_exists_is_a_conflict(store):
    store.save(Profile(id="a" * 32))
    with pytest.raises(ConcurrentUpdateError, match="created concurrently"):
        store.save(Profile(id="a" * 32))
    assert store.load("a" * 32).revision == 1


def test_saving_a_deleted_profile_is_a_conflict(store):
    p = store.save(Profile())
    stale = store.load(p.id)
    assert store.delete(p.id)
    with pytest.raises(ConcurrentUpdateError, match="does not exist"):
        store.save(stale)


def test_a_conflict_drops_the_cached_profile_so_the_retry_reads_the_database(
    store, committed, django_assert_num_queries
):
    with committed():
        p = store.save(Profile())
    # Another process writes the row (its cache write has not reached us yet).
    changed = store.load(p.id)
    changed.set_trait("elsewhere", True, source="t", at=1)
    ProfileRecord.objects.filter(id=p.id).update(data=changed.to_dict(), revision=F("revision") + 1)

    stale = store.load(p.id)  # still the cached revision 1
    assert stale.revision == 1
    stale.set_trait("here", True, source="t", at=1)
    with pytest.raises(ConcurrentUpdateError):
        store.save(stale)
    assert cache().get(profile_key(p.id)) is None

    with django_assert_num_queries(1):
        fresh = store.load(p.id)
    assert fresh.revision == 2 and fresh.trait("elsewhere") is True

    with committed():
        saved, _ = update_profile(store, p.id, lambda prof: prof.set_trait("here", True, source="t", at=1))
    assert saved.revision == 3
    final = store.load(p.id)
    assert final.trait("elsewhere") is True and final.trait("here") is True


#: PostgreSQL: 8 threads x 50 updates. SQLite serializes writers with a file lock (and waits
#: on it), so the same test runs there with fewer threads.
THREADS, UPDATES = (8, 50) if BACKEND == "postgres" else (4, 25)


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_to_one_profile_lose_nothing():
    store = DatabaseProfileStore(timeout=120)
    p = store.save(Profile())
    n_threads, per_thread = THREADS, UPDATES
    barrier = threading.Barrier(n_threads)
    errors = []

    def work(t):
        try:
            barrier.wait()
            for i in range(per_thread):
                event = tick(f"{t}-{i}", anonymous_id=f"a{t}", timestamp=NOW + i)
                update_profile(store, p.id, lambda prof, e=event: apply_event(prof, e), attempts=1000)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    total = n_threads * per_thread
    for final in (store.load(p.id), Profile.from_dict(ProfileRecord.objects.get(id=p.id).data)):
        assert final.behaviour.events["Tick"].counts.total == total
    assert ProfileRecord.objects.get(id=p.id).revision == 1 + total
    assert store.load(p.id).revision == 1 + total


# -- the cache -----------------------------------------------------------------------------


def test_a_warm_lookup_and_load_run_no_queries(store, committed, django_assert_num_queries):
    who = Identity.anonymous("warm-visitor")
    profile = Profile()
    profile.identities.add(who)
    with committed():
        store.save(profile)
    with django_assert_num_queries(0):
        pid = store.lookup(who)
        loaded = store.load(pid)
        assert store.resolve_id(pid) == pid
    assert loaded == profile and loaded.revision == 1


def test_cold_reads_fill_the_cache(store, committed, django_assert_num_queries):
    who = Identity.user("42")
    profile = Profile()
    profile.identities.add(who)
    with committed():
        store.save(profile)
    drop(profile_key(profile.id), identity_key(who.key))
    with django_assert_num_queries(2):
        assert store.lookup(who) == profile.id
        assert store.load(profile.id) == profile
    with django_assert_num_queries(0):
        assert store.load(store.lookup(who)) == profile


def test_a_miss_is_not_cached(store, committed, django_assert_num_queries):
    who = Identity.anonymous("newcomer")
    assert store.lookup(who) is None
    profile = Profile()
    profile.identities.add(who)
    with committed():
        store.save(profile)
    with django_assert_num_queries(0):
        assert store.lookup(who) == profile.id


def test_inside_an_open_transaction_reads_see_own_writes_and_nothing_uncommitted_is_cached(store):
    # pytest-django runs this test in a transaction that is never committed (as a request
    # under ATOMIC_REQUESTS would be until it returns).
    who = Identity.anonymous("in-transaction")
    profile = Profile()
    profile.identities.add(who)
    store.save(profile)
    assert store.lookup(who) == profile.id
    update_profile(store, profile.id, lambda p: p.set_trait("x", 1, source="t", at=1))
    assert store.load(profile.id).revision == 2
    assert cache().get(profile_key(profile.id)) is None
    assert cache().get(identity_key(who.key)) is None


def test_a_newer_cached_revision_is_not_replaced_by_an_older_one(store, committed):
    with committed():
        p = store.save(Profile())
    newer = {"r": 5, "d": p.to_dict()}
    cache().set(profile_key(p.id), newer)
    with committed():
        store._publish(connection.alias, profiles={profile_key(p.id): {"r": 2, "d": p.to_dict()}})
    assert cache().get(profile_key(p.id))["r"] == 5


# -- identities, aliases, delete -----------------------------------------------------------


def test_an_identity_moving_to_another_profile_is_re_pointed(store, committed):
    who = Identity.email("ada@example.com")
    first, second = Profile(), Profile()
    first.identities.add(who)
    second.identities.add(who)
    with committed():
        store.save(first)
        assert store.lookup(who) == first.id
        store.save(second)
    assert store.lookup(who) == second.id
    assert IdentityRecord.objects.get(key=who.key).profile_id == second.id
    assert IdentityRecord.objects.filter(key=who.key).count() == 1


def test_delete_removes_profile_identities_aliases_and_cache(store, committed):
    who = Identity.anonymous("leaving")
    p = Profile()
    p.identities.add(who)
    with committed():
        store.save(p)
        other = store.save(Profile())
        merged = store.load(p.id)
        merged.aliases.add(other.id)
        store.save(merged)
    assert store.resolve_id(other.id) == p.id
    with committed():
        assert store.delete(other.id)  # deleting by an alias deletes the profile it leads to
    assert store.load(p.id) is None and store.load(other.id) is None
    assert store.lookup(who) is None and store.resolve_id(other.id) is None
    assert not ProfileRecord.objects.exists()
    assert not IdentityRecord.objects.exists() and not AliasRecord.objects.exists()
    for key in (profile_key(p.id), identity_key(who.key), alias_key(other.id)):
        assert cache().get(key) is None
    assert store.delete(p.id) is False


def test_a_late_update_of_a_merged_away_profile_lands_on_the_survivor(store):
    keep, gone = store.save(Profile()), store.save(Profile())
    stale = store.load(gone.id)
    merged = store.load(keep.id)
    merged.aliases.add(gone.id)
    store.save(merged)
    with pytest.raises(ConcurrentUpdateError, match="merged away"):
        store.save(stale)
    saved, _ = update_profile(store, gone.id, lambda p: p.set_trait("late", 1, source="t", at=1))
    assert saved.id == keep.id and store.load(keep.id).trait("late") == 1


@pytest.fixture
def persona(store):
    return persona_sdk.Persona(
        store=store,
        ledger=DatabaseConsentLedger(),
        outbox=DatabaseOutbox(),
        plugin_manager=make_plugin_manager(),
        policy=ConsentPolicy(mode="opt-in"),
        clock=lambda: NOW,
    )


def test_merge_re_points_identities_and_aliases_and_moves_the_ledger(
    persona, store, committed, django_assert_num_queries
):
    a, b, c = (Identity.anonymous(x) for x in ("visitor-a", "visitor-b", "visitor-c"))
    with committed():
        pa = persona.set_consent(a, {"analytics": True}, source="banner", at=NOW - 30)
        pb = persona.set_consent(b, {"analytics": True, "marketing": False}, source="banner", at=NOW - 20)
        pc = persona.set_consent(c, {"analytics": True}, source="banner", at=NOW - 10)
        persona.track("Tick", anonymous_id="visitor-a", timestamp=NOW - 3)
        persona.track("Tick", anonymous_id="visitor-b", timestamp=NOW - 2)
        persona.track("Tick", anonymous_id="visitor-c", timestamp=NOW - 1)
        DatabaseOutbox().enqueue([OutboxItem("i" * 32, "crm", "m1", pc.id, {"x": 1}, ("sharing",), NOW)])
        persona.merge(pb.id, pc.id)  # c into b, then b into a: c's alias must follow
        merged = persona.merge(pa.id, pb.id)

    assert merged.id == pa.id
    assert merged.aliases == {pb.id, pc.id}
    assert {a, b, c} <= merged.identities
    assert merged.behaviour.events["Tick"].counts.total == 3

    # warm: everything answers from the cache
    with django_assert_num_queries(0):
        for who in (a, b, c):
            assert store.lookup(who) == pa.id
        for old in (pb.id, pc.id):
            assert store.resolve_id(old) == pa.id
            assert store.load(old).id == pa.id
    # cold: the database says the same
    drop(*(identity_key(w.key) for w in (a, b, c)),
         *(k for pid in (pa.id, pb.id, pc.id) for k in (profile_key(pid), alias_key(pid))))
    for who in (a, b, c):
        assert store.lookup(who) == pa.id
    assert store.resolve_id(pc.id) == pa.id and store.load(pb.id).id == pa.id
    assert list(ProfileRecord.objects.values_list("id", flat=True)) == [pa.id]
    assert dict(AliasRecord.objects.values_list("old_id", "profile_id")) == {pb.id: pa.id, pc.id: pa.id}
    assert set(IdentityRecord.objects.values_list("profile_id", flat=True)) == {pa.id}

    ledger = persona.ledger.entries(pa.id)
    assert [(e.purpose, e.state, e.source) for e in ledger] == [
        ("analytics", ConsentState.GRANTED, "banner"),
        ("analytics", ConsentState.GRANTED, "banner"),
        ("marketing", ConsentState.DENIED, "banner"),
        ("analytics", ConsentState.GRANTED, "banner"),
    ]
    assert [e.at for e in ledger] == sorted(e.at for e in ledger)
    assert persona.ledger.entries(pb.id) == [] and persona.ledger.entries(pc.id) == []
    assert persona.outbox.claim(limit=10, now=NOW, lease=60)[0].profile_id == pa.id


def test_erase_removes_everything_the_database_holds(persona, store, committed):
    who = Identity.anonymous("forget-me")
    with committed():
        profile = persona.set_consent(who, {"analytics": True}, source="banner")
        persona.track("Tick", anonymous_id="forget-me")
        report = persona.erase(who)
    assert report["found"] and report["ledger_entries_erased"] == 1
    assert store.lookup(who) is None and store.load(profile.id) is None
    assert not ConsentEntry.objects.filter(profile_id=profile.id).exists()


# -- the consent ledger --------------------------------------------------------------------


def entry(profile_id, purpose, state, at, source="banner"):
    return LedgerEntry(profile_id, purpose, ConsentState(state), at, source, "3")


def test_the_ledger_returns_entries_in_time_order():
    ledger = DatabaseConsentLedger()
    ledger.append(entry("p1", "marketing", "granted", NOW + 10.25))
    ledger.append(entry("p1", "analytics", "denied", NOW))
    ledger.append(entry("p2", "analytics", "granted", NOW))
    got = ledger.entries("p1")
    assert got == [entry("p1", "analytics", "denied", NOW), entry("p1", "marketing", "granted", NOW + 10.25)]
    assert ledger.entries("nobody") == []


def test_the_ledger_is_append_only():
    DatabaseConsentLedger().append(entry("p1", "analytics", "granted", NOW))
    row = ConsentEntry.objects.get()
    row.state = "denied"
    with pytest.raises(ValueError, match="append-only"):
        row.save()
    assert ConsentEntry.objects.get().state == "granted"


def test_reassign_moves_entries_and_erase_deletes_them():
    ledger = DatabaseConsentLedger()
    ledger.append(entry("old", "analytics", "granted", NOW + 1))
    ledger.append(entry("old", "marketing", "denied", NOW + 3))
    ledger.append(entry("new", "analytics", "denied", NOW + 2))
    ledger.reassign("old", "new")
    assert ledger.entries("old") == []
    assert [(e.profile_id, e.at) for e in ledger.entries("new")] == [
        ("new", NOW + 1), ("new", NOW + 2), ("new", NOW + 3)
    ]
    ledger.reassign("new", "new")
    assert len(ledger.entries("new")) == 3
    assert ledger.erase("new") == 3
    assert ledger.erase("new") == 0
    assert not ConsentEntry.objects.exists()


def test_the_admin_shows_profiles_and_the_ledger_read_only(admin_client, store):
    profile = store.save(build_profile(now=NOW, traits={"plan": "pro"}))
    DatabaseConsentLedger().append(entry(profile.id, "analytics", "granted", NOW))
    page = admin_client.get(f"/admin/persona/profilerecord/{profile.id}/change/")
    assert page.status_code == 200
    assert b"&quot;plan&quot;" in page.content and b"<pre>" in page.content
    ledger = admin_client.get("/admin/persona/consententry/")
    assert ledger.status_code == 200 and profile.id.encode() in ledger.content
    assert admin_client.get("/admin/persona/consententry/add/").status_code == 403
    assert admin_client.get("/admin/persona/profilerecord/add/").status_code == 403
    row = ConsentEntry.objects.get()
    assert admin_client.post(f"/admin/persona/consententry/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ConsentEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_stale_local_identity_entry_after_an_erase_elsewhere_heals_itself():
    """Two processes (two stores): one erases a person while the other still has the
    identity → profile id in its process-local cache. The next event there makes a new
    profile instead of failing, and reads never return the erased profile."""
    from persona_django.stores import DatabaseConsentLedger, DatabaseOutbox, DatabaseProfileStore
    from persona_sdk import ConsentPolicy, Identity, Persona
    from persona_sdk.plugins import make_plugin_manager

    def make():
        return Persona(
            store=DatabaseProfileStore(), ledger=DatabaseConsentLedger(), outbox=DatabaseOutbox(),
            policy=ConsentPolicy(mode="opt-out"), plugin_manager=make_plugin_manager(),
        )

    here, elsewhere = make(), make()
    here.page(anonymous_id="v1")
    first = here.profile_for(Identity.anonymous("v1"))
    assert first is not None  # the id is now in `here`'s local cache
    assert elsewhere.erase(Identity.anonymous("v1"))["found"]
    assert here.profile_for(Identity.anonymous("v1")) is None
    result = here.page(anonymous_id="v1")
    assert result.applied and result.profile.id != first.id
    assert here.profile_for(Identity.anonymous("v1")).behaviour.page_views.total == 1


# -- load_many --------------------------------------------------------------------------------


def test_load_many_warm_is_one_cache_read_and_no_queries(store, committed,
                                                          django_assert_num_queries):
    profiles = [Profile() for _ in range(3)]
    with committed():
        for p in profiles:
            store.save(p)
    ids = [p.id for p in profiles]
    calls = []
    real = store._get_many
    store._get_many = lambda keys: calls.append(list(keys)) or real(keys)
    with django_assert_num_queries(0):
        got = store.load_many([*ids, ids[0]])
    assert calls == [[profile_key(i) for i in ids]]  # one get_many for the batch
    assert got == {p.id: p for p in profiles}
    assert all(got[p.id].revision == 1 for p in profiles)
    got[ids[0]].set_trait("x", 1, source="t", at=1)  # private copies
    assert store.load(ids[0]).trait("x") is None


def test_load_many_reads_the_misses_in_one_query_and_fills_the_cache(
    store, committed, django_assert_num_queries
):
    profiles = [Profile() for _ in range(4)]
    with committed():
        for p in profiles:
            store.save(p)
    drop(*(profile_key(p.id) for p in profiles[1:]))
    with django_assert_num_queries(1):
        got = store.load_many([p.id for p in profiles])
    assert got == {p.id: p for p in profiles}
    with django_assert_num_queries(0):
        assert store.load_many([p.id for p in profiles]) == got


def _merge_and_erase(store, committed, keep, gone, erased):
    """Save three profiles, merge ``gone`` into ``keep`` and erase ``erased``."""
    with committed():
        for p in (keep, gone, erased):
            store.save(p)
    merged = store.load(keep.id)
    merged.aliases.add(gone.id)
    with committed():
        store.save(merged)
        store.delete(erased.id)


def test_load_many_leaves_out_missing_and_erased_ids_and_follows_aliases(store, committed):
    keep, gone, erased = (Profile() for _ in range(3))
    _merge_and_erase(store, committed, keep, gone, erased)
    got = store.load_many([keep.id, gone.id, erased.id, "no-such-id"])
    assert set(got) == {keep.id, gone.id}
    assert got[gone.id].id == keep.id and got[keep.id].id == keep.id
    assert store.load_many([]) == {}


def test_load_many_inside_an_open_transaction_sees_own_writes(store):
    p = store.save(Profile())  # not committed: its cache key is dirty for this thread
    p.set_trait("plan", "pro", source="t", at=1)
    store.save(p)
    got = store.load_many([p.id])
    assert got[p.id].trait("plan") == "pro" and got[p.id].revision == 2
    assert cache().get(profile_key(p.id)) is None  # nothing uncommitted reached the cache


def test_load_many_uses_the_database_when_the_cache_fails(store, committed, monkeypatch):
    p = Profile()
    with committed():
        store.save(p)

    class Broken:
        def get_many(self, keys):
            raise ConnectionError("cache down")

        def add(self, *args, **kwargs):
            raise ConnectionError("cache down")

    monkeypatch.setattr(DatabaseProfileStore, "cache", property(lambda self: Broken()))
    assert store.load_many([p.id, "no-such-id"]) == {p.id: p}


def test_load_many_of_many_ids_is_chunked(store, committed, django_assert_max_num_queries):
    from persona_django import stores as stores_module

    profiles = [Profile() for _ in range(7)]
    with committed():
        for p in profiles:
            store.save(p)
    drop(*(profile_key(p.id) for p in profiles))
    old = stores_module._IN_CHUNK
    stores_module._IN_CHUNK = 3
    try:
        with django_assert_max_num_queries(3):  # ceil(7 / 3) queries
            got = store.load_many([p.id for p in profiles])
    finally:
        stores_module._IN_CHUNK = old
    assert got == {p.id: p for p in profiles}


def _consented(granted, denied=()):
    p = Profile()
    for purpose in granted:
        p.consent[purpose] = ConsentDecision(ConsentState.GRANTED, NOW, "banner", "2")
    for purpose in denied:
        p.consent[purpose] = ConsentDecision(ConsentState.DENIED, NOW + 1, "banner", "2")
    return p


def test_load_consents_reads_the_batchs_decisions_in_one_query(
    store, committed, django_assert_num_queries
):
    a = _consented(["analytics", "sharing"])
    b = _consented(["analytics"], denied=["sharing"])
    c = Profile()
    with committed():
        for p in (a, b, c):
            store.save(p)
    with django_assert_num_queries(1):
        got = store.load_consents([a.id, b.id, c.id, a.id])
    assert got == {a.id: a.consent, b.id: b.consent, c.id: {}}
    assert got[b.id]["sharing"].state is ConsentState.DENIED
    assert store.load_consents([]) == {}


def test_load_consents_follows_aliases_and_leaves_out_erased_ids(store, committed):
    keep, gone, erased = _consented(["sharing"]), Profile(), _consented(["sharing"])
    _merge_and_erase(store, committed, keep, gone, erased)
    got = store.load_consents([keep.id, gone.id, erased.id, "no-such-id"])
    assert got == {keep.id: keep.consent, gone.id: keep.consent}


def test_load_consents_sees_a_withdrawal_not_yet_committed_in_this_transaction(store, committed):
    p = _consented(["sharing"])
    with committed():
        store.save(p)
    assert store.load(p.id).consent == p.consent  # cached
    withdrawn = store.load(p.id)
    withdrawn.consent["sharing"] = ConsentDecision(ConsentState.DENIED, NOW + 5, "banner", "2")
    store.save(withdrawn)  # not committed: the cache still holds the grant
    assert store.load_consents([p.id])[p.id]["sharing"].state is ConsentState.DENIED
