"""The one middleware a site adds (after ``AuthenticationMiddleware``)::

MIDDLEWARE = [
    ...,
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "persona_django.middleware.PersonaMiddleware",
    ...,
]
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers

from .conf import get_config
from .request import COOKIE_SALT, RequestPersona
from .runtime import get_persona

__all__ = ["PersonaMiddleware"]

log = logging.getLogger("persona_django")


class PersonaMiddleware:
    """Attaches ``request.persona``; after the view: writes the visitor cookie, records the
    page view, records exposures, and marks personalized responses private."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        config = get_config()
        rp = RequestPersona(request, get_persona(), config)
        request.persona = rp  # type: ignore[attr-defined]
        if rp.visitor_id is None and config["CONSENT_MODE"] == "opt-out":
            rp.ensure_visitor_id()
        response = self.get_response(request)
        try:
            self._after(request, rp, response, config)
        except Exception:
            log.exception("persona: post-response work failed; the response is sent unchanged")
        return response

    def _after(
        self, request: HttpRequest, rp: RequestPersona, response: HttpResponse, config: dict
    ) -> None:  # type: ignore[type-arg]
        if rp.personalized:
            patch_cache_control(response, private=True)
            patch_vary_headers(response, ("Cookie",))
        if rp.preview is not None:
            return
        # An edge-only page must stay identical and cacheable for everyone: no Set-Cookie
        # and no Vary: Cookie caused by us. A visitor without a cookie is established by the
        # page's decide request instead (which records its own visit).
        edge_only = rp.edge and not rp.personalized
        if edge_only and rp.set_cookie:
            return
        session = getattr(request, "session", None)
        session_was_accessed = getattr(session, "accessed", True)
        # taken before the page view: recording it refreshes the request's state
        decided = list(rp.decisions.values())
        profile_id = rp.profile.id if decided and rp.profile is not None else None
        if (
            config["RECORD_PAGE_VIEWS"]
            and request.method == "GET"
            and response.status_code == 200
            and response.get("Content-Type", "").startswith("text/html")
            and not getattr(response, "streaming", False)
            and rp.visitor_id is not None
        ):
            try:
                rp.page()
            except Exception:
                log.exception("persona: recording the page view failed")
            if edge_only and session is not None and not session_was_accessed:
                session.accessed = False  # we read request.user; the HTML does not vary
        if profile_id is None and decided and rp.profile is not None:
            profile_id = rp.profile.id  # the page view just created the profile
        for decision in decided:
            if decision.assignment is not None and profile_id is not None:
                try:
                    rp.persona.record_exposure(profile_id, decision, channel="web", gpc=rp.gpc)
                except Exception:
                    log.exception("persona: recording the exposure for %r failed", decision.slot)
        name = config["COOKIE_NAME"]
        if rp.set_cookie and rp.visitor_id is not None:
            response.set_signed_cookie(
                name,
                rp.visitor_id,
                salt=COOKIE_SALT,
                max_age=config["COOKIE_AGE"],
                secure=config["COOKIE_SECURE"],
                httponly=True,
                samesite=config["COOKIE_SAMESITE"],
            )
        elif rp.bad_cookie and rp.visitor_id is None:
            response.delete_cookie(name, samesite=config["COOKIE_SAMESITE"])
