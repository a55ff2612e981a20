"""persona-sdk's storage protocols on the site's database (and cache).

* :class:`DatabaseProfileStore` — ``ProfileStore``: profiles as JSON documents with a
  revision (optimistic concurrency in SQL), identities and aliases indexed beside them, hot
  profiles and identity lookups in a Django cache alias (locmem or Redis).
* :class:`DatabaseConsentLedger` — ``ConsentLedger``: the append-only ledger.
* :class:`DatabaseOutbox` — ``Outbox``: the durable outbox; claims are exclusive
  (``SELECT … FOR UPDATE SKIP LOCKED`` where the database has it).

Cache layout (all keys under the versioned prefix ``persona:v1:``, inside the cache alias's
own ``KEY_PREFIX``/``VERSION``)::

    persona:v1:p:<profile id>         {"r": revision, "d": Profile.to_dict()}
    persona:v1:i:<blake2b(identity)>  profile id      (only hits: misses are not cached)
    persona:v1:a:<merged-away id>     surviving profile id

The database is the truth; the cache only saves reads. Writes go to the database first (the
``revision`` check there is what prevents lost updates) and reach the cache after the
transaction commits. Reads of keys this thread changed inside a still-open transaction
(``ATOMIC_REQUESTS``, tests) bypass the cache, so a request sees its own writes and
uncommitted data never reaches the cache. A stale cached profile cannot cause a lost update:
a save based on it fails the revision check, the entry is dropped, and the retry re-reads
the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from datetime import datetime, tzinfo
from datetime import timezone as dt_timezone
from typing import Any, ClassVar

from cachetools import TTLCache
from django.core.cache import BaseCache, caches
from django.db import IntegrityError, OperationalError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Case, DateTimeField, F, Field, Q, TextField, Value, When
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone

from persona_sdk.consent import ConsentDecision, ConsentState, LedgerEntry, consent_from_dict
from persona_sdk.errors import ConcurrentUpdateError
from persona_sdk.identity import Identity
from persona_sdk.outbox import OutboxItem
from persona_sdk.profile import SCHEMA_VERSION, Profile

from .models import AliasRecord, ConsentEntry, IdentityRecord, OutboxMessage, ProfileRecord

__all__ = [
    "CACHE_PREFIX",
    "DatabaseConsentLedger",
    "DatabaseOutbox",
    "DatabaseProfileStore",
    "from_datetime",
    "to_datetime",
]

log = logging.getLogger("persona_django")

#: Bump the version when the cached value format changes: old entries are then ignored.
CACHE_PREFIX = "persona:v1:"
#: Longest ``last_error`` kept for an outbox message (vendors sometimes answer with a page).
MAX_ERROR_LENGTH = 10_000
#: Ids per ``IN (...)`` list / per batched UPDATE: under SQLite's 999 variables of old builds.
_IN_CHUNK = 900


def to_datetime(ts: float) -> datetime:
    """POSIX seconds → an aware UTC datetime."""
    return datetime.fromtimestamp(ts, tz=dt_timezone.utc)


def from_datetime(value: datetime) -> float:
    """An aware datetime → POSIX seconds."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value.timestamp()


def profile_key(profile_id: str) -> str:
    return f"{CACHE_PREFIX}p:{profile_id}"


def alias_key(old_id: str) -> str:
    return f"{CACHE_PREFIX}a:{old_id}"


def identity_key(key: str) -> str:
    # Identity keys can be ~270 characters of arbitrary text: hash them to a short, safe key.
    return f"{CACHE_PREFIX}i:{hashlib.blake2b(key.encode('utf-8'), digest_size=16).hexdigest()}"


class DatabaseProfileStore:
    """``ProfileStore`` on the Django database, with hot entries in ``caches[cache_alias]``.

    A warm ``lookup`` + ``load`` is one or two cache reads and no SQL. ``save`` is one
    ``UPDATE … WHERE id = %s AND revision = %s`` (or an ``INSERT`` for a new profile) plus
    the identity index check, in one transaction.
    """

    def __init__(
        self, cache_alias: str = "default", *, timeout: int = 3600, local_ttl: float = 30.0
    ) -> None:
        self.cache_alias = cache_alias
        self.timeout = timeout
        # identity → profile id, in this process, for ``local_ttl`` seconds: saves a shared
        # cache round trip per request. A stale id (the profile was erased elsewhere) is
        # noticed when it loads nothing: the entry is dropped and the caller looks up again;
        # an id merged away elsewhere still loads, through its alias.
        self._ids: TTLCache[str, str] = TTLCache(maxsize=100_000, ttl=local_ttl)
        self._ids_lock = threading.Lock()
        # what this process last indexed per profile: a save whose identities and aliases
        # did not change (a page view, an event) skips the index queries
        self._indexed: TTLCache[str, tuple[frozenset[str], frozenset[str]]] = TTLCache(
            maxsize=100_000, ttl=600
        )
        self._local = threading.local()
        self._publishing = [threading.Lock() for _ in range(32)]

    # -- plumbing --------------------------------------------------------------------------
    @property
    def cache(self) -> BaseCache:
        # Resolved per call: Django's cache handler is per thread and is rebuilt when
        # CACHES changes (tests); nothing is touched at import time.
        return caches[self.cache_alias]

    @staticmethod
    def _db() -> str:
        # Reads go to the write database too: a replica's lag would only cause conflicts.
        return router.db_for_write(ProfileRecord)

    def _dirty(self, using: str) -> set[str]:
        """Cache keys this thread changed in the still-open transaction (bypass the cache
        for them). Emptied whenever no transaction is open."""
        dirty: set[str] | None = getattr(self._local, "dirty", None)
        if dirty is None:
            dirty = self._local.dirty = set()
        if dirty and not transaction.get_connection(using).in_atomic_block:
            dirty.clear()
        return dirty

    def _cache_call(self, what: str, fn: Callable[[], Any], default: Any = None) -> Any:
        """The cache is an accelerator: when it fails, log and carry on with the database."""
        try:
            return fn()
        except Exception as exc:
            log.warning(
                "persona: cache %r: %s failed (%s); using the database", self.cache_alias, what, exc
            )
            return default

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        got: dict[str, Any] = self._cache_call("get", lambda: self.cache.get_many(keys), {})
        return got

    def _fill(self, key: str, value: Any, dirty: set[str]) -> None:
        """Read-through fill: ``add`` (never overwrite), so a slow reader cannot replace a
        newer value a writer just published."""
        if key not in dirty:
            self._cache_call("add", lambda: self.cache.add(key, value, self.timeout))

    def _publish(
        self,
        using: str,
        *,
        profiles: Mapping[str, dict[str, Any]] | None = None,
        sets: Mapping[str, Any] | None = None,
        deletes: Iterable[str] = (),
    ) -> None:
        """Schedule cache writes for after the transaction commits (call inside it)."""
        profiles = dict(profiles or {})
        sets = dict(sets or {})
        deletes = [k for k in deletes if k not in sets and k not in profiles]
        keys = set(profiles) | set(sets) | set(deletes)
        if not keys:
            return
        self._dirty(using).update(keys)

        def publish() -> None:
            cache = self.cache
            for key, entry in profiles.items():
                self._cache_call(
                    "set", lambda key=key, entry=entry: self._put_profile(cache, key, entry)
                )
            if sets:
                self._cache_call("set_many", lambda: cache.set_many(sets, self.timeout))
            if deletes:
                self._cache_call("delete_many", lambda: cache.delete_many(deletes))
            self._dirty(using).difference_update(keys)

        transaction.on_commit(publish, using=using)

    def _put_profile(self, cache: BaseCache, key: str, entry: dict[str, Any]) -> None:
        # Two writers can publish out of order: never replace a newer revision. The lock
        # makes the check-and-set atomic within this process; across processes the window
        # is a cache round trip, and a stale entry is healed by the next write's conflict.
        with self._publishing[hash(key) % len(self._publishing)]:
            current = cache.get(key)
            if isinstance(current, dict) and current.get("r", 0) > entry["r"]:
                return
            cache.set(key, entry, self.timeout)

    def forget(self, profile_id: str) -> None:
        """Drop a profile's cached document (the next load reads the database)."""
        self._cache_call("delete", lambda: self.cache.delete(profile_key(profile_id)))

    @staticmethod
    def _profile(entry: Mapping[str, Any]) -> Profile:
        profile = Profile.from_dict(entry["d"])
        profile.revision = int(entry["r"])
        return profile

    def _load_db(self, profile_id: str, using: str, dirty: set[str]) -> Profile | None:
        row = (
            ProfileRecord.objects.using(using)
            .filter(id=profile_id)
            .values_list("data", "revision")
            .first()
        )
        if row is None:
            return None
        entry = {"r": int(row[1]), "d": row[0]}
        self._fill(profile_key(profile_id), entry, dirty)
        return self._profile(entry)

    def _alias_db(self, profile_id: str, using: str, dirty: set[str]) -> str | None:
        target = (
            AliasRecord.objects.using(using)
            .filter(old_id=profile_id)
            .values_list("profile_id", flat=True)
            .first()
        )
        if target is not None:
            self._fill(alias_key(profile_id), target, dirty)
        return target

    # -- ProfileStore ----------------------------------------------------------------------
    def load(self, profile_id: str) -> Profile | None:
        using = self._db()
        dirty = self._dirty(using)
        pkey, akey = profile_key(profile_id), alias_key(profile_id)
        got = self._get_many([k for k in (pkey, akey) if k not in dirty])
        entry = got.get(pkey)
        if entry is not None:
            return self._profile(entry)
        target = got.get(akey)
        if target is not None:
            tkey = profile_key(target)
            if tkey not in dirty:
                entry = self._get_many([tkey]).get(tkey)
                if entry is not None:
                    return self._profile(entry)
            profile = self._load_db(target, using, dirty)
            if profile is not None:
                return profile
        profile = self._load_db(profile_id, using, dirty)
        if profile is not None:
            return profile
        target = self._alias_db(profile_id, using, dirty)
        found = None if target is None else self._load_db(target, using, dirty)
        if found is None:
            self._forget_local(profile_id)
        return found

    def load_many(self, profile_ids: Iterable[str]) -> dict[str, Profile]:
        """``load`` for many ids: one cache ``get_many`` for all of them, one query for the
        profiles the cache did not have (they are added to it), then ``load`` for what is
        still missing (merged-away ids, followed through their alias; erased ones).
        Returns ``{requested id: profile}`` without the ids that have no profile."""
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return {}
        using = self._db()
        dirty = self._dirty(using)
        keys = {pid: profile_key(pid) for pid in ids}
        got = self._get_many([k for k in keys.values() if k not in dirty])
        out: dict[str, Profile] = {}
        missing: list[str] = []
        for pid in ids:
            entry = got.get(keys[pid])
            if entry is not None:
                out[pid] = self._profile(entry)
            else:
                missing.append(pid)
        if missing:
            records = ProfileRecord.objects.using(using)
            for start in range(0, len(missing), _IN_CHUNK):
                chunk = missing[start : start + _IN_CHUNK]
                rows = records.filter(id__in=chunk).values_list("id", "data", "revision")
                for pid, data, revision in rows:
                    entry = {"r": int(revision), "d": data}
                    self._fill(keys[pid], entry, dirty)
                    out[pid] = self._profile(entry)
            for pid in missing:
                if pid not in out:
                    profile = self.load(pid)  # an alias, or gone
                    if profile is not None:
                        out[pid] = profile
        return out

    def load_consents(self, profile_ids: Iterable[str]) -> dict[str, Mapping[str, ConsentDecision]]:
        """The consent decisions of many profiles in one query that reads only the
        documents' ``consent`` (and ``schema``) keys, from the database: the truth, and
        cheaper than the cached documents, which would each be unpickled and turned into a
        whole ``Profile``. Ids with no row (merged away, erased) and documents of an older
        schema go through ``load``."""
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return {}
        using = self._db()
        connection = connections[using]
        out: dict[str, Mapping[str, ConsentDecision]] = {}
        sql = ""
        if connection.vendor == "postgresql":
            # the ids as one array parameter, the two keys as jsonb text (parsed here): a
            # third of what the ORM's IN list and per-value converters cost
            meta = ProfileRecord._meta
            quote = connection.ops.quote_name
            data, pk = quote(meta.get_field("data").column), quote(meta.pk.column)
            sql = (
                f"SELECT {pk}, {data} -> 'schema', {data} -> 'consent' "
                f"FROM {quote(meta.db_table)} WHERE {pk} = ANY(%s)"
            )
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            if sql:
                with connection.cursor() as cursor:
                    cursor.execute(sql, [chunk])
                    rows = [
                        (pid, _json(schema), _json(consent))
                        for pid, schema, consent in cursor.fetchall()
                    ]
            else:
                records = ProfileRecord.objects.using(using).filter(id__in=chunk)
                rows = list(records.values_list("id", "data__schema", "data__consent"))
            for pid, schema, consent in rows:
                if schema == SCHEMA_VERSION and isinstance(consent, dict):
                    try:
                        out[pid] = consent_from_dict(consent)
                    except (KeyError, TypeError, ValueError):
                        pass  # malformed: ``load`` below says how
        for pid in ids:
            if pid not in out:
                profile = self.load(pid)  # an alias, an older document, or gone
                if profile is not None:
                    out[pid] = profile.consent
        return out

    def _forget_local(self, profile_id: str) -> None:
        """Drop this process's identity → ``profile_id`` entries (the profile is gone)."""
        with self._ids_lock:
            for key in [k for k, v in self._ids.items() if v == profile_id]:
                self._ids.pop(key, None)

    def resolve_id(self, profile_id: str) -> str | None:
        using = self._db()
        dirty = self._dirty(using)
        pkey, akey = profile_key(profile_id), alias_key(profile_id)
        got = self._get_many([k for k in (pkey, akey) if k not in dirty])
        if pkey in got:
            return profile_id
        if akey in got:
            return str(got[akey])
        return self._resolve_db(profile_id, using, dirty)

    def _resolve_db(self, profile_id: str, using: str, dirty: set[str]) -> str | None:
        if ProfileRecord.objects.using(using).filter(id=profile_id).exists():
            return profile_id
        return self._alias_db(profile_id, using, dirty)

    def lookup(self, identity: Identity) -> str | None:
        # Only hits are cached. A miss is a visitor about to get a profile: a cached "no"
        # could outlive that profile's creation by another process and split the visitor
        # into two profiles, and saving it would cost a cache write per new visitor.
        using = self._db()
        dirty = self._dirty(using)
        ikey = identity_key(identity.key)
        if ikey not in dirty:
            with self._ids_lock:
                local = self._ids.get(identity.key)
            if local is not None:
                return local
            hit = self._get_many([ikey]).get(ikey)
            if hit is not None:
                with self._ids_lock:
                    self._ids[identity.key] = str(hit)
                return str(hit)
        pid = (
            IdentityRecord.objects.using(using)
            .filter(key=identity.key)
            .values_list("profile_id", flat=True)
            .first()
        )
        if pid is not None:
            self._fill(ikey, pid, dirty)
        return pid

    def save(self, profile: Profile, *, then: Callable[[Profile], object] | None = None) -> Profile:
        """Write the profile (revision check in the ``UPDATE``'s ``WHERE``), index its
        identities and aliases, and run ``then`` (the SDK's outbox enqueue), all in one
        transaction; the cache is updated after it commits. Inside an outer transaction
        (``ATOMIC_REQUESTS``) this is a savepoint and commits with the request."""
        using = self._db()
        doc = profile.to_dict()
        now = timezone.now()
        based_on = profile.revision
        try:
            with transaction.atomic(using=using):
                records = ProfileRecord.objects.using(using)
                # ``then`` first (inside the transaction): on PostgreSQL, what the outbox
                # enqueues there joins the profile's UPDATE as one statement; elsewhere it
                # is written now, and a failed revision check below rolls it back.
                joined = None
                if then is not None:
                    if based_on and _joins(using):
                        joined = _Joined(using)
                    token = _JOINING.set(joined)
                    try:
                        then(profile)
                    except IntegrityError as exc:  # not a concurrent save of this profile
                        raise _ThenFailed(exc) from exc
                    finally:
                        _JOINING.reset(token)
                if based_on == 0:
                    records.create(
                        id=profile.id, data=doc, revision=1, created_at=now, updated_at=now
                    )
                    revision = 1
                else:
                    updated = _update_profile(using, profile.id, based_on, doc, now, joined)
                    if updated != 1:
                        raise _Stale
                    revision = based_on + 1
                signature = (
                    frozenset(i.key for i in profile.identities),
                    frozenset(profile.aliases),
                )
                with self._ids_lock:
                    unchanged = self._indexed.get(profile.id) == signature
                sets, deletes = ({}, []) if unchanged else self._index(using, profile)
                self._publish(
                    using,
                    profiles={profile_key(profile.id): {"r": revision, "d": doc}},
                    sets=sets,
                    deletes=deletes,
                )
        except _ThenFailed as failed:
            raise failed.error from None
        except (IntegrityError, OperationalError) as exc:
            # IntegrityError: a profile with this id already exists (someone else created it
            # first). OperationalError: only PostgreSQL's deadlock / serialization failures,
            # which a retry resolves; anything else is a real error.
            if isinstance(exc, OperationalError) and not _retryable(exc):
                raise
            self.forget(profile.id)
            message = self._conflict_message(profile.id, based_on, using)
            raise ConcurrentUpdateError(message) from exc
        except _Stale:
            # Whatever is cached for this profile is not what the database holds: drop it,
            # so update_profile's retry reads the database.
            self.forget(profile.id)
            message = self._conflict_message(profile.id, based_on, using)
            raise ConcurrentUpdateError(message) from None
        if not transaction.get_connection(using).in_atomic_block:
            # committed for sure (an outer transaction could still roll the index back)
            with self._ids_lock:
                self._indexed[profile.id] = signature
        profile.revision = revision
        return profile

    def _conflict_message(self, profile_id: str, based_on: int, using: str) -> str:
        current = (
            ProfileRecord.objects.using(using)
            .filter(id=profile_id)
            .values_list("revision", flat=True)
            .first()
        )
        if current is None:
            return (
                f"profile {profile_id} does not exist (deleted or merged away); "
                f"the update was based on revision {based_on}"
            )
        if based_on == 0:
            return f"profile {profile_id} was created concurrently (it is at revision {current})"
        return f"profile {profile_id} is at revision {current}, the update was based on {based_on}"

    def _index(self, using: str, profile: Profile) -> tuple[dict[str, str], list[str]]:
        """Point the profile's identities and aliases at it (inside the save's transaction).
        Returns the cache keys to set and to delete after commit."""
        pid = profile.id
        sets: dict[str, str] = {}
        deletes: list[str] = []
        identities = IdentityRecord.objects.using(using)
        # Aliases first: deleting a merged-away profile's row waits for a save of it that is
        # in flight, before any identity row is locked (so the two cannot deadlock); that
        # save then finds its row gone, and its retry loads the surviving profile.
        olds = sorted(a for a in profile.aliases if a != pid)
        if olds:
            aliases = AliasRecord.objects.using(using)
            known = set(
                aliases.filter(old_id__in=olds, profile_id=pid).values_list("old_id", flat=True)
            )
            new = [a for a in olds if a not in known]
            if new:
                ProfileRecord.objects.using(using).filter(id__in=new).delete()
                aliases.bulk_create(
                    [AliasRecord(old_id=a, profile_id=pid) for a in new],
                    update_conflicts=True,
                    unique_fields=["old_id"],
                    update_fields=["profile_id"],
                )
                # ids merged into a merged-away profile earlier now lead here too
                for old in aliases.filter(profile_id__in=new).values_list("old_id", flat=True):
                    sets[alias_key(old)] = pid
                aliases.filter(profile_id__in=new).update(profile_id=pid)
                # identities still pointing at a merged-away profile move here
                moved = list(identities.filter(profile_id__in=new).values_list("key", flat=True))
                if moved:
                    identities.filter(key__in=moved).update(profile_id=pid)
                    sets.update({identity_key(k): pid for k in moved})
                sets.update({alias_key(a): pid for a in new})
                deletes.extend(profile_key(a) for a in new)
        keys = sorted({i.key for i in profile.identities})
        if keys:
            current = dict(identities.filter(key__in=keys).values_list("key", "profile_id"))
            changed = [k for k in keys if current.get(k) != pid]
            if changed:
                with self._ids_lock:
                    for k in changed:
                        self._ids.pop(k, None)
                identities.bulk_create(
                    [IdentityRecord(key=k, profile_id=pid) for k in changed],
                    update_conflicts=True,
                    unique_fields=["key"],
                    update_fields=["profile_id"],
                )
                sets.update({identity_key(k): pid for k in changed})
        return sets, deletes

    def delete(self, profile_id: str) -> bool:
        using = self._db()
        with transaction.atomic(using=using):
            real = self._resolve_db(profile_id, using, self._dirty(using))
            if real is None:
                return False
            identities = IdentityRecord.objects.using(using).filter(profile_id=real)
            aliases = AliasRecord.objects.using(using).filter(
                Q(profile_id=real) | Q(old_id=profile_id)
            )
            keys = list(identities.values_list("key", flat=True))
            olds = list(aliases.values_list("old_id", flat=True))
            deleted, _ = ProfileRecord.objects.using(using).filter(id=real).delete()
            identities.delete()
            aliases.delete()
            self._forget_local(real)
            with self._ids_lock:
                self._indexed.pop(real, None)
            self._publish(
                using,
                deletes=[profile_key(real)]
                + [identity_key(k) for k in keys]
                + [alias_key(o) for o in olds]
                + [profile_key(o) for o in olds],
            )
        return deleted > 0


class DatabaseConsentLedger:
    """``ConsentLedger`` on the ``ConsentEntry`` table. Nothing here edits an entry."""

    @staticmethod
    def _row(entry: LedgerEntry) -> ConsentEntry:
        return ConsentEntry(
            profile_id=entry.profile_id,
            purpose=entry.purpose,
            state=ConsentState.parse(entry.state).value,
            at=to_datetime(entry.at),
            source=entry.source,
            policy_version=entry.policy_version,
        )

    def append(self, entry: LedgerEntry) -> None:
        self._row(entry).save(force_insert=True)

    def extend(self, entries: Iterable[LedgerEntry]) -> None:
        ConsentEntry.objects.bulk_create([self._row(e) for e in entries])

    def entries(self, profile_id: str) -> list[LedgerEntry]:
        return [
            LedgerEntry(
                profile_id=row.profile_id,
                purpose=row.purpose,
                state=ConsentState(row.state),
                at=from_datetime(row.at),
                source=row.source,
                policy_version=row.policy_version,
            )
            for row in ConsentEntry.objects.filter(profile_id=profile_id).order_by("at", "id")
        ]

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None:
        if old_profile_id != new_profile_id:
            ConsentEntry.objects.filter(profile_id=old_profile_id).update(profile_id=new_profile_id)

    def erase(self, profile_id: str) -> int:
        deleted, _ = ConsentEntry.objects.filter(profile_id=profile_id).delete()
        return deleted


class DatabaseOutbox:
    """``Outbox`` on the ``OutboxMessage`` table.

    ``enqueue`` is one ``INSERT … ON CONFLICT DO NOTHING`` (``INSERT OR IGNORE`` on SQLite),
    so enqueueing an item twice stores it once; the one-item form (what a request does for
    each sink) reuses the statement Django compiled the first time, per database alias and
    vendor, and passes the item's values straight to the cursor (no model instance, no
    query compilation per call).

    ``claim`` takes due, unleased pending items oldest first (the
    ``(status, next_attempt_at, created_at)`` index serves the filter and the order) and
    leases them (``locked_until``) in one statement that also returns their columns:

    * PostgreSQL: ``WITH due AS MATERIALIZED (SELECT id … ORDER BY … LIMIT n FOR UPDATE
      SKIP LOCKED) UPDATE … WHERE id = ANY(ARRAY(SELECT id FROM due)) RETURNING …``, so
      several workers never wait for or share an item (times come back as epoch seconds);
    * SQLite (3.35+): ``UPDATE … WHERE id IN (SELECT id … LIMIT n) RETURNING …``: a single
      write statement takes the database's write lock up front;
    * other databases with ``SKIP LOCKED`` (MySQL 8, Oracle): ``SELECT … FOR UPDATE SKIP
      LOCKED`` and an ``UPDATE`` in one transaction; without it, a select and a conditional
      update in one transaction.

    A worker that dies holds its items until the lease expires; then another claims them.
    ``complete`` is one ``UPDATE`` per 900 ids; ``retry_many``, ``defer_many`` and
    ``dead_many`` one per 300 items, each item keeping its own time and error (``CASE`` on
    the id; a plain value when they are all the same). The single-item ``retry`` and
    ``dead`` are the batch forms with one entry.
    Delivered items stay as ``done`` (so a replayed event is not sent twice) until
    :meth:`prune`.
    """

    _FIELDS = (
        "id",
        "sink",
        "message_id",
        "profile_id",
        "payload",
        "purposes",
        "created_at",
        "attempts",
        "next_attempt_at",
        "status",
        "last_error",
        "locked_until",
    )
    #: what ``claim`` reads back (the order ``_item_from_raw`` expects): all but the lease
    _READ = _FIELDS[:-1]
    #: the one-row INSERT per (database alias, vendor), compiled by Django on first use;
    #: the table's schema does not change while the process runs
    _insert_sql: ClassVar[dict[tuple[str, str], str]] = {}

    @staticmethod
    def _db() -> str:
        return router.db_for_write(OutboxMessage)

    @staticmethod
    def _row(item: OutboxItem) -> OutboxMessage:
        return OutboxMessage(
            id=item.id,
            sink=item.sink,
            message_id=item.message_id,
            profile_id=item.profile_id,
            payload=dict(item.payload),
            purposes=list(item.purposes),
            created_at=to_datetime(item.created_at),
            attempts=item.attempts,
            next_attempt_at=to_datetime(item.next_attempt_at),
            status=item.status,
            last_error=item.last_error[:MAX_ERROR_LENGTH],
            locked_until=None,
        )

    @staticmethod
    def _item(row: OutboxMessage) -> OutboxItem:
        return OutboxItem(
            id=row.id,
            sink=row.sink,
            message_id=row.message_id,
            profile_id=row.profile_id,
            payload=row.payload,
            purposes=tuple(row.purposes or ()),
            created_at=from_datetime(row.created_at),
            attempts=row.attempts,
            next_attempt_at=from_datetime(row.next_attempt_at),
            status=row.status,
            last_error=row.last_error,
        )

    # -- enqueue ---------------------------------------------------------------------------
    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Store the items not already present; return how many were new. Inside a profile
        save on PostgreSQL (the SDK enqueues an event's items there), the items join the
        profile's ``UPDATE`` as one statement instead, and the count is of distinct items
        offered (an id already stored is still skipped by the database)."""
        if not items:
            return 0
        joined = _JOINING.get()
        if joined is not None and joined.using == self._db() and joined.take(items):
            return len({item.id for item in items})
        if len(items) == 1:
            return self._enqueue_one(items[0])
        return self._enqueue_many(items)

    def _enqueue_many(self, items: Sequence[OutboxItem]) -> int:
        unique: dict[str, OutboxMessage] = {}
        for item in items:
            unique.setdefault(item.id, self._row(item))
        objs = list(unique.values())
        using = self._db()
        connection = connections[using]
        fields = [OutboxMessage._meta.get_field(name) for name in self._FIELDS]
        size = connection.ops.bulk_batch_size(fields, objs) or len(objs)
        batches = [objs[i : i + size] for i in range(0, len(objs), size)]
        added = 0
        # Django's bulk_create(ignore_conflicts=True) cannot say how many rows were new;
        # its insert query can, through the cursor's rowcount.
        with transaction.atomic(using=using) if len(batches) > 1 else nullcontext():
            for batch in batches:
                query = InsertQuery(OutboxMessage, on_conflict=OnConflict.IGNORE)
                query.insert_values(fields, batch)
                compiler = query.get_compiler(using=using)
                with connection.cursor() as cursor:
                    for sql, params in compiler.as_sql():
                        cursor.execute(sql, params)
                        added += max(cursor.rowcount, 0)
        return added

    def _enqueue_one(self, item: OutboxItem) -> int:
        using = self._db()
        connection = connections[using]
        key = (using, connection.vendor)
        sql = self._insert_sql.get(key)
        if sql is None:
            fields = [OutboxMessage._meta.get_field(name) for name in self._FIELDS]
            query = InsertQuery(OutboxMessage, on_conflict=OnConflict.IGNORE)
            query.insert_values(fields, [self._row(item)])
            [(sql, params)] = query.get_compiler(using=using).as_sql()
            if len(params) != len(self._FIELDS):  # not one placeholder per field: no shortcut
                return self._enqueue_many([item])
            self._insert_sql[key] = sql
        with connection.cursor() as cursor:
            cursor.execute(sql, self._insert_params(item, connection))
            return max(cursor.rowcount, 0)

    @staticmethod
    def _insert_params(item: OutboxItem, connection: BaseDatabaseWrapper) -> list[Any]:
        """The INSERT's parameters in ``_FIELDS`` order: what ``get_db_prep_save`` gives
        for each field. Text and integer values go as they are; JSON and datetimes through
        the backend's own adapters (a ``Jsonb`` wrapper on PostgreSQL, text on SQLite)."""
        ops = connection.ops
        return [
            item.id,
            item.sink,
            item.message_id,
            item.profile_id,
            ops.adapt_json_value(item.payload, None),
            ops.adapt_json_value(list(item.purposes), None),
            ops.adapt_datetimefield_value(to_datetime(item.created_at)),
            item.attempts,
            ops.adapt_datetimefield_value(to_datetime(item.next_attempt_at)),
            item.status,
            item.last_error[:MAX_ERROR_LENGTH],
            None,
        ]

    # -- claim -----------------------------------------------------------------------------
    def claim(self, *, limit: int, now: float, lease: float) -> list[OutboxItem]:
        if limit <= 0:
            return []
        using = self._db()
        connection = connections[using]
        now_dt, until = to_datetime(now), to_datetime(now + lease)
        if connection.vendor == "postgresql":
            # lock the rows we take, skip rows another worker is taking right now, lease
            # them and read them back: one statement, its own transaction in autocommit
            return self._claim_returning(limit, now_dt, until, using, skip_locked=True)
        if connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert:
            # SQLite 3.35+: one UPDATE … WHERE id IN (due items) RETURNING …. A single write
            # statement takes the database's write lock up front (a select followed by an
            # update would deadlock two workers into "database is locked").
            return self._claim_returning(limit, now_dt, until, using, skip_locked=False)
        unleased = Q(locked_until__isnull=True) | Q(locked_until__lte=now_dt)
        messages = OutboxMessage.objects.using(using)
        due = (
            messages.filter(status=OutboxMessage.PENDING, next_attempt_at__lte=now_dt)
            .filter(unleased)
            .order_by("next_attempt_at", "created_at")
        )
        if connection.features.has_select_for_update_skip_locked:
            # MySQL 8, Oracle: SELECT … FOR UPDATE SKIP LOCKED, then lease, in a transaction
            with transaction.atomic(using=using):
                rows = list(
                    due.select_for_update(skip_locked=True).values_list(*self._READ)[:limit]
                )
                if rows:
                    messages.filter(id__in=[r[0] for r in rows]).update(locked_until=until)
            return [self._item_from_values(r) for r in rows]
        with transaction.atomic(using=using):
            rows = list(due.values_list(*self._READ)[:limit])
            ids = [r[0] for r in rows]
            if ids:
                taken = (
                    messages.filter(id__in=ids, status=OutboxMessage.PENDING)
                    .filter(unleased)
                    .update(locked_until=until)
                )
                if taken != len(ids):  # someone claimed some in between: keep ours
                    mine = set(
                        messages.filter(id__in=ids, locked_until=until).values_list("id", flat=True)
                    )
                    rows = [r for r in rows if r[0] in mine]
        return [self._item_from_values(r) for r in rows]

    def _claim_returning(
        self, limit: int, now: datetime, until: datetime, using: str, *, skip_locked: bool
    ) -> list[OutboxItem]:
        connection = connections[using]
        quote = connection.ops.quote_name
        meta = OutboxMessage._meta
        table = quote(meta.db_table)
        pk, lock = quote(meta.pk.column), quote(meta.get_field("locked_until").column)
        status, due_at, created = (
            quote(meta.get_field(n).column) for n in ("status", "next_attempt_at", "created_at")
        )
        # the due items, oldest first: what the (status, next_attempt_at, created_at) index
        # serves (written out rather than compiled by the ORM on every pass)
        sub_sql = (
            f"SELECT {pk} FROM {table} WHERE {status} = %s AND {due_at} <= %s "
            f"AND ({lock} IS NULL OR {lock} <= %s) "
            f"ORDER BY {due_at} ASC, {created} ASC LIMIT {int(limit)}"
        )
        adapt = connection.ops.adapt_datetimefield_value
        sub_params = [OutboxMessage.PENDING, adapt(now), adapt(now)]
        columns = [f"{table}.{quote(meta.get_field(n).column)}" for n in self._READ]
        if skip_locked:  # PostgreSQL: read the times as POSIX seconds, not datetimes
            for name in ("created_at", "next_attempt_at"):
                i = self._READ.index(name)
                columns[i] = f"EXTRACT(EPOCH FROM {columns[i]})::float8"
        returning = ", ".join(columns)
        if skip_locked:
            # ARRAY(…) is evaluated once, and the UPDATE finds the rows through the primary
            # key whatever the size of the table (done rows stay until prune)
            sql = (
                f"WITH due AS MATERIALIZED ({sub_sql} FOR UPDATE SKIP LOCKED) "
                f"UPDATE {table} SET {lock} = %s "
                f"WHERE {table}.{pk} = ANY(ARRAY(SELECT {pk} FROM due)) RETURNING {returning}"
            )
            params = [*sub_params, adapt(until)]
        else:
            sql = f"UPDATE {table} SET {lock} = %s WHERE {pk} IN ({sub_sql}) RETURNING {returning}"
            params = [adapt(until), *sub_params]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return []
        tz = connection.timezone
        items = [self._item_from_raw(row, tz) for row in rows]
        items.sort(key=_due_order)  # RETURNING has no order: oldest first, as selected
        return items

    @staticmethod
    def _item_from_raw(row: Sequence[Any], tz: tzinfo) -> OutboxItem:
        """An item from a raw cursor row in ``_READ`` order: JSON columns as text (Django's
        PostgreSQL backend does not parse ``jsonb``; SQLite stores text), times as POSIX
        seconds (PostgreSQL, ``EXTRACT(EPOCH …)``) or as text in the connection's time zone
        (SQLite)."""
        payload = row[4]
        return OutboxItem(
            id=row[0],
            sink=row[1],
            message_id=row[2],
            profile_id=row[3],
            payload=_json(payload),
            purposes=_purposes(row[5]),
            created_at=_timestamp(row[6], tz),
            attempts=row[7],
            next_attempt_at=_timestamp(row[8], tz),
            status=row[9],
            last_error=row[10],
        )

    @staticmethod
    def _item_from_values(row: Sequence[Any]) -> OutboxItem:
        """An item from a ``values_list(*_READ)`` row (Django converted the values)."""
        return OutboxItem(
            id=row[0],
            sink=row[1],
            message_id=row[2],
            profile_id=row[3],
            payload=row[4],
            purposes=tuple(row[5] or ()),
            created_at=from_datetime(row[6]),
            attempts=row[7],
            next_attempt_at=from_datetime(row[8]),
            status=row[9],
            last_error=row[10],
        )

    # -- outcomes --------------------------------------------------------------------------
    def complete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        using = self._db()
        connection = connections[using]
        if connection.vendor == "postgresql":
            # the ids as one array parameter: no per-call query compilation, and no 500
            # quoted literals to build and parse (~2.5 ms of a 500-item pass)
            quote = connection.ops.quote_name
            meta = OutboxMessage._meta
            column = {n: quote(meta.get_field(n).column) for n in ("status", "attempts")}
            sql = (
                f"UPDATE {quote(meta.db_table)} SET {column['status']} = %s, "
                f"{column['attempts']} = {column['attempts']} + 1, "
                f"{quote(meta.get_field('locked_until').column)} = NULL "
                f"WHERE {quote(meta.pk.column)} = ANY(%s)"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [OutboxMessage.DONE, ids])
            return
        messages = OutboxMessage.objects.using(using)
        for start in range(0, len(ids), _IN_CHUNK):
            messages.filter(id__in=ids[start : start + _IN_CHUNK]).update(
                status=OutboxMessage.DONE, attempts=F("attempts") + 1, locked_until=None
            )

    def retry(self, item_id: str, *, at: float, error: str) -> None:
        self.retry_many([(item_id, at, error)])

    def dead(self, item_id: str, *, error: str) -> None:
        self.dead_many([(item_id, error)])

    def retry_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        """One attempt more for each item, each with its own next attempt time and error."""
        self._update_each(
            {i: (to_datetime(at), error) for i, at, error in entries},
            attempts=F("attempts") + 1,
        )

    def defer_many(self, entries: Sequence[tuple[str, float, str]]) -> None:
        """Reschedule items the sink did not send: no attempt counted."""
        self._update_each({i: (to_datetime(at), error) for i, at, error in entries})

    def dead_many(self, entries: Sequence[tuple[str, str]]) -> None:
        self._update_each(
            {i: (None, error) for i, error in entries},
            status=OutboxMessage.DEAD,
            attempts=F("attempts") + 1,
        )

    def _update_each(
        self, values: Mapping[str, tuple[datetime | None, str]], **common: Any
    ) -> None:
        """``UPDATE … SET next_attempt_at = CASE id WHEN … END, last_error = CASE …`` (a
        plain value when every item has the same one), leases released, per chunk of ids.
        ``values`` maps ids to (next attempt time, or None to leave it as it is; error)."""
        if not values:
            return
        messages = OutboxMessage.objects.using(self._db())
        ids = list(values)
        for start in range(0, len(ids), _IN_CHUNK // 3):
            chunk = ids[start : start + _IN_CHUNK // 3]
            updates: dict[str, Any] = {"locked_until": None, **common}
            ats = {i: values[i][0] for i in chunk if values[i][0] is not None}
            if ats:
                updates["next_attempt_at"] = _per_id("next_attempt_at", ats, DateTimeField())
            errors = {i: values[i][1][:MAX_ERROR_LENGTH] for i in chunk}
            updates["last_error"] = _per_id("last_error", errors, TextField())
            messages.filter(id__in=chunk).update(**updates)

    # -- everything else -------------------------------------------------------------------
    def dead_letters(self, *, limit: int = 100) -> list[OutboxItem]:
        rows = OutboxMessage.objects.filter(status=OutboxMessage.DEAD).order_by("created_at", "id")
        return [self._item(r) for r in rows[:limit]]

    def replay(self, ids: Iterable[str], *, now: float) -> int:
        ids = list(ids)
        if not ids:
            return 0
        moved: int = OutboxMessage.objects.filter(id__in=ids, status=OutboxMessage.DEAD).update(
            status=OutboxMessage.PENDING,
            attempts=0,
            next_attempt_at=to_datetime(now),
            locked_until=None,
        )
        return moved

    def purge_profile(self, profile_id: str) -> int:
        # Delivered (done) items go too: their payload is the person's data as well.
        deleted, _ = OutboxMessage.objects.filter(profile_id=profile_id).delete()
        return deleted

    def reassign(self, old_profile_id: str, new_profile_id: str) -> None:
        if old_profile_id != new_profile_id:
            OutboxMessage.objects.filter(profile_id=old_profile_id).update(
                profile_id=new_profile_id
            )

    def pending_count(self) -> int:
        count: int = OutboxMessage.objects.filter(status=OutboxMessage.PENDING).count()
        return count

    def prune(self, *, done_before: float) -> int:
        """Delete delivered items created before ``done_before`` (POSIX seconds). After
        that, an event replayed with the same message id would be delivered again."""
        deleted, _ = OutboxMessage.objects.filter(
            status=OutboxMessage.DONE, created_at__lt=to_datetime(done_before)
        ).delete()
        return deleted


def _due_order(item: OutboxItem) -> tuple[float, float]:
    return (item.next_attempt_at, item.created_at)


#: parsed ``purposes`` columns (a handful of distinct values: one per sink configuration)
_PURPOSES: dict[Any, tuple[str, ...]] = {}


def _json(value: Any) -> Any:
    """A JSON column read without Django's converters (text, or already parsed)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _purposes(value: Any) -> tuple[str, ...]:
    """The ``purposes`` JSON column (text, or already parsed) as a tuple, memoized."""
    try:
        return _PURPOSES[value]
    except (KeyError, TypeError):  # TypeError: an already parsed (unhashable) list
        pass
    out = tuple(_json(value) or ())
    if isinstance(value, (str, bytes)):
        if len(_PURPOSES) > 256:
            _PURPOSES.clear()
        _PURPOSES[value] = out
    return out


def _timestamp(value: Any, tz: tzinfo) -> float:
    """POSIX seconds from a time column read without Django's converters: seconds already
    (``EXTRACT(EPOCH …)``), a datetime, or SQLite's text."""
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = timezone.make_aware(value, tz)
    stamp: float = value.timestamp()
    return stamp


def _per_id(column: str, values: Mapping[str, Any], field: Field[Any, Any]) -> Any:
    """The value to set ``column`` to for each id: one value when they are all the same,
    else ``CASE WHEN id = … THEN … END`` (a row matching no id keeps its value)."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return Value(distinct.pop(), output_field=field)
    whens = [When(id=i, then=Value(v, output_field=field)) for i, v in values.items()]
    return Case(*whens, default=F(column), output_field=field)


def _retryable(exc: BaseException) -> bool:
    """A deadlock (40P01) or serialization failure (40001): the transaction lost a race."""
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return code in ("40001", "40P01")


# --------------------------------------------------------------------------------------------
# A profile save and its outbox rows in one statement (PostgreSQL)
# --------------------------------------------------------------------------------------------

#: items at most that join one profile save (one row per sink an event is queued for)
_JOIN_LIMIT = 100


class _Joined:
    """Outbox items enqueued inside a profile save, to be written by the save's statement."""

    __slots__ = ("items", "using")

    def __init__(self, using: str) -> None:
        self.using = using
        self.items: dict[str, OutboxItem] = {}

    def take(self, items: Sequence[OutboxItem]) -> bool:
        if len(self.items) + len(items) > _JOIN_LIMIT:
            return False  # too many for one statement: the outbox writes them itself
        for item in items:
            self.items.setdefault(item.id, item)
        return True


#: the profile save in progress in this context that outbox items may join (or None)
_JOINING: ContextVar[_Joined | None] = ContextVar("persona_joining_save", default=None)


def _joins(using: str) -> bool:
    """Whether outbox rows join profile saves on ``using``: PostgreSQL, when the profile and
    outbox tables live on the same database (they are written in one statement)."""
    return (
        connections[using].vendor == "postgresql"
        and router.db_for_write(OutboxMessage) == using
    )


#: the statements of ``_update_profile`` per (database alias, vendor, joined items)
_UPDATE_SQL: dict[tuple[str, str, int], str] = {}


def _update_sql(connection: BaseDatabaseWrapper, using: str, items: int) -> str:
    key = (using, connection.vendor, items)
    sql = _UPDATE_SQL.get(key)
    if sql is not None:
        return sql
    qn = connection.ops.quote_name
    meta = ProfileRecord._meta
    revision = qn(meta.get_field("revision").column)
    sql = (
        f"UPDATE {qn(meta.db_table)} SET "
        f"{qn(meta.get_field('data').column)} = %s, {revision} = {revision} + 1, "
        f"{qn(meta.get_field('updated_at').column)} = %s "
        f"WHERE {qn(meta.pk.column)} = %s AND {revision} = %s"
    )
    if items:
        fields = DatabaseOutbox._FIELDS[:-1]  # all but the lease (NULL)
        names = ", ".join(qn(OutboxMessage._meta.get_field(name).column) for name in fields)
        # one INSERT … SELECT … FROM p per item: a row only if the UPDATE matched (measured
        # ~300 µs cheaper on PostgreSQL 15 than one INSERT from a VALUES list with casts)
        insert = (
            f"INSERT INTO {qn(OutboxMessage._meta.db_table)} ({names}) "
            f"SELECT {', '.join(['%s'] * len(fields))} FROM p ON CONFLICT DO NOTHING"
        )
        inserts = "".join(f", o{n} AS ({insert})" for n in range(items))
        sql = f"WITH p AS ({sql} RETURNING 1){inserts} SELECT count(*) FROM p"
    _UPDATE_SQL[key] = sql
    return sql


def _update_profile(
    using: str,
    profile_id: str,
    based_on: int,
    doc: dict[str, Any],
    now: datetime,
    joined: _Joined | None,
) -> int:
    """The profile's revision-checked ``UPDATE`` (written out once, not compiled by the ORM
    on every save); with joined outbox items, the ``UPDATE`` and their ``INSERT`` as one
    statement (a data-modifying ``WITH``, PostgreSQL) that inserts them only if the update
    matched, so a failed revision check writes neither. Returns the rows updated (0 or 1)."""
    connection = connections[using]
    ops = connection.ops
    items = () if joined is None else tuple(joined.items.values())
    params: list[Any] = [
        ops.adapt_json_value(doc, None),
        ops.adapt_datetimefield_value(now),
        profile_id,
        based_on,
    ]
    for item in items:
        params.extend(DatabaseOutbox._insert_params(item, connection)[:-1])
    sql = _update_sql(connection, using, len(items))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if not items:
            return int(cursor.rowcount)
        (updated,) = cursor.fetchone()
    return int(updated)


class _ThenFailed(Exception):
    """Carries an ``IntegrityError`` raised by a save's ``then`` out of its transaction, so
    it is not mistaken for a concurrent creation of the profile."""

    def __init__(self, error: IntegrityError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stale(Exception):
    """The revision check failed (raised inside the save's transaction to roll it back)."""
