"""Loading plugins and collecting what they register.

:func:`make_plugin_manager` builds the pluggy manager the way every host should:
``add_hookspecs`` → block the plugins named in ``PERSONA_DISABLE_PLUGINS`` (comma-separated
entry-point names) → ``load_setuptools_entrypoints("persona_sdk")`` → ``check_pending``.
Built-in plugins are entry points of this distribution, so they load exactly the way a third
party's do, and can be disabled the same way.

:class:`Registry` calls the ``persona_register_*`` hooks once and keeps the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .context import Enricher, RegisteredEnricher
from .decisions import Strategy
from .errors import PluginError
from .outbox import EventSink
from .rules.conditions import ConditionRegistry
from .sources import ProfileSource

__all__ = [
    "DISABLE_ENV",
    "PluginInfo",
    "Registry",
    "disabled_plugins",
    "make_plugin_manager",
    "plugin_info",
]

DISABLE_ENV = "PERSONA_DISABLE_PLUGINS"


def disabled_plugins(environ: Mapping[str, str] | None = None) -> list[str]:
    raw = (environ if environ is not None else os.environ).get(DISABLE_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    disabled: Iterable[str] | None = None,
    plugins: Iterable[Any] = (),
) -> pluggy.PluginManager:
    """A plugin manager with the persona hookspecs and the installed plugins loaded.

    ``disabled`` defaults to the ``PERSONA_DISABLE_PLUGINS`` environment variable.
    ``plugins`` are extra plugin objects registered after the entry points (tests).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disabled if disabled is not None else disabled_plugins():
        pm.set_blocked(name)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:
            raise _load_error(pm) or exc from exc
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def _load_error(pm: pluggy.PluginManager) -> PluginError | None:
    """Name the entry point that failed to load, and how to get past it."""
    for ep in metadata.entry_points(group=hookspecs.PROJECT):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            ep.load()
        except Exception as exc:
            return PluginError(
                f"the persona_sdk plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}. "
                f"Fix or uninstall it, or disable it with {DISABLE_ENV}={ep.name}"
            )
    return None


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


def plugin_info(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Name, distribution, version and implemented hooks of every registered plugin."""
    dists = {
        id(plugin): (dist.metadata["name"], dist.version)
        for plugin, dist in pm.list_plugin_distinfo()
    }
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist, version = dists.get(id(plugin), ("", ""))
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        out.append(PluginInfo(str(name), dist, version, hooks))
    return sorted(out, key=lambda p: p.name)


def installed_version() -> str:
    try:
        return metadata.version("persona-sdk")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.define
class Registry:
    """Everything the plugins registered, collected once."""

    conditions: ConditionRegistry = attrs.Factory(ConditionRegistry)
    enrichers: tuple[RegisteredEnricher, ...] = ()
    strategies: dict[str, Strategy] = attrs.Factory(dict)
    sources: dict[str, ProfileSource] = attrs.Factory(dict)
    sinks: dict[str, EventSink] = attrs.Factory(dict)

    @classmethod
    def collect(
        cls,
        pm: pluggy.PluginManager,
        settings: Mapping[str, Any] | None = None,
        *,
        persona: Any = None,
    ) -> Registry:
        """Configure the plugins with ``settings`` and call every registration hook
        (``persona`` is the SDK instance being built, for the hooks that take it)."""
        pm.hook.persona_configure.call_historic(kwargs={"settings": dict(settings or {})})
        reg = cls()
        pm.hook.persona_register_conditions(register=reg.conditions.register)

        enrichers: dict[str, RegisteredEnricher] = {}

        def add_enricher(name: str, fn: Enricher, order: int = 100, doc: str = "") -> None:
            if name in enrichers:
                raise PluginError(f"two plugins register an enricher named {name!r}")
            if not callable(fn):
                raise PluginError(f"enricher {name!r} is not callable")
            enrichers[name] = RegisteredEnricher(name, fn, order, doc)

        pm.hook.persona_register_enrichers(register=add_enricher)
        reg.enrichers = tuple(sorted(enrichers.values(), key=lambda e: (e.order, e.name)))

        def add_named(kind: str, target: dict[str, Any]) -> Any:
            def add(obj: Any) -> None:
                name = getattr(obj, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(
                        f"a registered {kind} needs a non-empty string .name, got {obj!r}"
                    )
                if name in target:
                    raise PluginError(f"two plugins register a {kind} named {name!r}")
                target[name] = obj

            return add

        pm.hook.persona_register_strategies(register=add_named("strategy", reg.strategies))
        pm.hook.persona_register_profile_sources(
            register=add_named("profile source", reg.sources), persona=persona
        )
        pm.hook.persona_register_sinks(register=add_named("sink", reg.sinks), persona=persona)
        return reg
