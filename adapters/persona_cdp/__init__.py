"""persona-sdk's CDP adapter: forward events to Segment or RudderStack through the durable
outbox, read Segment's unified traits and audiences back into decisions, and pass erasure on.

Install with ``pip install "persona-sdk[cdp]"`` (adds ``requests``). The adapter is the
entry-point plugin ``persona_cdp`` and does nothing until it is configured.

Settings
========

In Django, under ``PERSONA["PLUGINS"]`` (elsewhere: ``Persona(plugin_settings={...})``)::

    PERSONA = {
        "PLUGINS": {
            "segment": {
                "write_key": "…",                        # required
                "host": "https://api.segment.io",        # EU: https://events.eu1.segmentapis.com
                "timeout": 10,                           # seconds per request (connect: 3.05)
                "max_batch": 500,                        # events per request, at most 2,500
                # consent (see below)
                "purposes": ["analytics", "sharing"],    # the default
                "integrations": {"marketing": ["Braze"], "personalization": ["Optimizely"]},
                # Profile API read-through (both keys, or neither)
                "profile_space_id": "spa_…",
                "profile_token": "…",
                "profile_host": "https://profiles.segment.com",
                "profile_budget_ms": 50,                 # the most a page waits
                "profile_ttl": 300,                      # seconds an answer is kept
                "profile_refresh_after": 60,             # then served stale + refreshed
                # erasure (Segment Public API)
                "public_api_token": "…",
                "erase_regulation": "SUPPRESS_WITH_DELETE",
            },
            "rudderstack": {
                "write_key": "…",                        # required
                "data_plane_url": "https://yourco.dataplane.rudderstack.com",   # required
                "api_token": "…",                        # User Suppression API (erasure)
                "erase_destination_ids": ["…"],
            },
        },
    }

Less common keys: ``connect_timeout``, ``gzip`` (False), ``max_message_bytes`` (32 KB),
``max_batch_bytes`` (500,000), ``breaker_threshold`` (5 failed batches),
``breaker_cooldown`` (30 s), ``max_inline_wait`` (2 s), ``consent_lookup`` (a callable,
see below), ``erase_timeout``, ``public_api_host`` / ``api_host``; for the Profile API
``profile_not_found_ttl`` (60 s), ``profile_failure_backoff`` (5 s), ``profile_timeout``
(2 s per background request), ``profile_workers`` (4), ``profile_limit`` (200),
``profile_audiences`` (True), ``profile_max_entries`` (10,000).

A mistake is a system check (``manage.py check``; ``persona validate`` without Django),
never a crash while serving: the vendor block with an error is switched off and logged.

==================  =====================================================================
``E001``            the vendor block is not a dict
``E002``            ``write_key`` missing
``E003``            a URL (``host``, ``data_plane_url``, ``profile_host``...) is not http(s)
``E004``            RudderStack without ``data_plane_url``
``E005``            a number or choice out of range (``max_batch`` > 2,500, ``timeout`` ≤ 0...)
``E006``            only one of ``profile_space_id`` / ``profile_token``
``E007``/``E008``   ``purposes`` (must include ``analytics``) / ``integrations`` malformed
``E009``            ``requests`` is not installed
``E010``            a purpose the consent policy does not define (see ``EXTRA_PURPOSES``)
``W001``            unknown keys (typos)
``W002``            plain ``http://`` to a non-local host
``W003``            no deletion token: ``persona_erase`` cannot reach the vendor
==================  =====================================================================

(ids are prefixed ``persona_cdp.``, e.g. ``persona_cdp.E002``.)

What is sent
============

Every ``track``, ``identify`` and ``page`` of a consenting visitor, and every ``alias``
that has a user id, is queued in the outbox (never sent during the request) as the
Segment-spec message the SDK built: ``type``, ``messageId`` (the event's own id, the dedup
key), ``timestamp`` (when it happened, ISO-8601 with ms), ``userId`` / ``anonymousId``,
``event``, ``name``, ``properties``, ``traits``, ``previousId``, ``context`` (plus
``context.library = {"name": "persona-sdk", ...}``). The worker (``manage.py
persona_deliver``) sends them with ``POST {host}/v1/batch`` on one reused HTTP
connection, up to ``max_batch`` events and 500 KB per request, with ``sentAt``.

* **Segment**: the write key is in the body (``"writeKey"``), as analytics-python ≥ 2.3 sends it.
* **RudderStack**: ``Authorization: Basic base64(write_key:)`` only (the gateway ignores a
  body key); identify traits go in ``context.traits`` (not top-level), ``"channel":
  "server"`` and ``"integrations": {"All": true}`` are set, as rudder-sdk-python does. The
  32 KB per-message limit is applied to RudderStack too (its own limit is unconfirmed; its
  gateway answers 413 above 4 MB by default, and the sink splits a batch refused with 413).

Delivery: at least once, nothing lost
-------------------------------------

=====================================  ===================================================
vendor answer                          what happens to the items
=====================================  ===================================================
2xx                                    delivered (marked done)
429, 408, 5xx, timeout, no connection  retried with the outbox's exponential backoff with
                                       full jitter, never before ``Retry-After`` (seconds
                                       or HTTP-date) or else ``X-RateLimit-Reset``
400, 413, 422 for several messages     the batch is split in two and resent, down to the
                                       one message refused: that one is dead-lettered with
                                       the vendor's message, the others delivered
401, 403, 404, other 4xx, a redirect   dead-lettered with the vendor's message (a bad or
                                       revoked key never succeeds by retrying: fix it,
                                       then replay the dead letters in the admin)
a message over 32 KB, no ids           dead-lettered before sending, with the reason
=====================================  ===================================================

A **circuit breaker** per sink (per worker process) opens after ``breaker_threshold``
consecutive failed batches: for ``breaker_cooldown`` seconds every item is answered
"retry later" without touching the network; then one probe batch goes out (success
closes it, failure reopens it for twice as long, up to 10 minutes). A vendor's
``Retry-After`` is held the same way. Items held back like this were never sent: they are
rescheduled without counting a delivery attempt (a long outage does not dead-letter them),
and their ``last_error`` says why, with the last failure (``not sent: the circuit breaker
is open … (last failure: HTTP 503 from Segment: …)``). Either wait, when it is at most
``max_inline_wait`` seconds (default 2), is slept through in the worker instead: cheaper
than rescheduling every claimed item.

Dead letters are listed in the Django admin (Personalization > outbox, filter *status =
dead*) with the vendor's message, and the *Replay selected dead letters* action queues them
again. Because delivery is
at-least-once, a batch whose acknowledgement was lost (a timeout, a killed worker) is sent
again with the same ``messageId`` s, which the vendor deduplicates.

Consent
=======

* The sink's ``purposes`` are ``("analytics", "sharing")``: nothing is even **queued** for
  a visitor who has not granted both (sharing with third parties is what forwarding is),
  and the worker checks again at **delivery**: consent withdrawn after an event was queued
  means it is not sent. Global Privacy Control, recorded as a denial of ``sharing``, stops
  forwarding the same way.
* **Email**: with the default purposes an ``email`` trait is only ever forwarded for
  people who granted ``sharing``. A site that sets ``"purposes": ["analytics"]`` (forwarding
  to a CDP it treats as its own processor) gets ``email`` removed from ``traits`` and
  ``context.traits`` of every message.
* **integrations**: ``"integrations": {"marketing": ["Braze", "Customer.io"]}`` maps a
  consent purpose to CDP destination names (case-sensitive, as named in the CDP). At
  delivery, each message gets ``{"All": true, "<destination>": false, ...}`` switching off
  the destinations of every mapped purpose the person has **not** granted *at that moment*;
  other destinations get the event as usual. On a Django site the person's consent is
  read through the site's Persona; elsewhere give ``"consent_lookup": fn`` with
  ``fn(profile_id, purposes) -> {purpose: bool}``. When consent cannot be read, mapped
  destinations are switched off (the safe answer). Without a mapping no ``integrations``
  field is sent (Segment) and every enabled destination receives the event.

Profile read-through (Segment Profile API)
==========================================

With ``profile_space_id`` and ``profile_token`` set, the source ``segment`` asks
``GET {profile_host}/v1/spaces/{space}/collections/users/profiles/user_id:{id}/traits``
(``anonymous_id:{id}`` when the visitor has no user id; ``+`` is sent as ``%2B``), then the
same with ``class=audience``, Basic auth with the token as user name. The traits (custom,
computed, audiences) are merged into the profile **in memory** for the request, with
source ``segment``, plus ``segment_audiences`` (sorted names of the audiences the person is
in), when ``personalization`` is granted (``persona.refresh(profile)``).

A page waits at most ``profile_budget_ms``: a cached answer is used at once (refreshed in
the background once older than ``profile_refresh_after``); on a miss the request waits for
the fetch up to the budget and otherwise goes on with what it knows, while the answer lands
in the cache for the next request. "Profile was not found" (404) is cached for
``profile_not_found_ttl``; failures (timeouts, 5xx, 401, 429) are logged, never raised, and
not retried for ``profile_failure_backoff`` seconds (a 429 pauses the whole space for its
``Retry-After``). Only the first page of traits (``profile_limit`` ≤ 200) is read.

Erasure (``persona_erase``)
===========================

Erasing a person (``manage.py persona_erase``, ``persona.erase(identity)``) deletes their
pending and delivered outbox items (the core does that) and asks each configured vendor to
delete them, by **user id** (neither API names people by anonymous id: a profile without a
user id is reported ``skipped``):

* Segment: ``POST {public_api_host}/regulations`` (default ``https://api.segmentapis.com``),
  ``Authorization: Bearer <public_api_token>``, body ``{"regulationType":
  "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": ["<user id>"]}``; the
  answer's ``data.regulateId`` is reported. The shape comes from Segment's generated Public
  API SDK (segmentio/public-api-sdk-python, ``create_workspace_regulation``), not from the
  contracts we were given, and has only been exercised against our fake: **unconfirmed**.
* RudderStack: ``POST {api_host}/v2/regulations`` (default ``https://api.rudderstack.com``),
  ``Authorization: Bearer <api_token>``, body ``{"regulationType": "suppress_with_delete",
  "destinationIds": [...], "users": [{"userId": "<user id>"}]}`` (User Suppression API,
  Enterprise plan). Endpoint, auth and regulation types are from RudderStack's docs; the
  exact body and the answer are **unconfirmed**.

The report (``{"adapter": "persona_cdp", "status": "requested" | "partial" | "failed" |
"skipped" | "not_configured", "vendors": [...]}``) says which endpoint was called and what
the vendor said. A failed call never stops the local erasure; it is logged, and must be
repeated in the vendor's app. Regulations are asynchronous at the vendor.

Also unconfirmed (the fakes accept both readings or are stricter): Segment's success body
(the fake answers ``{"success": true}``) and the HTTP status of its ``no_user_anon_id``
error; Segment answers 200 and drops messages it cannot use (no ids, a track without an
event), so the sink refuses those itself rather than lose them silently.

Limits
======

* The plugin keeps the settings it was last configured with (one ``Persona`` per process,
  as ``persona_django`` builds it); ``persona_erase`` acts on those.
* The circuit breaker and ``Retry-After`` holds live in each worker process.
* An item handed to a worker that is killed is retried when the outbox lease (60 s) runs
  out; its batch may reach the vendor twice (same ``messageId`` s).
"""
