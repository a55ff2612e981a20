"""Segment Profile API read-through: traits and audiences as profile traits (source ``segment``).

:class:`SegmentProfileSource` is a :class:`~persona_sdk.sources.ProfileSource`. For a profile
with a user id (else its first anonymous id) it asks

    GET {host}/v1/spaces/{space}/collections/users/profiles/user_id:{id}/traits?limit=200

and the same with ``&class=audience``, with Basic auth (the access token as user name, empty
password), and returns the traits plus ``segment_audiences`` (the names of the audiences the
person is in, sorted). A page never waits longer than ``budget``:

* a **fresh** cached answer is returned at once;
* a **stale** one (older than ``refresh_after``) is returned at once and refreshed on the
  source's own small thread pool;
* on a **miss** the fetch starts on that pool and the page waits at most ``budget`` for it;
  if it is late, the page goes on without it and the answer lands in the cache for the next
  request. Concurrent misses for one person share one fetch.

A 404 ("Profile was not found.") is cached as "no traits" for ``not_found_ttl``. Failures
(timeouts, 5xx, 401, 429...) are logged and never raised; the key is not asked again for
``failure_backoff`` seconds (a 429's ``Retry-After`` pauses the whole space), and whatever was
cached before is still used until its TTL ends. Only the first page of traits is read
(``limit`` ≤ 200, the API's maximum).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import quote

import attrs
import requests
from cachetools import TTLCache
from requests.adapters import HTTPAdapter

from persona_sdk.identity import IdentityKind
from persona_sdk.profile import Profile

from .config import ProfileApiConfig
from .segment import USER_AGENT, parse_retry_delay, vendor_message

__all__ = ["SegmentProfileSource"]

log = logging.getLogger("persona_cdp")

AUDIENCES_TRAIT = "segment_audiences"


@attrs.frozen
class _Entry:
    traits: Mapping[str, Any]
    stale_at: float
    expires_at: float


class SegmentProfileSource:
    """Traits and audiences from the Segment Profile API, cached, within a time budget."""

    name = "segment"

    def __init__(
        self,
        config: ProfileApiConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.budget = config.budget
        self.clock = clock
        self._base = (
            f"{config.host}/v1/spaces/{quote(config.space_id, safe='')}/collections/users/profiles"
        )
        self._auth = (config.token, "")
        self._cache: TTLCache[str, _Entry] = TTLCache(
            maxsize=config.max_entries, ttl=config.ttl, timer=clock
        )
        self._backoff: TTLCache[str, float] = TTLCache(
            maxsize=config.max_entries, ttl=max(config.failure_backoff, 0.001), timer=clock
        )
        self._inflight: dict[str, Future[Mapping[str, Any] | None]] = {}
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._session = session
        self._pool: ThreadPoolExecutor | None = None
        #: the most fetches queued or running at once; beyond it a miss is not fetched
        self.max_inflight = config.workers * 8
        self.stats = {
            "hits": 0, "stale": 0, "misses": 0, "late": 0, "fetches": 0,
            "not_found": 0, "failures": 0, "shed": 0,
        }

    def __repr__(self) -> str:
        return f"<SegmentProfileSource space={self.config.space_id} budget={self.budget:g}s>"

    # -- ProfileSource -----------------------------------------------------------------------
    def fetch(self, profile: Profile) -> Mapping[str, Any] | None:
        key = self.key_for(profile)
        if key is None:
            return None
        now = self.clock()
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None and now < entry.expires_at:
            if now >= entry.stale_at:
                self.stats["stale"] += 1
                self._start(key)
            else:
                self.stats["hits"] += 1
            return entry.traits
        self.stats["misses"] += 1
        future = self._start(key)
        if future is None:
            return None
        try:
            return future.result(timeout=self.budget)
        except FutureTimeout:
            self.stats["late"] += 1
            return None
        except Exception:  # _load never raises; belt and braces
            log.warning("persona_cdp: profile fetch for %s failed", key, exc_info=True)
            return None

    # -- keys and cache ----------------------------------------------------------------------
    @staticmethod
    def key_for(profile: Profile) -> str | None:
        """``user_id:<id>`` when the profile has a user id, else ``anonymous_id:<first>``."""
        user_id = profile.user_id
        if user_id is not None:
            return f"user_id:{user_id}"
        anonymous = sorted(i.value for i in profile.identities if i.kind is IdentityKind.ANONYMOUS)
        return f"anonymous_id:{anonymous[0]}" if anonymous else None

    def cached(self, key: str) -> Mapping[str, Any] | None:
        with self._lock:
            entry = self._cache.get(key)
        return None if entry is None or self.clock() >= entry.expires_at else entry.traits

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._backoff.clear()
            self._hold_until = 0.0

    def forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._backoff.pop(key, None)

    # -- fetching ----------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.config.workers, thread_name_prefix="persona-cdp-profile"
            )
        return self._pool

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            adapter = HTTPAdapter(
                pool_connections=1, pool_maxsize=self.config.workers, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            self._session = session
        return self._session

    def _start(self, key: str) -> Future[Mapping[str, Any] | None] | None:
        """The fetch of ``key`` in flight (started now if needed); None when backing off
        or too busy."""
        with self._lock:
            running = self._inflight.get(key)
            if running is not None:
                return running
            if self.clock() < self._hold_until or key in self._backoff:
                return None
            if len(self._inflight) >= self.max_inflight:
                self.stats["shed"] += 1
                return None
            if self._session is None:
                self.session  # noqa: B018  (create it under the lock, once)
            future = self._executor().submit(self._load, key)
            self._inflight[key] = future
        future.add_done_callback(functools.partial(self._done, key))
        return future

    def _done(self, key: str, _future: object = None) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def _get(self, key: str, params: dict[str, Any]) -> requests.Response:
        kind, _, value = key.partition(":")
        url = f"{self._base}/{kind}:{quote(value, safe='')}/traits"
        return self.session.get(
            url, params=params, auth=self._auth, timeout=self.config.timeout,
            headers={"Accept": "application/json"},
        )

    def _load(self, key: str) -> Mapping[str, Any] | None:
        """One fetch (on the pool). Caches and returns the traits; never raises."""
        self.stats["fetches"] += 1
        limit = self.config.limit
        try:
            response = self._get(key, {"limit": limit})
            if response.status_code == 404:
                return self._not_found(key)
            if response.status_code != 200:
                return self._failed(key, vendor_message("Segment Profile API", response), response)
            traits = dict(_traits_of(response))
            if self.config.audiences:
                response = self._get(key, {"limit": limit, "class": "audience"})
                if response.status_code == 200:
                    audiences = _traits_of(response)
                    traits.update(audiences)
                    traits[AUDIENCES_TRAIT] = sorted(
                        name for name, value in audiences.items() if value is True
                    )
                elif response.status_code != 404:
                    return self._failed(
                        key, vendor_message("Segment Profile API", response), response
                    )
        except requests.RequestException as exc:
            return self._failed(key, f"{type(exc).__name__}: {exc}", None)
        except ValueError as exc:  # a 200 whose body is not the documented JSON
            return self._failed(key, f"unreadable answer: {exc}", None)
        except Exception as exc:  # pragma: no cover - never let a fetch raise
            return self._failed(key, f"{type(exc).__name__}: {exc}", None)
        now = self.clock()
        entry = _Entry(traits, now + self.config.refresh_after, now + self.config.ttl)
        with self._lock:
            self._cache[key] = entry
        return traits

    def _not_found(self, key: str) -> Mapping[str, Any]:
        self.stats["not_found"] += 1
        now = self.clock()
        empty: Mapping[str, Any] = {}
        ttl = self.config.not_found_ttl
        with self._lock:
            self._cache[key] = _Entry(empty, now + ttl, now + ttl)
        return empty

    def _failed(
        self, key: str, why: str, response: requests.Response | None
    ) -> Mapping[str, Any] | None:
        """Record a failed fetch (logged, backed off); the fetch's answer is None."""
        self.stats["failures"] += 1
        backoff = self.config.failure_backoff
        with self._lock:
            if response is not None and response.status_code == 429:
                delay = parse_retry_delay(response.headers) or backoff
                self._hold_until = max(self._hold_until, self.clock() + delay)
            if backoff > 0:
                self._backoff[key] = self.clock() + backoff
        log.warning("persona_cdp: Segment Profile API: %s: %s", key, why)
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._session is not None:
            self._session.close()
            self._session = None


def _traits_of(response: requests.Response) -> Mapping[str, Any]:
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("traits"), dict):
        raise ValueError("no 'traits' object in the answer")
    traits: dict[str, Any] = data["traits"]
    return traits
