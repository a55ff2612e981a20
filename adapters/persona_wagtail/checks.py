"""System checks (``manage.py check``), ids ``persona_wagtail.E0xx`` / ``W0xx`` / ``I0xx``.

========================  =====================================================================
``persona_wagtail.E001``  ``persona_django`` (profiles, exposures, the middleware) is not installed
``persona_wagtail.E002``  a Wagtail app the adapter needs is not installed
``persona_wagtail.W003``  ``PERSONA_WAGTAIL`` has a key the adapter does not know
``persona_wagtail.I004``  a page model can hold personalized blocks but has no segment previews
                          (it does not use ``PersonalizedPageMixin``)
``persona_wagtail.E010``  (database) a saved admin segment does not compile: it is left out
``persona_wagtail.W011``  (database) a personalized block on a page cannot decide as written
                          (e.g. it targets a deleted segment): it shows its default
``persona_wagtail.W012``  (database) two personalized blocks on one page share a slot name
========================  =====================================================================

The database checks run when Django runs checks with databases (``migrate``, or
``manage.py check --database default``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, Info, Tags, Warning, register
from django.db import DatabaseError

REQUIRED_WAGTAIL_APPS = ("wagtail", "wagtail.admin", "wagtail.snippets")


@register()
def check_installed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if not apps.is_installed("persona_django"):
        messages.append(
            Error(
                "persona_wagtail needs persona_django (profiles, exposures, the middleware).",
                hint="Add 'persona_django' to INSTALLED_APPS and "
                "'persona_django.middleware.PersonaMiddleware' to MIDDLEWARE.",
                id="persona_wagtail.E001",
            )
        )
    missing = [a for a in REQUIRED_WAGTAIL_APPS if not apps.is_installed(a)]
    if missing:
        messages.append(
            Error(
                f"persona_wagtail needs Wagtail's {', '.join(missing)} in INSTALLED_APPS.",
                hint="Install Wagtail (pip install 'persona-sdk[wagtail]') and add its apps.",
                id="persona_wagtail.E002",
            )
        )
    from .conf import CONFIG_DEFAULTS, unknown_keys

    for key in unknown_keys():
        messages.append(
            Warning(
                f"PERSONA_WAGTAIL[{key!r}] is not a setting persona_wagtail knows.",
                hint="Known settings: " + ", ".join(sorted(CONFIG_DEFAULTS)),
                id="persona_wagtail.W003",
            )
        )
    return messages


@register()
def check_page_models(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not apps.is_installed("wagtail"):
        return []
    from .preview import PersonalizedPageMixin
    from .views import personalized_page_models

    messages: list[CheckMessage] = []
    for model in personalized_page_models():
        if app_configs is not None and model._meta.app_config not in app_configs:
            continue
        if not issubclass(model, PersonalizedPageMixin):
            messages.append(
                Info(
                    f"{model._meta.label} can hold personalized blocks but has no preview "
                    "modes per segment.",
                    hint="Add persona_wagtail.preview.PersonalizedPageMixin to its bases "
                    "(before Page).",
                    obj=model,
                    id="persona_wagtail.I004",
                )
            )
    return messages


def _with_database(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("databases"))


@register(Tags.database)
def check_admin_segments(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not _with_database(kwargs) or not apps.is_installed("persona_django"):
        return []
    from .registry import problems

    try:
        found = problems()
    except DatabaseError:
        return []  # tables not created yet (before migrate)
    return [
        Error(
            f'The admin segment "{name}" does not compile, so it is left out: {error}',
            hint="Edit the segment (Segments in the Wagtail admin): a condition type may "
            "have been removed with its plugin, or a segment it refers to deleted.",
            id="persona_wagtail.E010",
        )
        for name, error in sorted(found.items())
    ]


@register(Tags.database)
def check_page_blocks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not _with_database(kwargs) or not apps.is_installed("persona_django"):
        return []
    from .blocks import personalized_in_instance
    from .registry import ensure_current
    from .views import personalized_page_models

    messages: list[CheckMessage] = []
    try:
        persona = ensure_current()
        for model in personalized_page_models():
            for page in model.objects.all().iterator(chunk_size=200):
                names: Counter[str] = Counter()
                for field, _path, block, value in personalized_in_instance(page):
                    slot = value.get("slot") or "(unnamed)"
                    names[slot] += 1
                    for problem in block.problems(value, persona):
                        messages.append(
                            Warning(
                                f'Page "{page.title}" (id {page.id}), field {field}: the '
                                f'personalized block "{slot}": {problem}.',
                                hint="Edit the page and choose another segment for that variant "
                                "(or restore the segment).",
                                obj=page,
                                id="persona_wagtail.W011",
                            )
                        )
                for slot, count in sorted(names.items()):
                    if count > 1 and slot != "(unnamed)":
                        messages.append(
                            Warning(
                                f'Page "{page.title}" (id {page.id}) has {count} personalized '
                                f'blocks named "{slot}": they share one decision and one report.',
                                hint="Give each block its own name.",
                                obj=page,
                                id="persona_wagtail.W012",
                            )
                        )
    except DatabaseError:
        return messages
    return messages


__all__ = [
    "check_admin_segments",
    "check_installed",
    "check_page_blocks",
    "check_page_models",
]
