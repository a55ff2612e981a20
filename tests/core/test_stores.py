import threading

import pytest

from persona_sdk.errors import ConcurrentUpdateError
from persona_sdk.events import Event, apply_event
from persona_sdk.identity import Identity
from persona_sdk.profile import Profile
from persona_sdk.stores import InMemoryProfileStore, update_profile


def test_a_stale_write_is_refused_not_lost():
    store = InMemoryProfileStore()
    p = store.save(Profile())
    a, b = store.load(p.id), store.load(p.id)
    a.set_trait("x", 1, source="t", at=1)
    store.save(a)
    b.set_trait("y", 2, source="t", at=1)
    with pytest.raises(ConcurrentUpdateError, match="revision 2"):
        store.save(b)
    assert store.load(p.id).trait("x") == 1


def test_concurrent_updates_lose_nothing():
    store = InMemoryProfileStore()
    p = store.save(Profile())
    n_threads, per_thread = 8, 200
    barrier = threading.Barrier(n_threads)

    def work(t):
        barrier.wait()
        for i in range(per_thread):
            e = Event.create("track", anonymous_id=f"a{t}", event="Tick", message_id=f"{t}-{i}",
                             timestamp=1_795_435_200.0 + i)
            update_profile(store, p.id, lambda prof, e=e: apply_event(prof, e), attempts=1000)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.load(p.id)
    assert final.behaviour.events["Tick"].counts.total == n_threads * per_thread
    assert final.revision == 1 + n_threads * per_thread


def test_loads_are_private_copies():
    store = InMemoryProfileStore()
    p = store.save(Profile())
    copy = store.load(p.id)
    copy.behaviour.page_views.add(1)
    assert store.load(p.id).behaviour.page_views.total == 0


def test_identities_index_and_eviction_stay_consistent():
    store = InMemoryProfileStore(maxsize=2)
    ids = []
    for n in range(3):
        p = Profile()
        p.identities.add(Identity.anonymous(f"a{n}"))
        ids.append(store.save(p).id)
    assert store.lookup(Identity.anonymous("a0")) is None  # evicted with its profile
    assert store.lookup(Identity.anonymous("a2")) == ids[2]
    assert store.stats()["identities"] == 2
    assert store.delete(ids[2]) and store.lookup(Identity.anonymous("a2")) is None


# -- load_many ------------------------------------------------------------------------------


def test_load_many_returns_private_copies_and_leaves_out_missing_ids():
    from persona_sdk.stores import load_many

    store = InMemoryProfileStore()
    a, b = store.save(Profile()), store.save(Profile())
    got = store.load_many([a.id, "no-such-id", b.id, a.id])
    assert set(got) == {a.id, b.id}
    assert got[a.id].id == a.id and got[a.id].revision == a.revision
    got[a.id].behaviour.page_views.add(1)  # a private copy
    assert store.load(a.id).behaviour.page_views.total == 0
    assert store.load_many([]) == {}
    assert store.load_many(["x", "y"]) == {}
    assert load_many(store, iter([b.id])) == {b.id: store.load(b.id)}


def test_load_many_follows_a_merged_away_id_to_the_survivor():
    store = InMemoryProfileStore()
    old, survivor = store.save(Profile()), store.save(Profile())
    survivor.aliases.add(old.id)
    store.save(survivor)
    got = store.load_many([old.id, survivor.id])
    assert got[old.id].id == survivor.id and got[survivor.id].id == survivor.id
    assert got[old.id] is not got[survivor.id]


def test_load_many_helper_and_protocol_default_fall_back_to_load():
    from persona_sdk.stores import ProfileStore, load_many

    inner = InMemoryProfileStore()
    a = inner.save(Profile())

    class OldStore:  # written before load_many existed (structural)
        def __init__(self):
            self.loads = []

        def load(self, profile_id):
            self.loads.append(profile_id)
            return inner.load(profile_id)

    old = OldStore()
    assert load_many(old, [a.id, "gone", a.id]) == {a.id: inner.load(a.id)}
    assert old.loads == [a.id, "gone"]  # once per distinct id

    class SubclassStore(ProfileStore):  # gets the protocol's default
        def __init__(self):
            self.loads = []

        def load(self, profile_id):
            self.loads.append(profile_id)
            return inner.load(profile_id)

    sub = SubclassStore()
    assert sub.load_many([a.id, "gone", a.id]) == {a.id: inner.load(a.id)}
    assert sub.loads == [a.id, "gone"]
