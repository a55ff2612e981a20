"""The request context rules read under ``context.*``, built by enricher plugins.

The core knows nothing of Django: an adapter turns its request into a :class:`RequestInfo`
(method, path, query, headers, client address, whether the user is logged in, the time),
and :func:`build_context` runs every registered enricher over it. Each enricher adds keys
to a plain dict, e.g. ``utm`` and ``campaign`` (campaign plugin), ``device`` (device
plugin), ``country`` (country plugin), ``hour`` and ``weekday`` (local-time plugin).

The core itself sets: ``path``, ``method``, ``authenticated``, ``gpc`` (Global Privacy
Control), ``channel`` (``web``, ``email``…) and ``now``. An enricher that raises is logged
and skipped: the page never breaks because of one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs

import attrs

from .clock import now as _now

__all__ = ["Enricher", "RegisteredEnricher", "RequestInfo", "build_context"]

log = logging.getLogger("persona_sdk.context")


def _lower_keys(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    if not headers:
        return MappingProxyType({})
    return MappingProxyType({k.lower(): v for k, v in headers.items()})


def _query(value: Mapping[str, Any] | str | None) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if isinstance(value, str):
        parsed = parse_qs(value.lstrip("?"), keep_blank_values=True)
        return MappingProxyType({k: v[-1] for k, v in parsed.items()})
    out: dict[str, str] = {}
    for key, val in value.items():
        if isinstance(val, (list, tuple)):
            val = val[-1] if val else ""
        out[str(key)] = str(val)
    return MappingProxyType(out)


@attrs.frozen
class RequestInfo:
    """A web request as the core sees it. Build with :meth:`build` (or an adapter's
    ``from_request``). Header names are lower-case; query values are the last given."""

    path: str = "/"
    method: str = "GET"
    query: Mapping[str, str] = attrs.field(factory=dict, converter=_query)
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_keys)
    remote_addr: str | None = None
    authenticated: bool = False
    now: float = attrs.field(factory=_now)
    channel: str = "web"

    @classmethod
    def build(
        cls,
        path: str = "/",
        *,
        query: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> RequestInfo:
        """Convenience constructor; ``path`` may carry a query string (``/p?utm_source=x``)."""
        if "?" in path and query is None:
            path, _, query = path.partition("?")
        return cls(path=path, query=query or {}, headers=headers or {}, **kwargs)

    @property
    def gpc(self) -> bool:
        """Global Privacy Control: ``Sec-GPC: 1``."""
        return self.headers.get("sec-gpc", "").strip() == "1"


Enricher = Callable[[RequestInfo, dict[str, Any]], None]


@attrs.frozen
class RegisteredEnricher:
    name: str
    fn: Enricher
    order: int = 100
    doc: str = ""


def build_context(
    request: RequestInfo, enrichers: tuple[RegisteredEnricher, ...] | list[RegisteredEnricher]
) -> dict[str, Any]:
    """Run ``enrichers`` (already in order) over ``request`` and return the context dict."""
    context: dict[str, Any] = {
        "path": request.path,
        "method": request.method,
        "authenticated": request.authenticated,
        "gpc": request.gpc,
        "channel": request.channel,
        "now": request.now,
    }
    for enricher in enrichers:
        try:
            enricher.fn(request, context)
        except Exception:
            log.exception("context enricher %r failed; its keys are left out", enricher.name)
    return context
