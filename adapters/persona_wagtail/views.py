"""Admin views: the segment snippet, the rule check endpoint, side-by-side previews, reports.

Nothing here registers itself: :mod:`persona_wagtail.wagtail_hooks` wires it into the admin.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST
from wagtail.admin.panels import FieldPanel, ObjectList
from wagtail.admin.ui.tables import Column
from wagtail.models import Page, get_page_models
from wagtail.snippets.views.snippets import IndexView, SnippetViewSet

from persona_sdk.errors import PersonaError, RuleError

from .blocks import PersonalizedBlock, block_types_in, personalized_in_instance
from .forms import SegmentForm
from .models import Segment
from .preview import PROFILE_ATTR, PROFILE_SESSION_KEY, PersonalizedPageMixin, PreviewSpec
from .registry import count_matching, ensure_current, problems, segments_overview, validate_segment
from .report import block_reports
from .widgets import RuleBuilderWidget

__all__ = ["SegmentViewSet", "personalized_page_models", "urlpatterns"]

log = logging.getLogger("persona_wagtail")

MAX_RULE_BYTES = 64 * 1024
MAX_COMPARE = 6


# -- the segment snippet ---------------------------------------------------------------------
class StatusColumn(Column):
    """Whether the saved segment compiles (it may not after a plugin was removed)."""

    def get_value(self, instance: Segment) -> str:
        try:
            error = problems().get(instance.name)
        except Exception:
            log.exception("persona: checking the admin segments failed")
            return "Unknown (see the logs)"
        return f"Does not compile: {error}" if error is not None else "Active"


class SegmentIndexView(IndexView):
    """The segment listing, with the segments defined in code or files shown beside the
    editable ones (read-only)."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        try:
            context["code_segments"] = [s for s in segments_overview() if not s["editable"]]
        except PersonaError as exc:
            context["code_segments"] = []
            context["persona_error"] = str(exc)
        for s in context["code_segments"]:
            s["rule_json"] = json.dumps(s["rule"], indent=2, ensure_ascii=False)
        return context


class SegmentViewSet(SnippetViewSet):
    model = Segment
    icon = "group"
    menu_label = "Segments"
    menu_name = "persona-segments"
    menu_order = 250
    add_to_admin_menu = True
    url_prefix = "persona/segments"
    url_namespace = "persona_wagtail_segments"
    list_display = ["name", "description", StatusColumn("status", label="Status"), "updated_at"]
    index_view_class = SegmentIndexView
    index_template_name = "persona_wagtail/segments/index.html"
    edit_handler = ObjectList(
        [
            FieldPanel("name"),
            FieldPanel("description"),
            FieldPanel("rule", widget=RuleBuilderWidget()),
        ],
        base_form_class=SegmentForm,
    )


# -- the live rule check ---------------------------------------------------------------------
@require_POST
def check_rule(request: HttpRequest) -> JsonResponse:
    """Compile a rule on the server: ``{"rule": {...}, "name": "...", "pk": ...}`` →
    ``{"ok": true, "count": {...}}`` or ``{"ok": false, "error": "...", "where": "..."}``.

    The rule is data compiled by persona-sdk's own compiler; nothing is evaluated as code.
    With ``name`` (the segment form), cycles and clashes with other segments are checked
    too. ``count``: stored profiles that match (see ``registry.count_matching``)."""
    if len(request.body) > MAX_RULE_BYTES:
        return JsonResponse({"ok": False, "error": "The rule is too large."}, status=400)
    try:
        body = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return JsonResponse({"ok": False, "error": "The request is not JSON."}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("rule"), dict):
        return JsonResponse(
            {"ok": False, "error": 'A rule is a JSON object, e.g. {"traits.plan": "pro"}.'},
            status=400,
        )
    rule = body["rule"]
    persona = ensure_current()
    try:
        compiled = persona.compile_rule(rule, where="rule")
    except RuleError as exc:
        return JsonResponse({"ok": False, "error": str(exc), "where": exc.where})
    name = body.get("name")
    if isinstance(name, str) and name:
        pk = body.get("pk")
        errors = validate_segment(name, rule, pk=pk if pk not in ("", None) else None)
        if errors:
            field, messages = next(iter(errors.items()))
            return JsonResponse({"ok": False, "error": messages[0], "field": field})
    try:
        count = count_matching(compiled, persona)
    except Exception:
        log.exception("persona: counting the profiles that match a rule failed")
        count = None
    return JsonResponse({"ok": True, "count": count})


# -- pages that can hold personalized blocks -------------------------------------------------
@functools.lru_cache(maxsize=1)
def personalized_page_models() -> tuple[type[Page], ...]:
    """Page models with a StreamField in which a PersonalizedBlock can appear (block
    definitions are fixed when the models load, so this is worked out once)."""
    from wagtail.fields import StreamField

    found = []
    for model in get_page_models():
        for field in model._meta.get_fields():
            if field.model is model and isinstance(field, StreamField):
                if any(
                    isinstance(b, PersonalizedBlock) for b in block_types_in(field.stream_block)
                ):
                    found.append(model)
                    break
    return tuple(found)


def _page_for(request: HttpRequest, page_id: int) -> Page:
    page = get_object_or_404(Page, id=page_id).specific
    if not page.permissions_for_user(request.user).can_edit():
        raise PermissionDenied
    return page


# -- previews side by side -------------------------------------------------------------------
@require_GET
def compare(request: HttpRequest, page_id: int) -> TemplateResponse:
    """Several preview modes of a page next to each other (the latest revision)."""
    page = _page_for(request, page_id)
    if not isinstance(page, PersonalizedPageMixin):
        modes = [("", "Default"), ("profile", "As a given profile")]
    else:
        modes = list(page.preview_modes)
    known = {m for m, _ in modes}
    chosen = [m for m in request.GET.getlist("mode") if m in known][:MAX_COMPARE]
    if not chosen:
        chosen = [m for m, _ in modes if m == "" or m.startswith("segment:")][:3]
    profile = (request.GET.get("profile") or "").strip()
    if profile:
        request.session[PROFILE_SESSION_KEY] = profile
    elif "profile" in request.GET:
        request.session.pop(PROFILE_SESSION_KEY, None)
    else:
        profile = request.session.get(PROFILE_SESSION_KEY, "")
    frame_url = reverse("persona_wagtail:preview_frame", args=[page.id])
    frames = []
    for mode in chosen:
        query = {"mode": mode}
        if mode == "profile" and profile:
            query["profile"] = profile
        frames.append(
            {
                "mode": mode,
                "label": PreviewSpec.from_mode(mode, profile or None).label,
                "url": f"{frame_url}?{urlencode(query)}",
            }
        )
    return TemplateResponse(
        request,
        "persona_wagtail/compare.html",
        {
            "page": page,
            "modes": modes,
            "chosen": chosen,
            "profile": profile,
            "frames": frames,
            "report_url": reverse("persona_wagtail:page_report", args=[page.id]),
        },
    )


@require_GET
def preview_frame(request: HttpRequest, page_id: int) -> HttpResponse:
    """One preview (the page's latest revision, as Wagtail's preview shows it) in a mode."""
    page = _page_for(request, page_id)
    latest = page.get_latest_revision_as_object()
    mode = request.GET.get("mode", "")
    if mode not in {m for m, _ in latest.preview_modes}:
        raise Http404("no such preview mode")
    extra = {}
    profile = (request.GET.get("profile") or "").strip()
    if mode == "profile":
        extra[PROFILE_ATTR] = profile or request.session.get(PROFILE_SESSION_KEY, "")
    response = latest.make_preview_request(request, mode, extra_request_attrs=extra)
    response["X-Frame-Options"] = "SAMEORIGIN"
    return response


# -- reports ---------------------------------------------------------------------------------
@require_GET
def report_index(request: HttpRequest) -> TemplateResponse:
    """Every page that has personalized blocks, with its blocks and their exposures."""
    rows = []
    for model in personalized_page_models():
        for page in model.objects.all().order_by("path"):
            if not page.permissions_for_user(request.user).can_edit():
                continue
            blocks = list(personalized_in_instance(page))
            if not blocks:
                continue
            reports = block_reports(page)
            rows.append(
                {
                    "page": page,
                    "blocks": reports,
                    "exposures": sum(a.exposures for r in reports for a in r.arms),
                    "problems": sum(len(r.problems) for r in reports),
                    "url": reverse("persona_wagtail:page_report", args=[page.id]),
                }
            )
    return TemplateResponse(request, "persona_wagtail/report_index.html", {"rows": rows})


@require_GET
def page_report(request: HttpRequest, page_id: int) -> TemplateResponse:
    page = _page_for(request, page_id)
    from persona_django.conf import get_config as django_config

    return TemplateResponse(
        request,
        "persona_wagtail/report.html",
        {
            "page": page,
            "reports": block_reports(page),
            "goals": list(django_config()["CONVERSION_GOALS"]),
            "compare_url": reverse("persona_wagtail:compare", args=[page.id]),
        },
    )


urlpatterns = [
    path("check-rule/", check_rule, name="check_rule"),
    path("pages/<int:page_id>/compare/", compare, name="compare"),
    path("pages/<int:page_id>/preview/", preview_frame, name="preview_frame"),
    path("reports/", report_index, name="report_index"),
    path("reports/<int:page_id>/", page_report, name="page_report"),
]
