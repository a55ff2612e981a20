"""The browser-facing endpoints (``path("persona/", include("persona_django.urls"))``).

``GET /persona/decide?slots=hero,banner``
    decisions for edge-mode slots: ``{"slots": {"hero": {"variant": "vip", "default": false,
    "reason": "matched"}}}``. Only slots defined in the definitions, at most 20 per request.
    Private, never stored (``Cache-Control: private, no-store``, ``Vary: Cookie``).
``GET /persona/consent``
    ``{"purposes": {"personalization": "granted"|"denied"|"unset", ...}, "effective":
    {"personalization": true, ...}, "gpc": false, "mode": "opt-in"}``.
``POST /persona/consent`` (CSRF-protected)
    a JSON object of ``purpose: true|false|"granted"|"denied"|"unset"``; records the choices
    (source ``api``) and answers like GET. This is what gives a visitor their cookie in
    opt-in mode.
``POST /persona/event``
    one browser event, ``{"event": "Product Viewed", "properties": {...}}`` or
    ``{"type": "page", "name": "...", "properties": {...}}``. The server supplies the ids
    (from the visitor cookie and the logged-in user; the browser never chooses them) and the
    context. Sent with ``navigator.sendBeacon``, which cannot set headers, so it is exempt
    from CSRF and instead requires a JSON body (``application/json`` or ``text/plain``) from
    the same origin (``Origin`` / ``Sec-Fetch-Site``). Size-limited
    (``BEACON_MAX_BYTES`` → 413), rate-limited per visitor (``BEACON_RATE_LIMIT`` per minute
    → 429 with ``Retry-After``), consent-aware (no ``analytics`` consent → 202
    ``{"recorded": false, "reason": "consent"}``). The profile is updated before the
    response. Purchase and conversion events are refused: they must be recorded
    server-side (``persona_django.track``), where the amount cannot be forged.

Errors are JSON ``{"error": "..."}`` with a 4xx status; bad input never causes a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from persona_sdk import ConsentState, Event
from persona_sdk.errors import ConsentError, EventError, PersonaError

__all__ = ["MAX_DECIDE_SLOTS", "consent", "decide", "event"]

log = logging.getLogger("persona_django")

MAX_DECIDE_SLOTS = 20
MAX_CONSENT_BYTES = 4096
EVENT_FIELDS = frozenset({"type", "event", "name", "properties"})


def _json(data: Mapping[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    patch_cache_control(response, private=True, no_store=True)
    patch_vary_headers(response, ("Cookie",))
    return response


def _error(message: str, status: int = 400) -> JsonResponse:
    return _json({"error": message}, status=status)


def _not_allowed(request: HttpRequest, allowed: tuple[str, ...]) -> JsonResponse:
    response = _error(f"method {request.method} is not allowed; use {' or '.join(allowed)}", 405)
    response["Allow"] = ", ".join(allowed)
    return response


def _rp(request: HttpRequest) -> Any:
    return getattr(request, "persona", None)


def _no_middleware() -> JsonResponse:
    log.error(
        "persona: the persona views need persona_django.middleware.PersonaMiddleware in MIDDLEWARE"
    )
    return _error("persona-sdk is not set up on this site (PersonaMiddleware is missing)", 500)


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return None
    return None if len(body) > limit else body


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(body.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "the body is not UTF-8"
    except json.JSONDecodeError as exc:
        return (
            None,
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        )


# -- decide --------------------------------------------------------------------------------
def page_info(request: HttpRequest, page: str, referrer: str) -> Any:
    """The RequestInfo of the page an edge slot sits on (``page``: its path and query)."""
    from urllib.parse import urlsplit

    import attrs

    from .request import request_info

    base = request_info(request)
    parts = urlsplit(page)
    path = parts.path if parts.path.startswith("/") else "/"
    headers = {k: v for k, v in base.headers.items() if k != "referer"}
    if referrer:
        headers["referer"] = referrer
    return attrs.evolve(base, path=path, query=parts.query, headers=headers)


def decide(request: HttpRequest) -> HttpResponse:
    """Decisions for the edge-mode slots named in ``?slots=``."""
    if request.method not in ("GET", "HEAD"):
        return _not_allowed(request, ("GET",))
    rp = _rp(request)
    if rp is None:
        return _no_middleware()
    raw = request.GET.get("slots", "")
    names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:
        return _error("name the slots to decide: ?slots=hero,banner")
    if len(names) > MAX_DECIDE_SLOTS:
        return _error(f"at most {MAX_DECIDE_SLOTS} slots per request, got {len(names)}")
    slots = rp.persona.slots
    unknown = [n for n in names if n not in slots]
    if unknown:
        shown = ", ".join(repr(n[:64]) for n in unknown[:5])
        return _error(f"unknown slot(s): {shown}; decide only slots defined in the definitions")
    page = request.GET.get("page")
    if page:
        # Edge slots are decided for the page the visitor is on, not for this endpoint: its
        # path and query (campaign links) and its referrer. Only context comes from here;
        # who the visitor is still comes from the cookie.
        rp.info = page_info(request, page[:2000], request.GET.get("ref", "")[:2000])
    explain = bool(rp.config.get("DEBUG_EXPLAIN"))
    result: dict[str, Any] = {}
    for name in names:
        decision = rp.decide(name)  # exposures are recorded by the middleware after the response
        entry: dict[str, Any] = {
            "variant": decision.variant,
            "default": decision.is_default,
            "reason": decision.reason,
        }
        if explain:
            entry["explanation"] = decision.explanation
        result[name] = entry
    return _json({"slots": result})


# -- consent -------------------------------------------------------------------------------
def consent_state(rp: Any) -> dict[str, Any]:
    """What ``GET /persona/consent`` answers for this request's visitor."""
    persona = rp.persona
    profile = rp.profile
    purposes = persona.policy.purposes
    return {
        "purposes": {
            p: (profile.consent_state(p).value if profile is not None else ConsentState.UNSET.value)
            for p in purposes
        },
        "effective": {p: persona.may(profile, p, gpc=rp.gpc) for p in purposes},
        "gpc": rp.gpc,
        "mode": persona.policy.mode,
    }


@ensure_csrf_cookie
def consent(request: HttpRequest) -> HttpResponse:
    """Read (GET) or record (POST, CSRF-protected) this visitor's consent choices."""
    if request.method not in ("GET", "HEAD", "POST"):
        return _not_allowed(request, ("GET", "POST"))
    rp = _rp(request)
    if rp is None:
        return _no_middleware()
    if request.method == "POST":
        problem = _record_consent(request, rp)
        if problem is not None:
            return _error(problem)
    return _json(consent_state(rp))


def _record_consent(request: HttpRequest, rp: Any) -> str | None:
    body = _read_body(request, MAX_CONSENT_BYTES)
    if body is None:
        return f"the body is larger than {MAX_CONSENT_BYTES} bytes"
    data, problem = _parse_json(body)
    if problem is not None:
        return problem
    if not isinstance(data, dict) or not data:
        return (
            "send a JSON object of purpose: choice, "
            'e.g. {"personalization": true, "marketing": "denied"}'
        )
    persona = rp.persona
    try:
        choices = {persona.policy.check(p): ConsentState.parse(s) for p, s in data.items()}
    except ConsentError as exc:
        return str(exc)
    except (TypeError, ValueError):
        return 'a consent choice is true, false, "granted", "denied" or "unset"'
    rp.ensure_visitor_id()
    identity = rp.identity
    try:
        persona.set_consent(identity, choices, source="api")
        if rp.gpc:
            persona.observe_gpc(identity)
    except ConsentError as exc:
        return str(exc)
    rp.refresh()
    return None


# -- event beacon --------------------------------------------------------------------------
def _same_origin(request: HttpRequest) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "same-origin":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (browsers send Origin on POST)
    origin = origin.strip().rstrip("/")
    here = f"{request.scheme}://{request.get_host()}"
    trusted = {o.rstrip("/") for o in getattr(settings, "CSRF_TRUSTED_ORIGINS", []) if "*" not in o}
    return origin == here or origin in trusted


def _rate_limited(rp: Any, config: Mapping[str, Any]) -> int | None:
    """Seconds to wait when this visitor sent more than BEACON_RATE_LIMIT events this minute."""
    limit = config.get("BEACON_RATE_LIMIT")
    if not limit or int(limit) <= 0:
        return None
    who = f"u:{rp.user_id}" if rp.user_id is not None else f"a:{rp.visitor_id}"
    now = time.time()
    window = int(now // 60)
    digest = hashlib.blake2b(who.encode("utf-8"), digest_size=16).hexdigest()
    key = f"persona:beacon:{digest}:{window}"
    try:
        cache = caches[config["CACHE_ALIAS"]]
        cache.add(key, 0, timeout=120)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=120)
            count = 1
    except Exception:
        log.exception("persona: the beacon rate limiter's cache failed; not limiting")
        return None
    if count > int(limit):
        return max(1, 60 - int(now % 60))
    return None


def _page_path(request: HttpRequest) -> str | None:
    referer = request.headers.get("Referer")
    if not referer:
        return None
    try:
        return urlsplit(referer).path[:500] or "/"
    except ValueError:
        return None


@csrf_exempt
def event(request: HttpRequest) -> HttpResponse:
    """Record one browser event for this visitor (see the module docstring)."""
    if request.method != "POST":
        return _not_allowed(request, ("POST",))
    if not _same_origin(request):
        return _error("events are accepted from this site's own pages only", 403)
    content_type = request.content_type or ""
    if content_type not in ("application/json", "text/plain"):
        return _error("send the event as JSON (Content-Type: application/json or text/plain)", 415)
    rp = _rp(request)
    if rp is None:
        return _no_middleware()
    config = rp.config
    limit = int(config["BEACON_MAX_BYTES"])
    body = _read_body(request, limit)
    if body is None:
        return _error(f"the event is larger than {limit} bytes", 413)
    data, problem = _parse_json(body)
    if problem is not None:
        return _error(problem)
    if not isinstance(data, dict):
        return _error('send one JSON object, e.g. {"event": "Product Viewed", "properties": {}}')
    unknown = sorted(set(data) - EVENT_FIELDS)
    if unknown:
        return _error(
            f"unknown field(s): {', '.join(map(str, unknown))[:200]}; the browser sends type, "
            "event, name and properties (the server supplies ids, context and timestamp)"
        )
    kind = data.get("type", "track" if "event" in data else None)
    if kind not in ("track", "page"):
        return _error(
            'the browser sends "track" events ({"event": ...}) or "page" events ({"type": "page"})'
        )
    ids = rp._event_ids()
    if ids is None:  # no visitor id yet: opt-in mode before consent
        return _json({"recorded": False, "reason": "consent"}, 202)
    retry = _rate_limited(rp, config)
    if retry is not None:
        response = _error("too many events; slow down", 429)
        response["Retry-After"] = str(retry)
        return response
    persona = rp.persona
    name = data.get("event")
    if (
        kind == "track"
        and isinstance(name, str)
        and (name in persona.conversion_goals or name in persona.behaviour.purchase_events)
    ):
        return _error(
            f"{name!r} is a purchase/conversion event: record it server-side "
            "(persona_django.track) so its value cannot be forged from the browser"
        )
    path = _page_path(request)
    properties = data.get("properties")
    if kind == "page" and path is not None and (properties is None or isinstance(properties, dict)):
        properties = {"path": path, **(properties or {})}
    try:
        context = rp._event_context()
        if path is not None:
            context["page"] = {"path": path}
        made = Event.create(
            kind,
            event=name,
            name=data.get("name"),
            properties=properties,
            context=context,
            max_bytes=max(limit, 1024),
            **ids,
        )
    except EventError as exc:
        return _error(str(exc))
    if not rp.may("analytics"):
        return _json({"recorded": False, "reason": "consent"}, 202)
    try:
        result = persona.ingest(made, gpc=rp.gpc)
    except PersonaError as exc:
        log.warning("persona: a browser event was refused: %s", exc)
        return _error(str(exc))
    rp.refresh()
    if not result.applied and result.reason == "consent":
        return _json({"recorded": False, "reason": "consent"}, 202)
    body_out: dict[str, Any] = {"recorded": result.applied}
    if not result.applied:
        body_out["reason"] = result.reason
    return _json(body_out)
