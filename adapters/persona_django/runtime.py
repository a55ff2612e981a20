"""The process-wide :class:`~persona_sdk.Persona`, built from settings on first use.

Adapters and views call :func:`get_persona`; it is rebuilt after ``override_settings``
(see :mod:`persona_django.conf`) and after :func:`reset_persona`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from django.utils.module_loading import import_string

from persona_sdk import ConsentPolicy, Persona
from persona_sdk.consent import DEFAULT_PURPOSES
from persona_sdk.errors import ConfigError

from .conf import get_config

__all__ = ["get_persona", "load_definitions", "reset_persona"]

_lock = threading.Lock()
_persona: Persona | None = None


def load_definitions(value: Any) -> dict[str, Any] | None:
    """Read ``PERSONA["DEFINITIONS"]``: a dict, a JSON file path, or a dotted path to a
    callable returning a dict. Raises :class:`ConfigError` saying which and why."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, Path) or (isinstance(value, str) and value.endswith(".json")):
        try:
            data = json.loads(Path(value).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"PERSONA['DEFINITIONS']: cannot read {value}: {exc.strerror}"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"PERSONA['DEFINITIONS']: {value}:{exc.lineno}:{exc.colno}: "
                f"not valid JSON: {exc.msg}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"PERSONA['DEFINITIONS']: {value} must hold a JSON object")
        return data
    if isinstance(value, str):
        try:
            factory = import_string(value)
        except ImportError as exc:
            raise ConfigError(f"PERSONA['DEFINITIONS']: cannot import {value!r}: {exc}") from None
        data = factory() if callable(factory) else factory
        if not isinstance(data, dict):
            raise ConfigError(f"PERSONA['DEFINITIONS']: {value} must return a dict")
        return data
    raise ConfigError(
        "PERSONA['DEFINITIONS'] must be a dict, a path to a .json file, or a dotted path"
    )


def build_policy(config: dict[str, Any]) -> ConsentPolicy:
    return ConsentPolicy(
        mode=config["CONSENT_MODE"],
        purposes=tuple(DEFAULT_PURPOSES) + tuple(config["EXTRA_PURPOSES"]),
        modes=dict(config["CONSENT_MODES"]),
        version=str(config["POLICY_VERSION"]),
    )


def build_persona() -> Persona:
    from persona_sdk.plugins import make_plugin_manager

    from .storage import DjangoStoragePlugin
    from .stores import DatabaseConsentLedger, DatabaseOutbox, DatabaseProfileStore

    config = get_config()
    pm = make_plugin_manager()
    pm.register(DjangoStoragePlugin(), name=DjangoStoragePlugin.name)
    return Persona(
        plugin_manager=pm,
        definitions=load_definitions(config["DEFINITIONS"]),
        store=DatabaseProfileStore(config["CACHE_ALIAS"], timeout=config["CACHE_TIMEOUT"]),
        ledger=DatabaseConsentLedger(),
        outbox=DatabaseOutbox(),
        policy=build_policy(config),
        plugin_settings=config["PLUGINS"],
        conversion_goals=tuple(config["CONVERSION_GOALS"]),
    )


def get_persona() -> Persona:
    global _persona
    persona = _persona
    if persona is None:
        with _lock:
            if _persona is None:
                _persona = build_persona()
            persona = _persona
    return persona


def reset_persona() -> None:
    global _persona
    with _lock:
        _persona = None
