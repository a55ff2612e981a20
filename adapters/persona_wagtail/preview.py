"""Previewing a page as each audience sees it.

Add :class:`PersonalizedPageMixin` to a page model (before ``Page``)::

    class LandingPage(PersonalizedPageMixin, Page):
        body = StreamField([... ("personalized", PersonalizedBlock(child_blocks=[...]))])

Its preview modes (the "Preview mode" menu of Wagtail's preview panel) are:

``""`` — *Everyone else*: every personalized block shows its default.
``segment:<name>`` — one per segment (``PERSONA_WAGTAIL["PREVIEW_SEGMENTS"]`` limits them):
    each block shows the first variant (in priority order) targeted at that segment —
    by ``segment`` or by a rule that is just ``{"$segment": name}`` — else its default. Slots
    defined in ``PERSONA["DEFINITIONS"]`` used by ``{% personalize %}`` are forced the same way.
``variant:<n>`` — the n-th variant of every block (experiment arms, untargeted variants).
``profile`` — *As a given profile*: everything decided for a stored profile (its consent,
    experiments and segments), with the editor's request context. The profile is the one
    chosen in the side-by-side view (kept in the editor's session) or given to
    ``make_preview_request`` as ``extra_request_attrs={"persona_preview_profile": id}``;
    ``id`` is a profile id, ``user:<user id>`` or ``email:<address>``.

The side-by-side view (``/cms/persona/pages/<id>/compare/``) shows several of these at once.

A preview never writes: ``request.persona.preview`` is set, so the middleware records no
page view and no exposure, and a profile being previewed is only read.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from persona_sdk import Identity, Persona, Profile, Slot
from persona_sdk.errors import PersonaError

from .blocks import PREVIEW_ATTR
from .conf import get_config
from .registry import ensure_current

__all__ = ["PROFILE_SESSION_KEY", "PersonalizedPageMixin", "PreviewSpec", "forced_variant"]

log = logging.getLogger("persona_wagtail")

#: where the side-by-side view keeps the profile chosen for "As a given profile"
PROFILE_SESSION_KEY = "persona_wagtail.preview_profile"
PROFILE_ATTR = "persona_preview_profile"


def forced_variant(slot: Slot, segment: str | None) -> str:
    """The variant a preview as ``segment`` shows: the first, in decision order, targeted at
    it; else the default."""
    if segment is not None:
        plain = {"$segment": segment}
        for variant in slot.ordered:
            if variant.segment == segment or (
                variant.rule is not None and dict(variant.rule.spec) == plain
            ):
                return variant.key
    return slot.default


@attrs.frozen
class PreviewSpec:
    """What a preview shows: ``kind`` is ``default``, ``segment``, ``variant`` or ``profile``."""

    kind: str = "default"
    segment: str | None = None
    position: int = 0
    profile_id: str | None = None

    @classmethod
    def from_mode(cls, mode: str | None, profile_id: str | None = None) -> PreviewSpec:
        mode = mode or ""
        if mode.startswith("segment:"):
            return cls("segment", segment=mode.split(":", 1)[1])
        if mode.startswith("variant:"):
            try:
                return cls("variant", position=max(1, int(mode.split(":", 1)[1])))
            except ValueError:
                return cls()
        if mode == "profile":
            return cls("profile", profile_id=profile_id or None)
        return cls()

    @property
    def mode(self) -> str:
        if self.kind == "segment":
            return f"segment:{self.segment}"
        if self.kind == "variant":
            return f"variant:{self.position}"
        return "profile" if self.kind == "profile" else ""

    @property
    def label(self) -> str:
        if self.kind == "segment":
            return f"Segment: {self.segment}"
        if self.kind == "variant":
            return f"Variant {self.position} of each block"
        if self.kind == "profile":
            return f"As profile {self.profile_id}" if self.profile_id else "As a given profile"
        return "Everyone else (default content)"

    def force(self, slot: Slot) -> str | None:
        """The variant key to force for ``slot``, or None to decide for real (profile)."""
        if self.kind == "profile":
            return None
        if self.kind == "variant":
            ordered = list(slot.variants)
            return ordered[self.position - 1].key if self.position <= len(ordered) else slot.default
        return forced_variant(slot, self.segment if self.kind == "segment" else None)


def find_profile(persona: Persona, ref: str) -> Profile | None:
    """A stored profile by id, ``user:<id>`` or ``email:<address>`` (read only)."""
    ref = (ref or "").strip()
    if not ref:
        return None
    try:
        if ref.startswith("user:"):
            return persona.profile_for(Identity.user(ref[5:]))
        if ref.startswith("email:"):
            return persona.profile_for(Identity.email(ref[6:]))
        if ref.startswith("anonymous:"):
            return persona.profile_for(Identity.anonymous(ref[10:]))
        return persona.store.load(ref)
    except (PersonaError, ValueError):
        return None


def start_preview(request: Any, spec: PreviewSpec) -> None:
    """Set ``request`` up for a preview: nothing recorded, decisions forced or made for the
    chosen profile."""
    setattr(request, PREVIEW_ATTR, spec)
    rp = getattr(request, "persona", None)
    if rp is None:
        return
    if rp.preview is None:
        rp.preview = {}
    persona = ensure_current(rp=rp)
    if spec.kind == "profile":
        profile = find_profile(persona, spec.profile_id or "")
        if profile is None and spec.profile_id:
            log.info("persona: preview as profile %r: no such profile", spec.profile_id)
        # read-only stand-ins for this request: the middleware records nothing in a preview
        rp.__dict__["profile"] = profile
        rp.__dict__["subject"] = persona.subject(profile, rp.context, now=rp.info.now)
        rp.decisions.clear()
        return
    for name, slot in persona.slots.items():
        forced = spec.force(slot)
        if forced is not None:
            rp.preview[name] = forced


def record_exposures(rp: Any) -> int:
    """Record the exposures of this request's experiment decisions now, right after the page
    is rendered, and hand them over (removed from ``rp.decisions``).

    ``PersonaMiddleware`` records them after the response, but it records the page view
    first, and that refreshes the request's state (``rp.refresh()`` clears ``decisions``), so
    with ``RECORD_PAGE_VIEWS`` on (the default) they would be lost. Doing it here is what the
    middleware would do (the same call, consent checks included); removing them afterwards
    keeps a fixed middleware from recording them twice. Nothing is recorded for a preview.
    """
    if rp.preview is not None:
        return 0
    recorded = 0
    for name, decision in list(rp.decisions.items()):
        if decision.assignment is None:
            continue
        profile = rp.profile
        if profile is not None:
            try:
                if rp.persona.record_exposure(profile.id, decision, channel="web", gpc=rp.gpc):
                    recorded += 1
            except Exception:
                log.exception("persona: recording the exposure for %r failed", name)
        del rp.decisions[name]
    return recorded


class PersonalizedPageMixin:
    """Preview modes per segment, per variant position and as a given profile (see the
    module doc). Put it before ``Page`` in the bases."""

    #: how many "Variant n of each block" modes to offer
    persona_preview_variants = 3

    @property
    def preview_modes(self) -> list[tuple[str, str]]:
        modes = [("", "Everyone else (default content)")]
        try:
            persona = ensure_current()
            wanted = get_config()["PREVIEW_SEGMENTS"]
            names = persona.segments.names()
            if wanted is not None:
                names = [n for n in names if n in set(wanted)]
            modes += [(f"segment:{n}", f"Segment: {n}") for n in names]
        except Exception:
            log.exception("persona: listing the segments for preview modes failed")
        modes += [
            (f"variant:{n}", f"Variant {n} of each block")
            for n in range(1, self.persona_preview_variants + 1)
        ]
        modes.append(("profile", "As a given profile (choose it in “Compare audiences”)"))
        return modes

    def persona_preview_spec(self, request: Any, mode_name: str) -> PreviewSpec:
        profile_id = getattr(request, PROFILE_ATTR, None)
        if profile_id is None and mode_name == "profile":
            session = getattr(request, "session", None)
            if session is not None:
                profile_id = session.get(PROFILE_SESSION_KEY)
        return PreviewSpec.from_mode(mode_name, profile_id)

    def serve(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().serve(request, *args, **kwargs)  # type: ignore[misc]
        rp = getattr(request, "persona", None)
        if rp is not None and hasattr(response, "add_post_render_callback"):

            def rendered(_response: Any) -> None:  # (a returned value would replace it)
                record_exposures(rp)

            response.add_post_render_callback(rendered)
        return response

    def serve_preview(self, request: Any, mode_name: str) -> Any:
        start_preview(request, self.persona_preview_spec(request, mode_name))
        return super().serve_preview(request, mode_name)  # type: ignore[misc]
