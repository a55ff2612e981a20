"""The cdp adapter's settings, parsed and checked without importing Django or ``requests``.

:func:`parse` turns one vendor block of the plugin settings (``PERSONA["PLUGINS"]["segment"]``
or ``["rudderstack"]``) into a :class:`VendorConfig` plus the problems found, as
:class:`~persona_sdk.checks.CheckMessage` s. A block with an error is not used at all (no sink,
no profile source, no erase call): the problem is reported by ``persona_check_config`` (a
Django system check), never raised while a page is being served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from persona_sdk.checks import CheckMessage

__all__ = [
    "RUDDERSTACK",
    "SEGMENT",
    "VENDORS",
    "EraseConfig",
    "ProfileApiConfig",
    "VendorConfig",
    "parse",
]

SEGMENT = "segment"
RUDDERSTACK = "rudderstack"
VENDORS = (SEGMENT, RUDDERSTACK)

#: Segment's documented limits (HTTP Tracking API): 32 KB per message, 500 KB per batch
#: request, at most 2,500 events per batch. RudderStack's gateway is "Segment-compatible";
#: its own per-event limit is unconfirmed, so the same conservative limits are used for it.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500_000
MAX_BATCH_EVENTS = 2_500

DEFAULT_HOSTS = {SEGMENT: "https://api.segment.io"}
DEFAULT_PROFILE_HOST = "https://profiles.segment.com"
DEFAULT_ERASE_HOSTS = {SEGMENT: "https://api.segmentapis.com", RUDDERSTACK: "https://api.rudderstack.com"}
DEFAULT_REGULATION = {SEGMENT: "SUPPRESS_WITH_DELETE", RUDDERSTACK: "suppress_with_delete"}
REGULATIONS = {
    SEGMENT: (
        "SUPPRESS_WITH_DELETE",
        "SUPPRESS_WITH_DELETE_INTERNAL",
        "DELETE_ONLY",
        "DELETE_INTERNAL",
        "SUPPRESS_ONLY",
    ),
    RUDDERSTACK: ("suppress_with_delete", "suppress"),
}

_COMMON_KEYS = {
    "write_key",
    "timeout",
    "connect_timeout",
    "max_batch",
    "max_message_bytes",
    "max_batch_bytes",
    "gzip",
    "purposes",
    "integrations",
    "breaker_threshold",
    "breaker_cooldown",
    "max_inline_wait",
    "consent_lookup",
    "erase_regulation",
    "erase_timeout",
}
KNOWN_KEYS = {
    SEGMENT: _COMMON_KEYS
    | {
        "host",
        "profile_space_id",
        "profile_token",
        "profile_host",
        "profile_budget_ms",
        "profile_ttl",
        "profile_refresh_after",
        "profile_not_found_ttl",
        "profile_failure_backoff",
        "profile_timeout",
        "profile_workers",
        "profile_limit",
        "profile_audiences",
        "profile_max_entries",
        "public_api_token",
        "public_api_host",
    },
    RUDDERSTACK: _COMMON_KEYS
    | {"data_plane_url", "host", "api_token", "api_host", "erase_destination_ids"},
}


@attrs.frozen
class ProfileApiConfig:
    """Segment Profile API read-through (see :mod:`persona_cdp.profile_api`)."""

    space_id: str
    token: str
    host: str = DEFAULT_PROFILE_HOST
    #: the most a page waits for this source, in seconds
    budget: float = 0.05
    #: how long fetched traits are kept at all
    ttl: float = 300.0
    #: after this many seconds a cached entry is still used, and refreshed in the background
    refresh_after: float = 60.0
    #: "no such profile" (404) is remembered this long
    not_found_ttl: float = 60.0
    #: after a failure (timeout, 5xx, 429...) the key is not asked again for this long
    failure_backoff: float = 5.0
    #: HTTP timeout of one background request (the page never waits for it)
    timeout: float = 2.0
    workers: int = 4
    limit: int = 200
    audiences: bool = True
    max_entries: int = 10_000


@attrs.frozen
class EraseConfig:
    """Where ``persona_erase`` asks the vendor to delete a person (see :mod:`persona_cdp.erase`)."""

    token: str
    host: str
    regulation: str
    destination_ids: tuple[str, ...] = ()
    timeout: float = 10.0


@attrs.frozen
class VendorConfig:
    """One configured CDP (a Segment source or a RudderStack source)."""

    vendor: str
    write_key: str = attrs.field(repr=False)
    host: str
    timeout: float = 10.0
    connect_timeout: float = 3.05
    max_batch: int = 500
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_batch_bytes: int = MAX_BATCH_BYTES
    gzip: bool = False
    purposes: tuple[str, ...] = ("analytics", "sharing")
    #: consent purpose -> destination names switched off (``integrations``) without it
    integrations: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    max_inline_wait: float = 2.0
    consent_lookup: Any = None
    profile: ProfileApiConfig | None = None
    erase: EraseConfig | None = None

    @property
    def name(self) -> str:
        """The sink's name (what outbox items are addressed to)."""
        return self.vendor

    @property
    def label(self) -> str:
        return "Segment" if self.vendor == SEGMENT else "RudderStack"


def _setting(vendor: str, key: str) -> str:
    return f'PERSONA["PLUGINS"]["{vendor}"]["{key}"]'


def check_url(value: Any) -> str | None:
    """Why ``value`` is not an http(s) base URL, or None if it is one."""
    if not isinstance(value, str) or not value.strip():
        return "it is empty"
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        return f"it does not parse ({exc})"
    del port
    if parts.scheme not in ("http", "https"):
        return "it does not start with https:// (or http://)"
    if not parts.hostname:
        return "it has no host name"
    if parts.query or parts.fragment:
        return "it has a query or fragment (give the base URL only)"
    if any(c.isspace() for c in value.strip()):
        return "it contains spaces"
    return None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")


class _Reader:
    """Reads typed values out of one vendor block, collecting problems."""

    def __init__(self, vendor: str, raw: Mapping[str, Any]) -> None:
        self.vendor = vendor
        self.raw = raw
        self.errors: list[CheckMessage] = []
        self.warnings: list[CheckMessage] = []

    def error(self, id: str, msg: str, hint: str) -> None:
        self.errors.append(CheckMessage("error", id, msg, hint=hint))

    def warn(self, id: str, msg: str, hint: str) -> None:
        self.warnings.append(CheckMessage("warning", id, msg, hint=hint))

    def number(
        self,
        key: str,
        default: float,
        *,
        low: float,
        high: float = math.inf,
        integer: bool = False,
        scale: float = 1.0,
    ) -> float:
        value = self.raw.get(key, None)
        if value is None:
            return default * scale
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer and not float(value).is_integer():
            ok = False
        if ok and not (low <= value <= high and math.isfinite(value)):
            ok = False
        if not ok:
            span = f"{low:g} to {high:g}" if math.isfinite(high) else f"at least {low:g}"
            kind = "a whole number" if integer else "a number"
            self.error(
                "persona_cdp.E005",
                f"{_setting(self.vendor, key)} is {value!r}, not {kind} from {span}.",
                f"Use {kind} from {span}, or remove the key for the default ({default:g}).",
            )
            return default * scale
        return float(value) * scale

    def string(self, key: str, default: str = "") -> str:
        value = self.raw.get(key, None)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(
                "persona_cdp.E005",
                f"{_setting(self.vendor, key)} must be a string, got {type(value).__name__}.",
                "Put the value in quotes.",
            )
            return default
        return value.strip()

    def url(self, key: str, default: str | None, *, what: str) -> str:
        value = self.raw.get(key, default)
        problem = check_url(value)
        if problem is not None:
            self.error(
                "persona_cdp.E003",
                f"{_setting(self.vendor, key)} ({what}) is not a valid URL: {problem} "
                f"(got {value!r}).",
                "Give the base URL with its scheme, e.g. "
                f"{DEFAULT_HOSTS.get(self.vendor, 'https://yourcompany.dataplane.rudderstack.com')!r}.",
            )
            return ""
        url = str(value).strip().rstrip("/")
        if url.startswith("http://") and not _is_loopback(url):
            self.warn(
                "persona_cdp.W002",
                f"{_setting(self.vendor, key)} uses plain http:// ({url}): keys and personal "
                "data would cross the network unencrypted.",
                "Use https://.",
            )
        return url


def parse(
    vendor: str, raw: Any
) -> tuple[VendorConfig | None, list[CheckMessage]]:
    """Read one vendor block. Returns the config (None when there is an error) and the
    problems found (errors and warnings)."""
    if not isinstance(raw, Mapping):
        return None, [
            CheckMessage(
                "error",
                "persona_cdp.E001",
                f'PERSONA["PLUGINS"]["{vendor}"] must be a dict of settings, got '
                f"{type(raw).__name__}.",
                hint=f'e.g. PERSONA["PLUGINS"]["{vendor}"] = {{"write_key": "..."}}',
            )
        ]
    r = _Reader(vendor, raw)
    unknown = sorted(str(k) for k in raw if k not in KNOWN_KEYS[vendor])
    if unknown:
        r.warn(
            "persona_cdp.W001",
            f'PERSONA["PLUGINS"]["{vendor}"] has unknown key(s): {", ".join(unknown)}.',
            "Known keys: " + ", ".join(sorted(KNOWN_KEYS[vendor])),
        )

    write_key = r.string("write_key")
    if not write_key:
        where = (
            "Segment: Connections > Sources > your HTTP API source > Settings > API Keys"
            if vendor == SEGMENT
            else "RudderStack: Collect > Sources > your source > Setup (Write key)"
        )
        r.error(
            "persona_cdp.E002",
            f"{_setting(vendor, 'write_key')} is missing: nothing can be sent to "
            f"{'Segment' if vendor == SEGMENT else 'RudderStack'}.",
            f"Set it to the source's write key ({where}), or remove "
            f'PERSONA["PLUGINS"]["{vendor}"] to turn the adapter off.',
        )

    if vendor == SEGMENT:
        host = r.url("host", DEFAULT_HOSTS[SEGMENT], what="the tracking API host")
    else:
        key = "data_plane_url" if "data_plane_url" in raw or "host" not in raw else "host"
        if raw.get(key) is None:
            r.error(
                "persona_cdp.E004",
                f"{_setting(vendor, 'data_plane_url')} is missing: RudderStack has no default "
                "host, every workspace has its own data plane.",
                "Copy the Data Plane URL from the RudderStack dashboard (Connections), e.g. "
                "'https://yourcompany.dataplane.rudderstack.com'.",
            )
            host = ""
        else:
            host = r.url(key, None, what="the data plane URL")

    timeout = r.number("timeout", 10.0, low=0.01, high=300)
    connect_timeout = r.number("connect_timeout", min(3.05, timeout), low=0.01, high=300)
    max_batch = int(r.number("max_batch", 500, low=1, high=MAX_BATCH_EVENTS, integer=True))
    max_message = int(
        r.number("max_message_bytes", MAX_MESSAGE_BYTES, low=1024, high=4_000_000, integer=True)
    )
    max_body = int(
        r.number("max_batch_bytes", MAX_BATCH_BYTES, low=max_message, high=4_000_000, integer=True)
    )
    breaker_threshold = int(r.number("breaker_threshold", 5, low=1, high=1000, integer=True))
    breaker_cooldown = r.number("breaker_cooldown", 30.0, low=0.0, high=86_400)
    max_inline_wait = r.number("max_inline_wait", 2.0, low=0.0, high=60)
    gzip = bool(raw.get("gzip", False))

    purposes: tuple[str, ...] = ("analytics", "sharing")
    raw_purposes = raw.get("purposes")
    if raw_purposes is not None:
        if (
            not isinstance(raw_purposes, (list, tuple))
            or not all(isinstance(p, str) and p for p in raw_purposes)
            or "analytics" not in raw_purposes
        ):
            r.error(
                "persona_cdp.E007",
                f"{_setting(vendor, 'purposes')} must be a list of consent purposes that "
                f"includes 'analytics', got {raw_purposes!r}.",
                "The default is ['analytics', 'sharing']: only visitors who agreed to both "
                "analytics and sharing with third parties are forwarded.",
            )
        else:
            purposes = tuple(dict.fromkeys(raw_purposes))

    integrations: dict[str, tuple[str, ...]] = {}
    raw_integrations = raw.get("integrations")
    if raw_integrations is not None:
        if not isinstance(raw_integrations, Mapping) or not all(
            isinstance(p, str)
            and isinstance(names, (list, tuple))
            and all(isinstance(n, str) and n for n in names)
            for p, names in raw_integrations.items()
        ):
            r.error(
                "persona_cdp.E008",
                f"{_setting(vendor, 'integrations')} must map a consent purpose to a list of "
                f"destination names, got {raw_integrations!r}.",
                "e.g. {'marketing': ['Braze', 'Customer.io'], 'personalization': ['Optimizely']}"
                " (names exactly as the destination is called in the CDP, case-sensitive)",
            )
        else:
            integrations = {p: tuple(names) for p, names in raw_integrations.items()}

    consent_lookup = raw.get("consent_lookup")
    if consent_lookup is not None and not callable(consent_lookup):
        r.error(
            "persona_cdp.E008",
            f"{_setting(vendor, 'consent_lookup')} must be a callable "
            "(profile_id, purposes) -> {purpose: bool}.",
            "Pass the function itself, not its dotted path.",
        )
        consent_lookup = None

    profile = _profile_config(r) if vendor == SEGMENT else None
    erase = _erase_config(r, vendor)
    if erase is None and not r.errors:
        token_key = "public_api_token" if vendor == SEGMENT else "api_token"
        r.warn(
            "persona_cdp.W003",
            f"{_setting(vendor, token_key)} is not set: erasing a person (persona_erase) will "
            f"not ask {'Segment' if vendor == SEGMENT else 'RudderStack'} to delete the data "
            "already forwarded.",
            "Set a token allowed to create deletion regulations, or delete people in the "
            "vendor's app yourself (persona_erase reports what it could not do).",
        )

    if r.errors:
        return None, r.errors + r.warnings
    config = VendorConfig(
        vendor=vendor,
        write_key=write_key,
        host=host,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_batch=max_batch,
        max_message_bytes=max_message,
        max_batch_bytes=max_body,
        gzip=gzip,
        purposes=purposes,
        integrations=integrations,
        breaker_threshold=breaker_threshold,
        breaker_cooldown=breaker_cooldown,
        max_inline_wait=max_inline_wait,
        consent_lookup=consent_lookup,
        profile=profile,
        erase=erase,
    )
    return config, r.warnings


def _profile_config(r: _Reader) -> ProfileApiConfig | None:
    space = r.string("profile_space_id")
    token = r.string("profile_token")
    if not space and not token:
        return None
    if not space or not token:
        missing = "profile_space_id" if not space else "profile_token"
        r.error(
            "persona_cdp.E006",
            f"{_setting(r.vendor, missing)} is missing: the Profile API needs both the space id "
            "and an access token.",
            "Segment: Unify > Unify settings > API access (space id and a token), or remove "
            "both keys to turn profile read-through off.",
        )
        return None
    host = r.url("profile_host", DEFAULT_PROFILE_HOST, what="the Profile API host")
    ttl = r.number("profile_ttl", 300.0, low=1, high=86_400)
    return ProfileApiConfig(
        space_id=space,
        token=token,
        host=host,
        budget=r.number("profile_budget_ms", 50, low=1, high=10_000, scale=0.001),
        ttl=ttl,
        refresh_after=r.number("profile_refresh_after", min(60.0, ttl), low=0, high=ttl),
        not_found_ttl=r.number("profile_not_found_ttl", min(60.0, ttl), low=0, high=ttl),
        failure_backoff=r.number("profile_failure_backoff", 5.0, low=0, high=3600),
        timeout=r.number("profile_timeout", 2.0, low=0.01, high=60),
        workers=int(r.number("profile_workers", 4, low=1, high=64, integer=True)),
        limit=int(r.number("profile_limit", 200, low=1, high=200, integer=True)),
        audiences=bool(r.raw.get("profile_audiences", True)),
        max_entries=int(r.number("profile_max_entries", 10_000, low=1, high=10_000_000,
                                 integer=True)),
    )


def _erase_config(r: _Reader, vendor: str) -> EraseConfig | None:
    token_key, host_key = (
        ("public_api_token", "public_api_host") if vendor == SEGMENT else ("api_token", "api_host")
    )
    token = r.string(token_key)
    if not token:
        return None
    host = r.url(host_key, DEFAULT_ERASE_HOSTS[vendor], what="the deletion API host")
    regulation = r.string("erase_regulation", DEFAULT_REGULATION[vendor])
    if regulation not in REGULATIONS[vendor]:
        r.error(
            "persona_cdp.E005",
            f"{_setting(vendor, 'erase_regulation')} is {regulation!r}.",
            "Use one of: " + ", ".join(REGULATIONS[vendor]),
        )
    destination_ids: tuple[str, ...] = ()
    if vendor == RUDDERSTACK:
        raw_ids = r.raw.get("erase_destination_ids", [])
        if not isinstance(raw_ids, (list, tuple)) or not all(
            isinstance(i, str) and i for i in raw_ids
        ):
            r.error(
                "persona_cdp.E005",
                f"{_setting(vendor, 'erase_destination_ids')} must be a list of destination ids.",
                "Copy them from the RudderStack dashboard or GET /v2/destinations.",
            )
        else:
            destination_ids = tuple(raw_ids)
    return EraseConfig(
        token=token,
        host=host,
        regulation=regulation,
        destination_ids=destination_ids,
        timeout=r.number("erase_timeout", 10.0, low=0.01, high=300),
    )
