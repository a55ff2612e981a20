"""persona-sdk for Django: add ``"persona_django"`` to ``INSTALLED_APPS`` and
``persona_django.middleware.PersonaMiddleware`` to ``MIDDLEWARE``.

Server-side API::

    from persona_django import track, identify

    track(request, "Order Completed", {"revenue": 42.0})
    identify(request, traits={"plan": "pro"}, email="ada@example.com")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest

    from persona_sdk import IngestResult

__all__ = ["identify", "track"]


def _rp(request: HttpRequest) -> Any:
    rp = getattr(request, "persona", None)
    if rp is None:
        raise RuntimeError(
            "request.persona is missing: add "
            "persona_django.middleware.PersonaMiddleware to MIDDLEWARE"
        )
    return rp


def track(
    request: HttpRequest, event: str, properties: Mapping[str, Any] | None = None
) -> IngestResult | None:
    """Record ``event`` for this request's visitor now: the rest of this request (and every
    later one) sees the updated profile. Returns None when the visitor has no id yet (opt-in
    mode before consent) — nothing is recorded then. Invalid input raises ``EventError``."""
    result: IngestResult | None = _rp(request).track(event, properties)
    return result


def identify(
    request: HttpRequest,
    *,
    traits: Mapping[str, Any] | None = None,
    email: str | None = None,
) -> IngestResult | None:
    """Attach traits (and an email, kept as a hashed identity) to this visitor's profile."""
    rp = _rp(request)
    ids = rp._event_ids()
    if ids is None:
        return None
    result: IngestResult = rp.persona.identify(traits=traits, email=email, gpc=rp.gpc, **ids)
    rp.refresh()
    return result
