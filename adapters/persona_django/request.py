"""``request.persona``: the SDK as one request sees it.

Created by :class:`~persona_django.middleware.PersonaMiddleware`. Everything is lazy: a
request that personalizes nothing never loads a profile or builds a context. Decisions are
memoized per slot name, so a slot used twice on a page decides once.
"""

from __future__ import annotations

import logging
import secrets
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.http import HttpRequest

from persona_sdk import Decision, Identity, IngestResult, Persona, Profile, RequestInfo, Slot
from persona_sdk.errors import PersonaError
from persona_sdk.rules.subject import Subject

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["COOKIE_SALT", "RequestPersona", "request_info"]

log = logging.getLogger("persona_django")

COOKIE_SALT = "persona_django.visitor"


def request_info(request: HttpRequest, *, now: float | None = None) -> RequestInfo:
    """A :class:`RequestInfo` for the core, from a Django request."""
    user = getattr(request, "user", None)
    kwargs: dict[str, Any] = {}
    if now is not None:
        kwargs["now"] = now
    return RequestInfo(
        path=request.path,
        method=request.method or "GET",
        query={k: request.GET.getlist(k) for k in request.GET},
        headers=dict(request.headers),
        remote_addr=request.META.get("REMOTE_ADDR"),
        authenticated=bool(user is not None and user.is_authenticated),
        **kwargs,
    )


class RequestPersona:
    """Per-request state: who the visitor is, their profile, context and decisions."""

    def __init__(self, request: HttpRequest, persona: Persona, config: Mapping[str, Any]) -> None:
        self.request = request
        self.persona = persona
        self.config = config
        self.decisions: dict[str, Decision] = {}
        #: a slot was rendered server-side for this visitor: the response must be private
        self.personalized = False
        #: the page used edge mode (variants inert, decided by the browser)
        self.edge = False
        #: the visitor cookie must be (re)written on the response
        self.set_cookie = False
        #: the cookie was present but forged or garbled
        self.bad_cookie = False
        #: preview (editors): decisions forced, nothing recorded
        self.preview: dict[str, str] | None = None
        self.visitor_id = self._read_cookie()
        self.gpc = request.headers.get("Sec-GPC", "").strip() == "1"

    # -- identity --------------------------------------------------------------------------
    def _read_cookie(self) -> str | None:
        name = self.config["COOKIE_NAME"]
        if name not in self.request.COOKIES:
            return None
        try:
            value = self.request.get_signed_cookie(
                name, salt=COOKIE_SALT, max_age=self.config["COOKIE_AGE"]
            )
            Identity.anonymous(value)
            return value
        except (signing.BadSignature, PersonaError, ValueError):
            self.bad_cookie = True
            log.warning(
                "persona: ignored a forged or garbled visitor cookie; treating as a new visitor"
            )
            return None

    def ensure_visitor_id(self) -> str:
        """The visitor's opaque id, creating one (and the cookie) when there is none."""
        if self.visitor_id is None:
            self.visitor_id = secrets.token_hex(16)
            self.set_cookie = True
            self.__dict__.pop("profile", None)
        return self.visitor_id

    @property
    def user_id(self) -> str | None:
        user = getattr(self.request, "user", None)
        if user is not None and user.is_authenticated:
            return str(user.pk)
        return None

    @property
    def identities(self) -> list[Identity]:
        """Who this request may be, most specific first."""
        ids = []
        if self.user_id is not None:
            ids.append(Identity.user(self.user_id))
        if self.visitor_id is not None:
            ids.append(Identity.anonymous(self.visitor_id))
        return ids

    @property
    def identity(self) -> Identity | None:
        ids = self.identities
        return ids[0] if ids else None

    # -- lazily loaded state ---------------------------------------------------------------
    @cached_property
    def profile(self) -> Profile | None:
        for identity in self.identities:
            profile = self.persona.profile_for(identity)
            if profile is not None:
                if self.persona.registry.sources:
                    # read-through traits (a CDP's profile API), within their time budget;
                    # merged in memory for this request's decisions, never saved
                    self.persona.refresh(profile)
                return profile
        return None

    @cached_property
    def info(self) -> RequestInfo:
        return request_info(self.request)

    @cached_property
    def context(self) -> dict[str, Any]:
        return self.persona.context(self.info)

    @cached_property
    def subject(self) -> Subject:
        return self.persona.subject(self.profile, self.context, now=self.info.now)

    def refresh(self) -> None:
        """Forget the loaded profile and decisions (after this request changed the profile)."""
        for name in ("profile", "subject"):
            self.__dict__.pop(name, None)
        self.decisions.clear()

    def may(self, purpose: str) -> bool:
        return self.persona.may(self.profile, purpose, gpc=self.gpc)

    # -- decisions -------------------------------------------------------------------------
    def decide(self, slot: Slot | str, *, edge: bool = False) -> Decision:
        """Decide ``slot`` once per request. Never raises: an unknown slot name, or anything
        unexpected, yields a default decision with reason ``error`` (and a log line)."""
        name = slot if isinstance(slot, str) else slot.name
        cached = self.decisions.get(name)
        if cached is not None:
            return cached
        forced = self.preview.get(name) if self.preview is not None else None
        if forced is not None and (not isinstance(slot, str) or name in self.persona.slots):
            decision = self._forced(slot, forced)
        else:
            decision = self.persona.decide_or_default(slot, self.subject)
        self.decisions[name] = decision
        if edge:
            self.edge = True
        else:
            self.personalized = True
        return decision

    def _forced(self, slot: Slot | str, variant: str) -> Decision:
        s = self.persona.slot(slot) if isinstance(slot, str) else slot
        default = variant == s.default
        return Decision(
            s.name,
            variant,
            "preview",
            "preview",
            default,
            explainer=lambda: f"preview: forced to {variant}",
        )

    # -- events ----------------------------------------------------------------------------
    def track(
        self, event: str, properties: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> IngestResult | None:
        """Record an event for this visitor now (the rest of the request sees it).

        Without an id (opt-in mode before consent) nothing is recorded and None is returned.
        """
        ids = self._event_ids()
        if ids is None:
            return None
        result = self.persona.track(
            event,
            properties,
            gpc=self.gpc,
            context=kwargs.pop("context", None) or {"page": {"path": self.request.path}},
            **ids,
            **kwargs,
        )
        self.refresh()
        return result

    def page(self) -> IngestResult | None:
        ids = self._event_ids()
        if ids is None:
            return None
        info = self.info
        props = {"path": info.path}
        referrer = info.headers.get("referer")
        if referrer:
            props["referrer"] = referrer[:500]
        result = self.persona.page(
            properties=props, gpc=self.gpc, context=self._event_context(), **ids
        )
        self.refresh()
        return result

    def _event_context(self) -> dict[str, Any]:
        ctx = {
            k: v
            for k, v in self.context.items()
            if k in ("utm", "campaign", "device", "country", "referrer_type")
        }
        ctx["page"] = {"path": self.request.path}
        return ctx

    def _event_ids(self) -> dict[str, str] | None:
        ids: dict[str, str] = {}
        if self.user_id is not None:
            ids["user_id"] = self.user_id
        if self.visitor_id is not None:
            ids["anonymous_id"] = self.visitor_id
        return ids or None
