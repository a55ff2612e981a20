"""Country enricher: the visitor's country from CDN headers or a local GeoIP database.

Adds to the request context:

``country``
    Upper-case ISO 3166-1 alpha-2 code (``"FR"``). Taken from the first header present
    with a valid code, in this order by default: ``CF-IPCountry`` (Cloudflare),
    ``CloudFront-Viewer-Country`` (Amazon CloudFront), ``X-AppEngine-Country`` (Google App
    Engine), ``Fastly-Geo-Country`` (Fastly, if you set it in VCL). Values that are not two
    letters, and the "unknown" codes ``XX`` and ``ZZ``, are ignored. Failing that, and when
    a GeoIP database is configured, from a lookup of the client address. The key is left
    out when the country is not known (private address, address not in the database...).
``tor``
    ``True`` when Cloudflare reports a Tor exit node (``CF-IPCountry: T1``); no country is
    then derived from any other source. Left out otherwise.
``region``
    The subdivision code (ISO 3166-2 without the country prefix, e.g. ``"WA"``) from
    ``CloudFront-Viewer-Country-Region``, or from a GeoIP2/GeoLite2 *City* database. Only
    set together with ``country``.

Settings (``PLUGINS["country"]``):

``headers``
    Header names to trust, in order (default the four above). Any client can send these
    headers: list only the one your CDN sets (and strips from incoming requests), or
    ``[]`` to use GeoIP only.
``geoip_database``
    Path to a MaxMind GeoIP2/GeoLite2 Country or City ``.mmdb`` file. Needs the optional
    ``geoip2`` package: ``pip install persona-sdk[geoip]``. The file is opened when the SDK
    is configured; a missing package or an unreadable file raises ``ConfigError`` then.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from os import PathLike, fspath
from typing import Any

from persona_sdk.context import RequestInfo
from persona_sdk.errors import ConfigError
from persona_sdk.hookspecs import hookimpl

__all__ = ["enrich", "persona_configure", "persona_register_enrichers"]

KEY = "country"
ORDER = 30
DEFAULT_HEADERS = (
    "cf-ipcountry",
    "cloudfront-viewer-country",
    "x-appengine-country",
    "fastly-geo-country",
)
REGION_HEADER = "cloudfront-viewer-country-region"
TOR_CODE = "T1"
UNKNOWN_CODES = frozenset({"XX", "ZZ"})
GEOIP_HINT = "pip install persona-sdk[geoip]"

_CODE_RE = re.compile(r"^[A-Z]{2}$")
_REGION_RE = re.compile(r"^[A-Z0-9]{1,3}$")


class _Config:
    __slots__ = ("geoip_errors", "headers", "reader", "reader_kind")

    def __init__(
        self,
        headers: tuple[str, ...] = DEFAULT_HEADERS,
        reader: Any = None,
        reader_kind: str = "",
        geoip_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.headers = headers
        self.reader = reader
        self.reader_kind = reader_kind  # "country" or "city": the geoip2 Reader method
        self.geoip_errors = geoip_errors


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


def _open_geoip(path: Any) -> tuple[Any, str, tuple[type[BaseException], ...]]:
    where = f"PLUGINS[{KEY!r}]['geoip_database']"
    if not isinstance(path, (str, PathLike)) or not fspath(path):
        raise ConfigError(f"{where} must be the path of a .mmdb file, got {path!r}")
    try:
        # Imported lazily: geoip2 is an optional dependency (extra "geoip").
        database = importlib.import_module("geoip2.database")
        errors = importlib.import_module("geoip2.errors")
    except ImportError as exc:
        raise ConfigError(
            f"{where} is set but the geoip2 package is not installed; hint: {GEOIP_HINT}"
        ) from exc
    try:
        reader = database.Reader(fspath(path))
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: InvalidDatabaseError
        raise ConfigError(
            f"{where}: cannot open {fspath(path)!r} as a MaxMind database: {exc}"
        ) from exc
    db_type = str(reader.metadata().database_type)
    if "City" in db_type:
        kind = "city"
    elif "Country" in db_type:
        kind = "country"
    else:
        reader.close()
        raise ConfigError(
            f"{where}: {fspath(path)!r} is a {db_type!r} database; "
            "a GeoIP2/GeoLite2 Country or City database is needed"
        )
    return reader, kind, (errors.GeoIP2Error, ValueError)


@hookimpl
def persona_configure(settings: Mapping[str, Any]) -> None:
    """Read ``PLUGINS["country"]`` (see the module docstring)."""
    global _config
    section = _section(settings, {"headers", "geoip_database"})
    headers: Any = section.get("headers", DEFAULT_HEADERS)
    if isinstance(headers, str) or not all(
        isinstance(name, str) and name.strip() for name in headers
    ):
        raise ConfigError(
            f"PLUGINS[{KEY!r}]['headers'] must be a list of header names, got {headers!r}"
        )
    path = section.get("geoip_database")
    reader, kind, errors = _open_geoip(path) if path is not None else (None, "", ())
    _config = _Config(
        tuple(name.strip().lower() for name in headers),
        reader=reader,
        reader_kind=kind,
        geoip_errors=errors,
    )


def _code(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().upper()
    if _CODE_RE.match(value) and value not in UNKNOWN_CODES:
        return value
    return None


def _public_address(remote_addr: str | None) -> str | None:
    if not remote_addr:
        return None
    try:
        address = ipaddress.ip_address(remote_addr.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global:
        return None
    return str(address)


def _geoip(config: _Config, remote_addr: str | None) -> tuple[str | None, str | None]:
    address = _public_address(remote_addr)
    if address is None:
        return None, None
    try:
        if config.reader_kind == "city":
            response = config.reader.city(address)
            region = response.subdivisions.most_specific.iso_code
        else:
            response = config.reader.country(address)
            region = None
    except config.geoip_errors:  # not in the database, closed reader
        return None, None
    code = _code(response.country.iso_code)
    return code, (_region(region) if code else None)


def _region(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().upper()
    return value if _REGION_RE.match(value) else None


def enrich(request: RequestInfo, context: dict[str, Any]) -> None:
    """Add ``country`` (and ``region``, ``tor``) when known."""
    config = _config
    headers = request.headers
    country: str | None = None
    region: str | None = None
    for name in config.headers:
        value = headers.get(name)
        if value is None:
            continue
        if value.strip().upper() == TOR_CODE:
            context["tor"] = True
            return
        country = _code(value)
        if country is not None:
            region = _region(headers.get(REGION_HEADER))
            break
    if country is None and config.reader is not None:
        country, region = _geoip(config, request.remote_addr)
    if country is not None:
        context["country"] = country
        if region is not None:
            context["region"] = region


@hookimpl
def persona_register_enrichers(register: Callable[..., None]) -> None:
    register(
        "country",
        enrich,
        order=ORDER,
        doc="Visitor country (ISO alpha-2) from CDN headers or a GeoIP database",
    )
