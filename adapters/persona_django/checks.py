"""System checks (``manage.py check``): ids ``persona.E0xx`` (errors) and ``persona.W0xx``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from persona_sdk.errors import PersonaError

from . import template_checks  # noqa: F401  (registers persona.W010)
from .conf import CONFIG_DEFAULTS, get_config, unknown_keys

MIDDLEWARE = "persona_django.middleware.PersonaMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE not in middleware:
        return [
            Error(
                "PersonaMiddleware is not in MIDDLEWARE.",
                hint=f"Add {MIDDLEWARE!r} after {AUTH_MIDDLEWARE!r}.",
                id="persona.E001",
            )
        ]
    if AUTH_MIDDLEWARE in middleware and middleware.index(AUTH_MIDDLEWARE) > middleware.index(
        MIDDLEWARE
    ):
        return [
            Warning(
                "PersonaMiddleware comes before AuthenticationMiddleware, so it cannot tell "
                "logged-in users from anonymous visitors.",
                hint=f"Move {MIDDLEWARE!r} after {AUTH_MIDDLEWARE!r}.",
                id="persona.W002",
            )
        ]
    return []


@register(Tags.caches)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    alias = get_config()["CACHE_ALIAS"]
    caches = getattr(settings, "CACHES", None) or {"default": {}}
    if alias not in caches:
        return [
            Error(
                f"PERSONA['CACHE_ALIAS'] is {alias!r}, which is not in CACHES.",
                hint=f"Define CACHES[{alias!r}] (locmem is fine in development, Django's "
                "RedisCache in production) or point CACHE_ALIAS at an existing alias.",
                id="persona.E003",
            )
        ]
    backend = str(caches[alias].get("BACKEND", ""))
    if backend.endswith("DummyCache"):
        return [
            Warning(
                f"CACHES[{alias!r}] is a DummyCache: every personalized request "
                "will query the database.",
                hint="Use LocMemCache or RedisCache for the persona cache alias.",
                id="persona.W004",
            )
        ]
    return []


@register()
def check_config(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    config = get_config()
    messages: list[CheckMessage] = []
    for key in unknown_keys():
        messages.append(
            Warning(
                f"PERSONA[{key!r}] is not a setting persona-sdk knows.",
                hint="Known settings: " + ", ".join(sorted(CONFIG_DEFAULTS)),
                id="persona.W006",
            )
        )
    if config["CONSENT_MODE"] not in ("opt-in", "opt-out"):
        messages.append(
            Error(
                f"PERSONA['CONSENT_MODE'] is {config['CONSENT_MODE']!r}.",
                hint="Use 'opt-in' (nothing until the visitor agrees) or 'opt-out'.",
                id="persona.E005",
            )
        )
        return messages
    from .runtime import build_policy, get_persona, load_definitions

    try:
        build_policy(config)
        load_definitions(config["DEFINITIONS"])
        persona = get_persona()
    except PersonaError as exc:
        messages.append(
            Error(
                f"persona-sdk configuration does not load: {exc}",
                hint="Fix the definition at the place named; `persona validate FILE` checks a "
                "definitions file from the command line.",
                id="persona.E007",
            )
        )
        return messages
    for problem in persona.check():
        cls = Error if problem.level == "error" else Warning
        messages.append(cls(problem.msg, hint=problem.hint or None, id=problem.id))
    return messages
