"""Campaign enricher: UTM parameters, ad click ids and where the visitor came from.

Adds to the request context (see :mod:`persona_enrichers` for the full reference):

``utm``
    ``{"source": ..., "medium": ..., "campaign": ..., "term": ..., "content": ...}`` with
    only the ``utm_*`` query parameters that are present and non-blank (values stripped,
    at most 200 characters; a repeated parameter keeps its last value). ``{}`` when none.
``campaign``
    The ``utm_campaign`` value, or ``None``.
``click_id``
    The *name* of the first ad click-id parameter present (``"gclid"``, ``"msclkid"``,
    ``"fbclid"``), or ``None``. The id's value is deliberately not copied.
``paid_click``
    ``True`` when such a click id is present.
``referrer``, ``referrer_host``, ``referrer_type``
    The ``Referer`` header (at most 500 characters, or ``None``), its lower-case host
    without ``www.`` (or ``None``), and the traffic type, decided in this order:
    ``email`` (``utm_medium`` is ``email``/``e-mail``/``e_mail``, or a webmail referrer),
    ``paid`` (``utm_medium`` is ``cpc``/``ppc``/``cpm``/``cpv`` or starts with ``paid``, or a
    click id), ``direct`` (no referrer), ``internal`` (referrer host = request ``Host``),
    ``search`` (Google, Bing, DuckDuckGo, Yahoo, Baidu, Yandex, Ecosia), ``social``
    (Facebook, Instagram, X/Twitter incl. ``t.co``, LinkedIn, Pinterest, Reddit, TikTok,
    YouTube), else ``referral``.

Settings (``PLUGINS["campaign"]``): ``click_ids`` — the query parameters that count as ad
click ids, in order (default ``["gclid", "msclkid"]``; Facebook adds ``fbclid`` to every
outbound link, paid or not, so it is not a paid signal by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from persona_sdk.context import RequestInfo
from persona_sdk.errors import ConfigError
from persona_sdk.hookspecs import hookimpl

__all__ = ["classify_referrer", "enrich", "persona_configure", "persona_register_enrichers"]

KEY = "campaign"
ORDER = 10

UTM_FIELDS = ("source", "medium", "campaign", "term", "content")
DEFAULT_CLICK_IDS = ("gclid", "msclkid")
MAX_VALUE = 200
MAX_REFERRER = 500

EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail"})
PAID_MEDIUMS = frozenset({"cpc", "ppc", "cpm", "cpv", "paid", "paidsearch"})

# A public suffix good enough for the big engines/networks: com, de, co.uk, com.br, ...
_TLD = r"(?:[a-z]{2,6}|(?:co|com|net|org|ne|or)\.[a-z]{2})"
_SEARCH_RE = re.compile(
    r"(?:^|\.)(?:google|bing|duckduckgo|yahoo|baidu|yandex|ecosia)\." + _TLD + r"$"
)
_SOCIAL_RE = re.compile(
    r"(?:^|\.)(?:facebook|instagram|twitter|linkedin|pinterest|reddit|tiktok|youtube)\."
    + _TLD
    + r"$"
)
# Short-link and single-TLD social domains, matched exactly or as a parent domain.
_SOCIAL_DOMAINS = frozenset(
    {"t.co", "x.com", "fb.com", "fb.me", "lnkd.in", "pin.it", "redd.it", "youtu.be"}
)
# Webmail front ends (they would otherwise look like search engines or referrals).
_WEBMAIL_HOSTS = frozenset(
    {
        "mail.google.com",
        "mail.yahoo.com",
        "mail.yandex.ru",
        "mail.yandex.com",
        "outlook.live.com",
        "outlook.office.com",
        "outlook.office365.com",
        "mail.aol.com",
        "mail.proton.me",
    }
)


class _Config:
    __slots__ = ("click_ids",)

    def __init__(self, click_ids: tuple[str, ...] = DEFAULT_CLICK_IDS) -> None:
        self.click_ids = click_ids


_config = _Config()


def _section(settings: Mapping[str, Any], allowed: set[str]) -> Mapping[str, Any]:
    section = settings.get(KEY) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"PLUGINS[{KEY!r}] must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(
            f"PLUGINS[{KEY!r}]: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    return section


@hookimpl
def persona_configure(settings: Mapping[str, Any]) -> None:
    """Read ``PLUGINS["campaign"]`` (see the module docstring)."""
    global _config
    section = _section(settings, {"click_ids"})
    click_ids: Any = section.get("click_ids", DEFAULT_CLICK_IDS)
    if isinstance(click_ids, str) or not all(
        isinstance(name, str) and name.strip() for name in click_ids
    ):
        raise ConfigError(
            f"PLUGINS[{KEY!r}]['click_ids'] must be a list of query parameter names, "
            f"got {click_ids!r}"
        )
    _config = _Config(tuple(name.strip() for name in click_ids))


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_VALUE] if value else None


def _normalize_host(host: str | None) -> str | None:
    if not host:
        return None
    host = host.strip().lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return host or None


def _request_host(request: RequestInfo) -> str | None:
    raw = request.headers.get("host", "")
    try:
        return _normalize_host(urlsplit("//" + raw.strip()).hostname)
    except ValueError:
        return None


def _referrer_host(referrer: str) -> str | None:
    try:
        return _normalize_host(urlsplit(referrer).hostname)
    except ValueError:  # e.g. "http://[::1" — malformed URLs never raise
        return None


def _in_domains(host: str, domains: frozenset[str]) -> bool:
    if host in domains:
        return True
    parts = host.split(".")
    return any(".".join(parts[i:]) in domains for i in range(1, len(parts) - 1))


def classify_referrer(
    referrer_host: str | None,
    *,
    has_referrer: bool,
    request_host: str | None = None,
    medium: str | None = None,
    click_id: str | None = None,
) -> str:
    """The ``referrer_type`` for these signals (see the module docstring for the order)."""
    medium = (medium or "").lower()
    if medium in EMAIL_MEDIUMS or (referrer_host is not None and referrer_host in _WEBMAIL_HOSTS):
        return "email"
    if medium in PAID_MEDIUMS or medium.startswith("paid") or click_id is not None:
        return "paid"
    if not has_referrer:
        return "direct"
    if referrer_host is None:
        return "referral"
    if request_host is not None and referrer_host == request_host:
        return "internal"
    if _SEARCH_RE.search(referrer_host):
        return "search"
    if _SOCIAL_RE.search(referrer_host) or _in_domains(referrer_host, _SOCIAL_DOMAINS):
        return "social"
    return "referral"


def enrich(request: RequestInfo, context: dict[str, Any]) -> None:
    """Add ``utm``, ``campaign``, ``click_id``, ``paid_click`` and ``referrer*`` keys."""
    query = request.query
    utm: dict[str, str] = {}
    for field in UTM_FIELDS:
        value = _clean(query.get("utm_" + field))
        if value is not None:
            utm[field] = value
    click_id = next((name for name in _config.click_ids if _clean(query.get(name))), None)

    raw_referrer = request.headers.get("referer", "").strip()
    referrer = raw_referrer[:MAX_REFERRER] or None
    referrer_host = _referrer_host(raw_referrer[:2048]) if referrer else None

    context["utm"] = utm
    context["campaign"] = utm.get("campaign")
    context["click_id"] = click_id
    context["paid_click"] = click_id is not None
    context["referrer"] = referrer
    context["referrer_host"] = referrer_host
    context["referrer_type"] = classify_referrer(
        referrer_host,
        has_referrer=referrer is not None,
        request_host=_request_host(request) if referrer_host else None,
        medium=utm.get("medium"),
        click_id=click_id,
    )


@hookimpl
def persona_register_enrichers(register: Callable[..., None]) -> None:
    register(
        "campaign",
        enrich,
        order=ORDER,
        doc="UTM parameters, ad click ids and referrer type (utm, campaign, referrer_type...)",
    )
