"""Read-through profile sources: traits from another system, within a time budget.

A CDP's profile API can enrich a profile with traits and audiences it computed, but a page
must never wait on it. :func:`fetch_traits` calls every source in parallel on a shared thread
pool and waits at most the smallest source budget; what arrives in time is merged as traits
with ``source=<source name>``, the rest is ignored for this request (sources cache and
refresh on their own, so the next request sees it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from .profile import Profile

__all__ = ["ProfileSource", "fetch_traits"]

log = logging.getLogger("persona_sdk.sources")


class ProfileSource(Protocol):
    """A source of traits. ``budget`` is in seconds; ``fetch`` may block (it runs in a pool)."""

    name: str
    budget: float

    def fetch(self, profile: Profile) -> Mapping[str, Any] | None: ...


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="persona-source")
        return _pool


def fetch_traits(
    profile: Profile, sources: Sequence[ProfileSource], *, now: float
) -> dict[str, list[str]]:
    """Merge traits from ``sources`` into ``profile`` within their budget.

    Returns ``{"ok": [...], "late": [...], "failed": [...]}`` naming the sources, so a caller
    can log or explain what the decision knew.
    """
    report: dict[str, list[str]] = {"ok": [], "late": [], "failed": []}
    if not sources:
        return report
    budget = min(s.budget for s in sources)
    futures: dict[Future[Mapping[str, Any] | None], ProfileSource] = {
        _executor().submit(s.fetch, profile): s for s in sources
    }
    done, _ = wait(futures, timeout=budget)
    for future, source in futures.items():
        if future not in done:
            report["late"].append(source.name)
            continue
        try:
            traits = future.result()
        except Exception:
            log.warning("profile source %r failed", source.name, exc_info=True)
            report["failed"].append(source.name)
            continue
        if traits:
            for key, value in traits.items():
                profile.set_trait(str(key), value, source=source.name, at=now)
        report["ok"].append(source.name)
    return report
