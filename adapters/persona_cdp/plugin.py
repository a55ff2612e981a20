"""Entry-point plugin of the cdp adapter (group ``persona_sdk``, name ``persona_cdp``).

Imports nothing from Django or ``requests`` at import time, so the core keeps working where
they are not installed: the sink, the profile source and the erase calls are imported when a
vendor is configured.

The plugin keeps the settings it was last configured with (one ``Persona`` per process is
the norm: ``persona_django`` builds one). Hooks that are not handed the ``Persona``
(``persona_erase``) act on that configuration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from persona_sdk import hookimpl
from persona_sdk.checks import CheckMessage

from .config import VENDORS, VendorConfig, parse

__all__ = [
    "current_configs",
    "django_consent_lookup",
    "persona_check_config",
    "persona_configure",
    "persona_erase",
    "persona_register_profile_sources",
    "persona_register_sinks",
]

log = logging.getLogger("persona_cdp")

_lock = threading.Lock()
_configs: dict[str, VendorConfig] = {}
_problems: list[CheckMessage] = []


def current_configs() -> dict[str, VendorConfig]:
    """The vendor configurations in use (those without errors), by vendor name."""
    with _lock:
        return dict(_configs)


@hookimpl
def persona_configure(settings: Mapping[str, Any]) -> None:
    """Read ``settings["segment"]`` and ``settings["rudderstack"]`` (see the package docs).
    A block with an error is left out and reported by ``persona_check_config``."""
    configs: dict[str, VendorConfig] = {}
    problems: list[CheckMessage] = []
    for vendor in VENDORS:
        if vendor not in settings:
            continue
        config, found = parse(vendor, settings[vendor])
        problems.extend(found)
        if config is not None:
            configs[vendor] = config
        for problem in found:
            if problem.level == "error":
                log.error("persona_cdp: %s is switched off: %s", vendor, problem.msg)
    with _lock:
        _configs.clear()
        _configs.update(configs)
        _problems[:] = problems


@hookimpl
def persona_register_sinks(register: Any) -> None:
    """One sink per configured vendor, named ``segment`` / ``rudderstack``."""
    for config in current_configs().values():
        try:
            from .segment import CdpSink
        except ImportError as exc:  # requests missing: reported by persona_check_config
            log.error("persona_cdp: cannot forward to %s: %s", config.vendor, exc)
            return
        register(CdpSink(config, consent_lookup=config.consent_lookup or django_consent_lookup))


@hookimpl
def persona_register_profile_sources(register: Any) -> None:
    """The Segment Profile API source, when ``profile_space_id`` and ``profile_token`` are set."""
    config = current_configs().get("segment")
    if config is None or config.profile is None:
        return
    try:
        from .profile_api import SegmentProfileSource
    except ImportError as exc:
        log.error("persona_cdp: cannot read the Segment Profile API: %s", exc)
        return
    register(SegmentProfileSource(config.profile))


@hookimpl
def persona_erase(profile: Any, identities: Sequence[Any]) -> Mapping[str, Any] | None:
    """Ask each configured vendor to delete the person (see :mod:`persona_cdp.erase`)."""
    configs = current_configs()
    if not configs:
        return None
    user_ids = sorted({i.value for i in identities if getattr(i.kind, "value", "") == "user"})
    requests_made: list[dict[str, Any]] = []
    for vendor, config in configs.items():
        if config.erase is None:
            requests_made.append(
                {
                    "vendor": vendor,
                    "status": "not_configured",
                    "reason": "events were forwarded, but no deletion API token is set: "
                    f"delete {user_ids or 'this person'} in the vendor's app",
                }
            )
            continue
        try:
            from .erase import erase_request
        except ImportError as exc:
            requests_made.append({"vendor": vendor, "status": "failed", "error": str(exc)})
            continue
        requests_made.append(erase_request(vendor, config.erase, user_ids))
    statuses = {r["status"] for r in requests_made}
    overall = "requested" if statuses == {"requested"} else (
        "failed" if statuses == {"failed"} else "partial" if "requested" in statuses else
        sorted(statuses)[0]
    )
    return {"adapter": "persona_cdp", "status": overall, "vendors": requests_made}


@hookimpl
def persona_check_config(persona: Any) -> list[CheckMessage] | None:
    """Errors for a missing write key, a bad URL, bad numbers...; warnings for unknown
    keys, plain http and missing deletion credentials."""
    with _lock:
        problems = list(_problems)
        configs = dict(_configs)
    if not problems and not configs:
        return None
    if configs:
        try:
            import requests  # noqa: F401
        except ImportError:
            problems.append(
                CheckMessage(
                    "error",
                    "persona_cdp.E009",
                    "the CDP adapter is configured but the 'requests' package is not installed.",
                    hint="pip install 'persona-sdk[cdp]'",
                )
            )
    known = set(getattr(getattr(persona, "policy", None), "purposes", ()) or ())
    for config in configs.values():
        for purpose in sorted(set(config.purposes) | set(config.integrations)):
            if known and purpose not in known:
                problems.append(
                    CheckMessage(
                        "error",
                        "persona_cdp.E010",
                        f'PERSONA["PLUGINS"]["{config.vendor}"] names the consent purpose '
                        f"{purpose!r}, which the consent policy does not define.",
                        hint="Known purposes: " + ", ".join(sorted(known)) + " (add others "
                        'with PERSONA["EXTRA_PURPOSES"]).',
                    )
                )
    return problems or None


def django_consent_lookup(
    profile_id: str, purposes: tuple[str, ...]
) -> Mapping[str, bool] | None:
    """The default ``consent_lookup`` on a Django site: the person's consent now, read
    through the site's Persona (cache, then database). None elsewhere."""
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return None
    if not settings.configured or not apps.ready or not apps.is_installed("persona_django"):
        return None
    from persona_django.runtime import get_persona

    persona = get_persona()
    profile = persona.store.load(profile_id)
    if profile is None:
        return None
    return {purpose: persona.may(profile, purpose) for purpose in purposes}
