"""Klaviyo: segment membership → list membership, consent → subscriptions, erasure.

Endpoints (revision ``2026-07-15``, JSON:API, ``Authorization: Klaviyo-API-Key <key>``,
``revision`` header; api-contracts.md §5 unless marked):

``POST /api/profile-subscription-bulk-create-jobs`` → 202
    a person with ``marketing`` consent *granted* entering a mapped segment: subscribed to
    the segment's list with ``consent: SUBSCRIBED`` (≤ 1,000 profiles per job; one job per
    list per delivery batch).
``POST /api/profile-import`` → 200/201, then ``POST /api/lists/{id}/relationships/profiles``
    → 204: anyone else entering: the profile is upserted (email, ``external_id`` = the
    persona profile id) and added to the list without touching their consent.
``GET /api/profiles?filter=equals(email,"…")``, then
``DELETE /api/lists/{id}/relationships/profiles`` → 204
    leaving a mapped segment (*DELETE shape from the klaviyo-api SDK's ``ListMembersDeleteQuery``,
    not in the contracts file*).
``POST /api/profile-subscription-bulk-delete-jobs`` → 202
    ``marketing`` denied (an unsubscribe, an ESP complaint): email marketing unsubscribed
    (*shape from the SDK's ``SubscriptionDeleteJobCreateQuery``; unconfirmed*).
``POST /api/data-privacy-deletion-jobs`` → 202
    erasure: ``{"data": {"type": "data-privacy-deletion-job", "attributes": {"profile":
    {"data": {"type": "profile", "attributes": {"email": …}}}}}}`` (*shape from the SDK's
    ``DataPrivacyCreateDeletionJobQuery``; not in the contracts file*).

Rate limits: a 429 stops the batch; every item not yet done is retried no earlier than the
``Retry-After`` it carried (DeliveryResult.retry). 5xx and network errors retry with the
outbox's backoff; other 4xx fail the items they concern with Klaviyo's message (a 400 on one
profile of a bulk job, located by ``source.pointer``, fails only that item).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persona_sdk import Persona

import logging
import re
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from persona_sdk.events import Event
from persona_sdk.outbox import DeliveryResult, OutboxItem

from . import audience
from ._http import Client, Rejected, Throttled, Unavailable
from .config import KlaviyoConfig

__all__ = ["KlaviyoSink"]

log = logging.getLogger("persona_email")

JSONAPI = "application/vnd.api+json"
MAX_PROFILES = 1000
_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(/|$)")


class _Stop(Exception):
    """Klaviyo said 429: no more calls in this batch."""

    def __init__(self, delay: float) -> None:
        self.delay = delay


class KlaviyoSink:
    """The ``email.klaviyo`` sink. Never forwards raw events (``accepts`` is False): its
    items are queued by the email adapter's hooks and the reconcile command."""

    name = "email.klaviyo"
    vendor = "klaviyo"
    persona_email_sink = True

    def __init__(self, config: KlaviyoConfig, persona: Persona | None = None) -> None:
        # the SDK instance this sink was registered on (weakly: it owns the sink)
        self._persona = weakref.ref(persona) if persona is not None else None
        self.config = config
        self.purposes = config.purposes
        self.max_batch = config.max_batch
        self.client = Client(
            "Klaviyo",
            config.base_url,
            headers={
                "Authorization": f"Klaviyo-API-Key {config.api_key}",
                "revision": config.revision,
                "Accept": JSONAPI,
            },
            timeout=config.timeout,
            content_type=JSONAPI,
        )

    def __repr__(self) -> str:
        return f"<KlaviyoSink lists={sorted(self.config.lists)}>"

    def accepts(self, event: Event) -> bool:
        return False

    # -- delivery --------------------------------------------------------------------------
    def deliver(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        persona = self._persona() if self._persona is not None else audience.bound_persona()
        outcome = audience.Outcome(items)
        subscribe: dict[str, dict[str, list[str]]] = defaultdict(dict)
        add: dict[str, dict[str, list[str]]] = defaultdict(dict)
        remove: dict[str, dict[str, list[str]]] = defaultdict(dict)
        unsubscribe: dict[str, list[str]] = {}
        external: dict[str, str] = {}
        for item in items:
            if item.payload.get("kind") != audience.KIND:
                outcome.fail([item.id], "not an email-adapter audience item")
                continue
            state = audience.current_state(item, persona)
            if state.email is None:
                continue  # nothing Klaviyo could match on: done
            email = state.email
            external.setdefault(email, state.external_id)
            if state.op == "consent" and state.consent == "denied":
                unsubscribe.setdefault(email, []).append(item.id)
                outcome.plan(item.id)
                continue
            for segment, member in state.segments.items():
                list_id = self.config.lists.get(segment)
                if list_id is None:
                    continue  # no longer mapped
                if not member:
                    target = remove
                elif state.consent == "granted":
                    target = subscribe
                else:
                    target = add
                target[list_id].setdefault(email, []).append(item.id)
                outcome.plan(item.id)
        try:
            for list_id, people in subscribe.items():
                self._subscribe(list_id, people, outcome)
            for list_id, people in add.items():
                self._add(list_id, people, external, outcome)
            for list_id, people in remove.items():
                self._remove(list_id, people, outcome)
            if unsubscribe:
                self._unsubscribe(unsubscribe, outcome)
        except _Stop as stop:
            # a 429: nothing more is sent in this batch; whatever is not settled waits at
            # least Retry-After
            outcome.retry(outcome.unsettled(), stop.delay)
        return outcome.result()

    def _call(
        self,
        ids: list[str],
        outcome: audience.Outcome,
        method: str,
        path: str,
        *,
        complete: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One call; on failure the ``ids`` are marked and None is returned. A 429 raises
        :class:`_Stop` (after marking ``ids``). ``complete``: success finishes one of the
        items' actions (False for a lookup that only prepares one)."""
        try:
            res = self.client.call(method, path, **kwargs)
        except Throttled as exc:
            outcome.retry(ids, exc.delay)
            raise _Stop(exc.delay) from None
        except Unavailable as exc:
            log.warning("persona_email: %s", exc.message)
            outcome.backoff(ids)
        except Rejected as exc:
            outcome.fail(ids, exc.message)
        else:
            if complete:
                outcome.complete(ids)
            return res
        return None

    def _subscribe(
        self, list_id: str, people: dict[str, list[str]], outcome: audience.Outcome
    ) -> None:
        emails = list(people)
        for start in range(0, len(emails), MAX_PROFILES):
            chunk = emails[start : start + MAX_PROFILES]
            for _attempt in range(3):
                if not chunk:
                    break
                ids = [i for e in chunk for i in people[e]]
                try:
                    self.client.call(
                        "POST",
                        "/api/profile-subscription-bulk-create-jobs",
                        json_body=self._subscription_job(list_id, chunk),
                    )
                    outcome.complete(ids)
                    break
                except Throttled as exc:
                    outcome.retry(ids, exc.delay)
                    raise _Stop(exc.delay) from None
                except Unavailable as exc:
                    log.warning("persona_email: %s", exc.message)
                    outcome.backoff(ids)
                    break
                except Rejected as exc:
                    bad = _bad_indexes(exc.body, len(chunk))
                    if not bad:
                        outcome.fail(ids, exc.message)
                        break
                    for index in bad:  # fail those profiles, send the rest again
                        outcome.fail(people[chunk[index]], exc.message)
                    chunk = [e for n, e in enumerate(chunk) if n not in bad]
            else:  # still refused after three rounds: try the rest again later
                outcome.backoff(i for e in chunk for i in people[e])

    def _subscription_job(self, list_id: str, emails: list[str]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {
                            "email": email,
                            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
                        },
                    }
                    for email in emails
                ]
            },
            "historical_import": False,
        }
        if self.config.custom_source:
            attributes["custom_source"] = self.config.custom_source
        return {
            "data": {
                "type": "profile-subscription-bulk-create-job",
                "attributes": attributes,
                "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
            }
        }

    def _profile_id(
        self,
        email: str,
        ids: list[str],
        outcome: audience.Outcome,
        *,
        external_id: str | None = None,
        missing: bool = False,
    ) -> str | None:
        """Upsert (``external_id`` given) or look up the Klaviyo profile id of ``email``.
        With ``missing``, a person Klaviyo does not know has nothing to remove: their
        action is complete."""
        if external_id is not None:
            res = self._call(
                ids,
                outcome,
                "POST",
                "/api/profile-import",
                complete=False,
                json_body={
                    "data": {
                        "type": "profile",
                        "attributes": {"email": email, "external_id": external_id},
                    }
                },
            )
            found = (
                res.body.get("data", {}).get("id") if res and isinstance(res.body, dict) else None
            )
            if res is not None and not found:
                outcome.backoff(ids)
            return found
        res = self._call(
            ids,
            outcome,
            "GET",
            "/api/profiles",
            complete=False,
            params={"filter": f'equals(email,"{email}")', "page[size]": "1"},
        )
        if res is None or not isinstance(res.body, dict):
            return None
        data = res.body.get("data") or []
        if not data:
            if missing:
                outcome.complete(ids)
            return None
        return str(data[0].get("id") or "") or None

    def _relationships(
        self, method: str, list_id: str, members: dict[str, list[str]], outcome: audience.Outcome
    ) -> None:
        profile_ids = list(members)
        for start in range(0, len(profile_ids), MAX_PROFILES):
            chunk = profile_ids[start : start + MAX_PROFILES]
            self._call(
                [i for p in chunk for i in members[p]],
                outcome,
                method,
                f"/api/lists/{list_id}/relationships/profiles",
                json_body={"data": [{"type": "profile", "id": p} for p in chunk]},
            )

    def _add(
        self,
        list_id: str,
        people: dict[str, list[str]],
        external: dict[str, str],
        outcome: audience.Outcome,
    ) -> None:
        members: dict[str, list[str]] = {}
        for email, ids in people.items():
            pid = self._profile_id(email, ids, outcome, external_id=external.get(email, ""))
            if pid is not None:
                members.setdefault(pid, []).extend(ids)
        if members:
            self._relationships("POST", list_id, members, outcome)

    def _remove(
        self, list_id: str, people: dict[str, list[str]], outcome: audience.Outcome
    ) -> None:
        members: dict[str, list[str]] = {}
        for email, ids in people.items():
            pid = self._profile_id(email, ids, outcome, missing=True)
            if pid:
                members.setdefault(pid, []).extend(ids)
        if members:
            self._relationships("DELETE", list_id, members, outcome)

    def _unsubscribe(self, people: dict[str, list[str]], outcome: audience.Outcome) -> None:
        known = [e for e, ids in people.items() if self._profile_id(e, ids, outcome, missing=True)]
        for start in range(0, len(known), MAX_PROFILES):
            chunk = known[start : start + MAX_PROFILES]
            self._call(
                [i for e in chunk for i in people[e]],
                outcome,
                "POST",
                "/api/profile-subscription-bulk-delete-jobs",
                json_body={
                    "data": {
                        "type": "profile-subscription-bulk-delete-job",
                        "attributes": {
                            "profiles": {
                                "data": [
                                    {
                                        "type": "profile",
                                        "attributes": {
                                            "email": email,
                                            "subscriptions": {
                                                "email": {"marketing": {"consent": "UNSUBSCRIBED"}}
                                            },
                                        },
                                    }
                                    for email in chunk
                                ]
                            }
                        },
                    }
                },
            )

    # -- erasure ---------------------------------------------------------------------------
    def erase(self, email: str, *, budget: float = 10.0) -> str:
        """Request deletion of every Klaviyo profile with ``email``; waits out a 429 within
        ``budget`` seconds. Returns ``requested`` or ``failed: <why>``."""
        deadline = time.monotonic() + budget
        body = {
            "data": {
                "type": "data-privacy-deletion-job",
                "attributes": {
                    "profile": {"data": {"type": "profile", "attributes": {"email": email}}}
                },
            }
        }
        while True:
            try:
                self.client.call("POST", "/api/data-privacy-deletion-jobs", json_body=body)
                return "requested"
            except Throttled as exc:
                wait = max(exc.delay, 0.5)
                if time.monotonic() + wait > deadline:
                    return f"failed: {exc.message} (Retry-After {exc.delay:g} s)"
                time.sleep(wait)
            except (Unavailable, Rejected) as exc:
                return f"failed: {exc.message}"


def _bad_indexes(body: Any, size: int) -> set[int]:
    """Which profiles of a bulk job a JSON:API error's ``source.pointer`` names."""
    bad: set[int] = set()
    if not isinstance(body, dict):
        return bad
    for error in body.get("errors") or []:
        pointer = ((error or {}).get("source") or {}).get("pointer") or ""
        match = _POINTER.match(pointer)
        if match is None:
            return set()  # an error about the whole job
        index = int(match.group(1))
        if index < size:
            bad.add(index)
    return bad
