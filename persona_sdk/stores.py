"""Where profiles live: the store interface and the in-memory store.

A store maps profile ids to profiles and identities (and merged-away ids, the aliases) to
profile ids. Writes use optimistic concurrency: :meth:`ProfileStore.save` succeeds only if
the profile's ``revision`` is still the stored one, otherwise it raises
:class:`~persona_sdk.errors.ConcurrentUpdateError` and :func:`update_profile` re-reads and
re-applies the change, so two concurrent updates never silently lose one another.

:meth:`ProfileStore.load_many` reads many profiles at once; :func:`load_many` calls it, or
``load`` per id for a store written before it existed. :meth:`ProfileStore.load_consents`
reads only their consent decisions (the delivery worker re-checks the consent of a whole
claimed batch with one call); :func:`load_consents` falls back to ``load_many``.

A save can carry work that must commit with it: ``save(profile, then=...)`` runs ``then``
inside the write, after the profile is written and before it is committed, and if ``then``
raises the write is undone. The SDK queues an event's outbox items there (a transactional
outbox): a profile that took an event has queued it for the sinks too, and a failed enqueue
leaves the profile as it was. :func:`save` calls a store whose ``save`` predates ``then``
the old way and runs ``then`` just after it (not atomic).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from cachetools import LRUCache

from .consent import ConsentDecision
from .errors import ConcurrentUpdateError
from .identity import Identity
from .profile import Profile

__all__ = [
    "InMemoryProfileStore",
    "ProfileStore",
    "load_consents",
    "load_many",
    "save",
    "update_profile",
]

T = TypeVar("T")


class ProfileStore(Protocol):
    def load(self, profile_id: str) -> Profile | None:
        """A private copy of the profile (following aliases), or None."""
        ...

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Profile]:
        """``load`` for many ids at once: ``{requested id: profile}``, ids with no profile
        left out (a merged-away id maps to the surviving profile, as ``load`` does). A
        store should read them in as few round trips as it can; this default (for classes
        that subclass ``ProfileStore``) calls ``load`` per distinct id."""
        out: dict[str, Profile] = {}
        for profile_id in dict.fromkeys(profile_ids):
            profile = self.load(profile_id)
            if profile is not None:
                out[profile_id] = profile
        return out

    def load_consents(self, profile_ids: Iterable[str]) -> dict[str, Mapping[str, ConsentDecision]]:
        """The consent decisions of many profiles, as ``load_many`` would find them:
        ``{requested id: {purpose: decision}}``, ids with no profile left out. What the
        delivery worker re-checks a claimed batch against; a store can read just that part
        of its profiles (the Django store: one query). This default (for classes that
        subclass ``ProfileStore``) reads the whole profiles with ``load_many``."""
        return {pid: p.consent for pid, p in self.load_many(profile_ids).items()}

    def save(self, profile: Profile, *, then: Callable[[Profile], object] | None = None) -> Profile:
        """Write if ``profile.revision`` is the stored revision (0 = new); return the
        profile with its new revision; index its identities and aliases. Raises
        ``ConcurrentUpdateError`` otherwise.

        ``then`` (optional) is called with the profile inside the write: after the
        revision check passed and the profile is written, before the write commits. If it
        raises, nothing is written and the exception propagates. It is not called when the
        revision check fails."""
        ...

    def delete(self, profile_id: str) -> bool:
        """Remove the profile, its identity index entries and aliases."""
        ...

    def lookup(self, identity: Identity) -> str | None:
        """The id of the profile known by ``identity``."""
        ...

    def resolve_id(self, profile_id: str) -> str | None:
        """``profile_id`` itself, or the profile it was merged into, or None."""
        ...


def load_many(store: ProfileStore, profile_ids: Iterable[str]) -> dict[str, Profile]:
    """``store.load_many(profile_ids)``, or one ``load`` per distinct id for a store that
    does not have it (one written before it existed)."""
    batch = getattr(store, "load_many", None)
    if batch is not None:
        found: dict[str, Profile] = batch(profile_ids)
        return found
    out: dict[str, Profile] = {}
    for profile_id in dict.fromkeys(profile_ids):
        profile = store.load(profile_id)
        if profile is not None:
            out[profile_id] = profile
    return out


def load_consents(
    store: ProfileStore, profile_ids: Iterable[str]
) -> dict[str, Mapping[str, ConsentDecision]]:
    """``store.load_consents(profile_ids)``, or the consent of each profile
    :func:`load_many` finds, for a store that does not have it."""
    batch = getattr(store, "load_consents", None)
    if batch is not None:
        found: dict[str, Mapping[str, ConsentDecision]] = batch(profile_ids)
        return found
    return {pid: p.consent for pid, p in load_many(store, profile_ids).items()}


_TAKES_THEN: dict[type, bool] = {}


def save(
    store: ProfileStore, profile: Profile, then: Callable[[Profile], object] | None = None
) -> Profile:
    """``store.save(profile, then=then)``; for a store whose ``save`` does not take
    ``then`` (written before it existed), ``store.save(profile)`` and then ``then(profile)``
    (the two are then not atomic)."""
    if then is None:
        return store.save(profile)
    kind = type(store)
    takes = _TAKES_THEN.get(kind)
    if takes is None:
        try:
            params = inspect.signature(store.save).parameters.values()
            takes = any(p.name == "then" or p.kind is p.VAR_KEYWORD for p in params)
        except (TypeError, ValueError):  # no signature to read: assume the old one
            takes = False
        _TAKES_THEN[kind] = takes
    if takes:
        return store.save(profile, then=then)
    saved = store.save(profile)
    then(saved)
    return saved


#: how many ``merged_into`` links :func:`update_profile` follows before giving up
MAX_MERGE_HOPS = 8


def update_profile(
    store: ProfileStore,
    profile_id: str,
    change: Callable[[Profile], T],
    *,
    create: Callable[[], Profile] | None = None,
    attempts: int = 10,
    follow_merges: bool = True,
    then: Callable[[Profile], object] | None = None,
) -> tuple[Profile, T]:
    """Load, change, save, retrying on a concurrent update. Returns (saved profile, result).

    ``change`` may run more than once; it must only mutate the profile it is given.
    ``then`` is passed to the store's ``save`` (work that commits with the change, see
    :meth:`ProfileStore.save`); it runs once per save attempt that passed the revision
    check, so only the attempt that committed counts.

    A profile being merged into another (``merged_into`` set, see ``Persona.merge``) takes
    no more changes: the change is applied to the profile it is merging into, so an event
    that arrives mid-merge lands on the merged profile instead of on one about to be
    deleted. ``follow_merges=False`` (the merge itself) changes the profile as it is.
    """
    last: ConcurrentUpdateError | None = None
    for _ in range(attempts):
        profile = store.load(profile_id)
        seen: list[str] = []
        while follow_merges and profile is not None and profile.merged_into is not None:
            seen.append(profile.id)
            if profile.merged_into in seen:
                raise ConcurrentUpdateError(
                    f"profiles {' and '.join(map(repr, seen))} are being merged into each "
                    "other concurrently; try again"
                )
            if len(seen) > MAX_MERGE_HOPS:
                raise ConcurrentUpdateError(
                    f"profile {profile_id!r} is merging into a chain of more than "
                    f"{MAX_MERGE_HOPS} profiles; try again"
                )
            profile = store.load(profile.merged_into)
        if profile is None:
            if create is None:
                raise LookupError(f"no profile {profile_id!r}")
            profile = create()
        result = change(profile)
        try:
            return save(store, profile, then), result
        except ConcurrentUpdateError as exc:
            last = exc
    raise ConcurrentUpdateError(
        f"profile {profile_id!r} kept changing; gave up after {attempts} attempts"
    ) from last


class _Profiles(LRUCache[str, Profile]):
    def __init__(self, maxsize: int, on_evict: Callable[[Profile], None]) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, Profile]:
        key, profile = super().popitem()
        self._on_evict(profile)
        return key, profile


class InMemoryProfileStore:
    """Profiles in process memory, bounded: beyond ``maxsize`` the least recently used
    profile is dropped (with its index entries). For tests, the CLI and demos; a site uses
    the Django store, which persists to its database."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._lock = threading.RLock()
        self._profiles: _Profiles = _Profiles(maxsize, self._unindex)
        self._identities: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    def _unindex(self, profile: Profile) -> None:
        for identity in profile.identities:
            if self._identities.get(identity.key) == profile.id:
                del self._identities[identity.key]
        for alias in profile.aliases:
            if self._aliases.get(alias) == profile.id:
                del self._aliases[alias]

    def resolve_id(self, profile_id: str) -> str | None:
        with self._lock:
            if profile_id in self._profiles:
                return profile_id
            return self._aliases.get(profile_id)

    def load(self, profile_id: str) -> Profile | None:
        with self._lock:
            real = self.resolve_id(profile_id)
            if real is None:
                return None
            stored = self._profiles.get(real)
            return None if stored is None else stored.copy()

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Profile]:
        out: dict[str, Profile] = {}
        with self._lock:
            for profile_id in profile_ids:
                if profile_id in out:
                    continue
                real = self.resolve_id(profile_id)
                stored = None if real is None else self._profiles.get(real)
                if stored is not None:
                    out[profile_id] = stored.copy()
        return out

    def load_consents(self, profile_ids: Iterable[str]) -> dict[str, Mapping[str, ConsentDecision]]:
        out: dict[str, Mapping[str, ConsentDecision]] = {}
        with self._lock:
            for profile_id in profile_ids:
                real = self.resolve_id(profile_id)
                stored = None if real is None else self._profiles.get(real)
                if stored is not None:
                    out[profile_id] = dict(stored.consent)  # decisions are immutable
        return out

    def save(self, profile: Profile, *, then: Callable[[Profile], object] | None = None) -> Profile:
        with self._lock:
            current = self._profiles.get(profile.id)
            current_revision = 0 if current is None else current.revision
            if profile.revision != current_revision:
                raise ConcurrentUpdateError(
                    f"profile {profile.id} is at revision {current_revision}, "
                    f"the update was based on {profile.revision}"
                )
            if then is not None:
                then(profile)  # before anything is stored: if it raises, nothing changed
            saved = profile.copy()
            saved.revision = current_revision + 1
            if current is not None and (
                current.identities != saved.identities or current.aliases != saved.aliases
            ):
                self._unindex(current)
            self._profiles[profile.id] = saved
            for identity in saved.identities:
                self._identities[identity.key] = saved.id
            for alias in saved.aliases:
                self._aliases[alias] = saved.id
                self._profiles.pop(alias, None)
            profile.revision = saved.revision
            return profile

    def delete(self, profile_id: str) -> bool:
        with self._lock:
            real = self.resolve_id(profile_id)
            if real is None:
                return False
            profile = self._profiles.pop(real, None)
            if profile is None:
                return False
            self._unindex(profile)
            return True

    def lookup(self, identity: Identity) -> str | None:
        with self._lock:
            return self._identities.get(identity.key)

    def __len__(self) -> int:
        return len(self._profiles)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "profiles": len(self._profiles),
                "identities": len(self._identities),
                "aliases": len(self._aliases),
                "maxsize": self._profiles.maxsize,
            }
