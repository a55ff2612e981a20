"""Mailchimp: segment membership → audience members and tags, consent → member status,
erasure. Marketing API v3, Basic auth (any user name, the API key as password); api-contracts
§6 unless marked.

``PUT /lists/{list_id}/members/{subscriber_hash}`` (hash = MD5 of the lower-cased email)
    upsert, naturally idempotent: ``email_address``, ``status_if_new`` (``subscribed`` when
    ``marketing`` consent was granted, else ``transactional``), ``status: unsubscribed`` when
    it was denied, ``merge_fields`` from the configured traits.
``POST /lists/{list_id}/members/{hash}/tags`` → 204
    ``{"tags": [{"name": "VIP", "status": "active" | "inactive"}], "is_syncing": false}``:
    a mapped segment entered / left (leaving only: a 404 means the member is not there,
    nothing to do).
``PATCH /lists/{list_id}/members/{hash}`` ``{"status": "unsubscribed" | "subscribed"}``
    a marketing consent change for someone not entering a segment (404: not in the audience,
    nothing to do). *PATCH is the SDK's ``update_list_member``; not in the contracts file.*
``POST /lists/{list_id}/members/{hash}/actions/delete-permanent`` → 204
    erasure (404: not there). The address can never be re-imported afterwards (400
    "Forgotten Email Not Subscribed").

Limits: Mailchimp allows 10 simultaneous connections per API key and answers 429 beyond.
Every request of this process for one key holds a slot of a shared
``threading.BoundedSemaphore(max_connections)`` (≤ 10), and a batch is delivered by at most
that many threads. Processes do not share it: with several ``persona_deliver`` workers,
lower ``max_connections`` so their sum stays ≤ 10. A 429 is retried (after ``Retry-After``
if Mailchimp sent one); 5xx and network errors with the outbox's backoff; other 4xx fail the
item with Mailchimp's problem ``title: detail``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persona_sdk import Persona

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from persona_sdk.events import Event
from persona_sdk.outbox import DeliveryResult, OutboxItem

from . import audience
from ._http import Client, Rejected, Response, Throttled, Unavailable
from .config import MailchimpConfig

__all__ = ["MailchimpSink", "subscriber_hash"]

log = logging.getLogger("persona_email")

_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 hex digest of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def connection_slots(api_key: str, size: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for one API key (shared by every sink using it)."""
    with _semaphores_lock:
        semaphore = _semaphores.get((api_key, size))
        if semaphore is None:
            semaphore = _semaphores[(api_key, size)] = threading.BoundedSemaphore(size)
        return semaphore


class _Result:
    """What happened to one item (collected in worker threads, merged afterwards)."""

    __slots__ = ("delay", "failed", "kind")

    def __init__(self, kind: str = "ok", failed: str = "", delay: float = 0.0) -> None:
        self.kind = kind
        self.failed = failed
        self.delay = delay


class MailchimpSink:
    """The ``email.mailchimp`` sink (one audience). ``accepts`` is False: its items come
    from the email adapter's hooks and the reconcile command."""

    name = "email.mailchimp"
    vendor = "mailchimp"
    persona_email_sink = True

    def __init__(self, config: MailchimpConfig, persona: Persona | None = None) -> None:
        # the SDK instance this sink was registered on (weakly: it owns the sink)
        self._persona = weakref.ref(persona) if persona is not None else None
        self.config = config
        self.purposes = config.purposes
        self.max_batch = config.max_batch
        self.slots = connection_slots(config.api_key, config.max_connections)
        self.client = Client(
            "Mailchimp",
            config.base_url,
            headers={"Accept": "application/json"},
            auth=("persona", config.api_key),
            timeout=config.timeout,
        )

    def __repr__(self) -> str:
        return f"<MailchimpSink list={self.config.list_id} tags={sorted(self.config.tags)}>"

    def accepts(self, event: Event) -> bool:
        return False

    def _call(self, method: str, path: str, **kwargs: Any) -> Response:
        with self.slots:
            return self.client.call(method, path, **kwargs)

    def _member_path(self, email: str) -> str:
        return f"/lists/{self.config.list_id}/members/{subscriber_hash(email)}"

    # -- delivery --------------------------------------------------------------------------
    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        persona = self._persona() if self._persona is not None else audience.bound_persona()
        outcome = audience.Outcome(items)
        groups: dict[str, list[tuple[OutboxItem, audience.SyncState]]] = {}
        for item in sorted(items, key=lambda i: i.created_at):
            if item.payload.get("kind") != audience.KIND:
                outcome.fail([item.id], "not an email-adapter audience item")
                continue
            state = audience.current_state(item, persona)
            if state.email is None:
                continue  # nothing Mailchimp could match on: done
            groups.setdefault(state.email, []).append((item, state))
        if groups:
            # one member's items in order, in one thread; members in parallel
            workers = min(self.config.max_connections, len(groups))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailchimp") as pool:
                results = list(pool.map(self._sync_member, groups.values()))
            for group_results in results:
                for item_id, result in group_results:
                    if result.kind == "failed":
                        outcome.fail([item_id], result.failed)
                    elif result.kind == "retry":
                        outcome.retry([item_id], result.delay)
                    elif result.kind == "backoff":
                        outcome.backoff([item_id])
        return outcome.result()

    def _sync_member(
        self, group: list[tuple[OutboxItem, audience.SyncState]]
    ) -> list[tuple[str, _Result]]:
        out: list[tuple[str, _Result]] = []
        stopped: _Result | None = None
        for item, state in group:
            if stopped is not None:  # an earlier item of this member was throttled/failed
                out.append((item.id, stopped))
                continue
            try:
                self._apply(state)
                out.append((item.id, _Result()))
            except Throttled as exc:
                stopped = _Result("retry", delay=exc.delay)
                out.append((item.id, stopped))
            except Unavailable as exc:
                log.warning("persona_email: %s", exc.message)
                stopped = _Result("backoff")
                out.append((item.id, stopped))
            except Rejected as exc:
                out.append((item.id, _Result("failed", exc.message)))
            except Exception as exc:  # a bug must not lose the other members' results
                log.exception("persona_email: Mailchimp sync of one member failed")
                stopped = _Result("backoff", failed=str(exc))
                out.append((item.id, stopped))
        return out

    def _apply(self, state: audience.SyncState) -> None:
        email = state.email
        assert email is not None
        path = self._member_path(email)
        tags = [
            {"name": self.config.tags[s], "status": "active" if member else "inactive"}
            for s, member in sorted(state.segments.items())
            if s in self.config.tags
        ]
        entering = any(t["status"] == "active" for t in tags)
        if state.op == "consent" and not entering:
            status = "subscribed" if state.consent == "granted" else "unsubscribed"
            self._absent_ok("PATCH", path, json_body={"status": status})
            return
        if entering:
            body: dict[str, Any] = {
                "email_address": email,
                "status_if_new": "subscribed" if state.consent == "granted" else "transactional",
            }
            if state.consent == "denied":
                body["status"] = "unsubscribed"
            elif state.op == "consent":
                body["status"] = "subscribed"  # a fresh grant: the ledger entry is the proof
            merge = self._merge_fields(state)
            if merge:
                body["merge_fields"] = merge
            self._call("PUT", path, json_body=body)
            self._call("POST", f"{path}/tags", json_body={"tags": tags, "is_syncing": False})
        elif tags:
            # leaving only: a member Mailchimp does not have has no tag to remove
            self._absent_ok("POST", f"{path}/tags", json_body={"tags": tags, "is_syncing": False})

    def _absent_ok(self, method: str, path: str, **kwargs: Any) -> None:
        try:
            self._call(method, path, **kwargs)
        except Rejected as exc:
            if exc.status != 404:
                raise

    def _merge_fields(self, state: audience.SyncState) -> dict[str, str]:
        out = {}
        for tag, trait in self.config.merge_fields.items():
            value = state.traits.get(trait)
            if value is not None:
                out[tag] = str(value)
        return out

    # -- erasure ---------------------------------------------------------------------------
    def erase(self, email: str, *, budget: float = 10.0) -> str:
        """Permanently delete the member; returns ``deleted``, ``not found`` or
        ``failed: <why>``."""
        deadline = time.monotonic() + budget
        path = f"{self._member_path(email)}/actions/delete-permanent"
        while True:
            try:
                self._call("POST", path)
                return "deleted"
            except Throttled as exc:
                wait = max(exc.delay, 0.5)
                if time.monotonic() + wait > deadline:
                    return f"failed: {exc.message}"
                time.sleep(wait)
            except Rejected as exc:
                if exc.status == 404:
                    return "not found"
                return f"failed: {exc.message}"
            except Unavailable as exc:
                return f"failed: {exc.message}"
