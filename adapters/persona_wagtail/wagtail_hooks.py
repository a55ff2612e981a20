"""Everything persona_wagtail adds to the Wagtail admin, and nothing else.

* the **Segments** snippet (admin segments with the rule builder; code and file segments
  listed read-only beside them);
* the admin URLs ``/<admin>/persona/``: the rule check endpoint, side-by-side previews and
  the reports;
* a **Personalization** menu item (the reports);
* "Compare audiences" and "Personalization report" buttons on pages with personalized
  blocks;
* a warning in the page editor when a personalized block cannot decide as written (a
  deleted segment: it shows its default);
* the live check of the rule fields of personalized blocks in the page editor.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.templatetags.static import static
from django.urls import include, path, reverse
from django.utils.html import format_html
from wagtail import hooks
from wagtail.admin.menu import MenuItem
from wagtail.admin.widgets import Button
from wagtail.snippets.models import register_snippet

from . import views
from .blocks import personalized_in_instance
from .preview import PersonalizedPageMixin

log = logging.getLogger("persona_wagtail")

register_snippet(views.SegmentViewSet)


@hooks.register("register_admin_urls")
def register_admin_urls() -> list[Any]:
    return [
        path(
            "persona/", include((views.urlpatterns, "persona_wagtail"), namespace="persona_wagtail")
        )
    ]


@hooks.register("register_admin_menu_item")
def register_report_menu_item() -> MenuItem:
    return MenuItem(
        "Personalization",
        reverse("persona_wagtail:report_index"),
        name="persona-reports",
        icon_name="table",
        order=260,
    )


def _personalized(page: Any) -> bool:
    return (
        isinstance(page.specific_deferred, PersonalizedPageMixin)
        or type(page.specific_deferred) in views.personalized_page_models()
    )


def _buttons(page: Any, user: Any, priority: int) -> list[Button]:
    if page is None or not page.id or not _personalized(page):
        return []
    if not page.permissions_for_user(user).can_edit():
        return []
    return [
        Button(
            "Compare audiences",
            reverse("persona_wagtail:compare", args=[page.id]),
            icon_name="view",
            priority=priority,
        ),
        Button(
            "Personalization report",
            reverse("persona_wagtail:page_report", args=[page.id]),
            icon_name="table",
            priority=priority + 1,
        ),
    ]


@hooks.register("register_page_listing_more_buttons")
def page_listing_buttons(page: Any, user: Any, *args: Any, **kwargs: Any) -> list[Button]:
    return _buttons(page, user, 70)


@hooks.register("register_page_header_buttons")
def page_header_buttons(page: Any, user: Any, *args: Any, **kwargs: Any) -> list[Button]:
    return _buttons(page, user, 80)


@hooks.register("before_edit_page")
def flag_broken_blocks(request: Any, page: Any) -> None:
    """Tell the editor which personalized blocks fall back to their default, and why."""
    if request.method != "GET":
        return None
    try:
        latest = page.specific.get_latest_revision_as_object()
        for _field, _path, block, value in personalized_in_instance(latest):
            name = value.get("slot") or "(unnamed)"
            for problem in block.problems(value):
                messages.warning(request, f"Personalized block “{name}”: {problem}.")
    except Exception:
        log.exception("persona: checking the page's personalized blocks failed")
    return None


@hooks.register("insert_editor_js")
def editor_js() -> str:
    return format_html(
        '<script>window.PERSONA_CHECK_RULE_URL = "{}";</script><script src="{}" defer></script>'
        '<link rel="stylesheet" href="{}">',
        reverse("persona_wagtail:check_rule"),
        static("persona_wagtail/rule-builder.js"),
        static("persona_wagtail/rule-builder.css"),
    )
