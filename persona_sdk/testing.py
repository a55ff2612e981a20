"""A pytest plugin for people who write persona-sdk plugins (and for our own tests).

Enable it in your ``conftest.py``::

    pytest_plugins = ["persona_sdk.testing"]

Fixtures:

``persona_pm``
    a fresh plugin manager with the hookspecs and *no* plugins (entry points not loaded).
``persona_pm_builtins``
    a fresh plugin manager with every installed plugin loaded, as a site would have.
``register_plugin``
    ``register_plugin(plugin, pm=None)`` registers a plugin for the test's duration.
``make_persona``
    ``make_persona(definitions=None, plugins=(), **kwargs)`` → a :class:`Persona` on in-memory
    parts, with the built-in plugins plus ``plugins``.

Helpers (importable): :func:`build_profile` and :func:`make_event` build test data;
:func:`check_plugin` fails with a readable list of problems when a plugin's hook
implementations do not match the documented specs.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pluggy
import pytest

from . import hookspecs
from .clock import DAY
from .clock import now as _now
from .events import BehaviourConfig, Event, apply_event
from .identity import Identity
from .plugins import Registry, make_plugin_manager
from .profile import Profile
from .sdk import Persona

__all__ = ["build_profile", "check_plugin", "make_event", "plugin_problems"]


def make_event(type: str = "track", **fields: Any) -> Event:
    """An :class:`Event` with an anonymous id filled in when none is given."""
    if "anonymous_id" not in fields and "user_id" not in fields:
        fields["anonymous_id"] = "test-visitor"
    if type == "track":
        fields.setdefault("event", "Test Event")
    return Event.create(type, **fields)


def build_profile(
    *,
    now: float | None = None,
    visits: int = 0,
    visit_spacing_days: float = 1.0,
    page_views: int = 0,
    purchases: list[float] | None = None,
    categories: Mapping[str, int] | None = None,
    traits: Mapping[str, Any] | None = None,
    events: Mapping[str, int] | None = None,
    user_id: str | None = None,
    consent: Mapping[str, str] | None = None,
    anonymous_id: str = "test-visitor",
) -> Profile:
    """A profile with the given history, built through the real event path.

    ``visits`` sessions are spread back from ``now`` every ``visit_spacing_days``;
    ``purchases`` are order amounts; ``categories`` maps a category to product views.
    """
    from .consent import ConsentDecision, ConsentState

    t = _now() if now is None else now
    profile = Profile(created_at=t - visits * visit_spacing_days * DAY)
    config = BehaviourConfig()
    ids: dict[str, Any] = {"anonymous_id": anonymous_id}
    if user_id is not None:
        ids["user_id"] = user_id
    for i in range(visits):
        when = t - (visits - 1 - i) * visit_spacing_days * DAY
        apply_event(profile, Event.create("page", timestamp=when, **ids), config)
    for i in range(max(0, page_views - visits)):
        apply_event(profile, Event.create("page", timestamp=t - i, **ids), config)
    for i, amount in enumerate(purchases or []):
        apply_event(
            profile,
            Event.create(
                "track",
                event="Order Completed",
                properties={"revenue": amount},
                timestamp=t - i * 60,
                **ids,
            ),
            config,
        )
    for category, count in (categories or {}).items():
        for i in range(count):
            apply_event(
                profile,
                Event.create(
                    "track",
                    event="Product Viewed",
                    properties={"category": category},
                    timestamp=t - i,
                    **ids,
                ),
                config,
            )
    for name, count in (events or {}).items():
        for i in range(count):
            apply_event(profile, Event.create("track", event=name, timestamp=t - i, **ids), config)
    for key, value in (traits or {}).items():
        profile.set_trait(key, value, source="test", at=t)
    for purpose, state in (consent or {}).items():
        profile.consent[purpose] = ConsentDecision(ConsentState.parse(state), t, "test", "1")
    profile.identities.add(Identity.anonymous(anonymous_id))
    if user_id is not None:
        profile.identities.add(Identity.user(user_id))
    return profile


def plugin_problems(plugin: Any) -> list[str]:
    """Every way ``plugin`` does not match the hookspecs (empty when it is fine).

    Checks hook names (a misspelled ``persona_*`` function is reported), argument names
    (each must be one the spec passes), and that registration hooks register things the SDK
    accepts.
    """
    problems: list[str] = []
    specs = {
        name: inspect.signature(fn)
        for name, fn in vars(hookspecs).items()
        if name.startswith("persona_") and callable(fn)
    }
    members = (
        vars(plugin).items()
        if inspect.ismodule(plugin)
        else ((n, getattr(plugin, n)) for n in dir(plugin))
    )
    for name, fn in members:
        if not name.startswith("persona_") or not callable(fn):
            continue
        if name not in specs:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name}: no such hook{hint}")
            continue
        spec_args = set(specs[name].parameters)
        impl_args = [p for p in inspect.signature(fn).parameters if p != "self"]
        extra = [a for a in impl_args if a not in spec_args]
        if extra:
            problems.append(
                f"{name}: argument(s) {', '.join(extra)} are not passed by the hook "
                f"(it passes {', '.join(sorted(spec_args))})"
            )
    if problems:
        return problems
    pm = make_plugin_manager(load_entrypoints=False)
    try:
        pm.register(plugin)
        pm.check_pending()
        Registry.collect(pm)
    except Exception as exc:
        problems.append(f"registering the plugin failed: {type(exc).__name__}: {exc}")
    return problems


def check_plugin(plugin: Any) -> None:
    """Fail the test (``pytest.fail``) listing every problem :func:`plugin_problems` finds."""
    problems = plugin_problems(plugin)
    if problems:
        pytest.fail("plugin does not match the persona_sdk hookspecs:\n  " + "\n  ".join(problems))


@pytest.fixture
def persona_pm() -> pluggy.PluginManager:
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def persona_pm_builtins() -> pluggy.PluginManager:
    return make_plugin_manager()


@pytest.fixture
def register_plugin(persona_pm: pluggy.PluginManager) -> Iterator[Callable[..., Any]]:
    registered: list[tuple[pluggy.PluginManager, Any]] = []

    def register(plugin: Any, pm: pluggy.PluginManager | None = None) -> Any:
        target = pm if pm is not None else persona_pm
        target.register(plugin)
        registered.append((target, plugin))
        return plugin

    yield register
    for pm, plugin in reversed(registered):
        if pm.is_registered(plugin):
            pm.unregister(plugin)


@pytest.fixture
def make_persona() -> Callable[..., Persona]:
    def make(
        definitions: Mapping[str, Any] | None = None,
        plugins: tuple[Any, ...] | list[Any] = (),
        **kwargs: Any,
    ) -> Persona:
        pm = make_plugin_manager(plugins=plugins)
        return Persona(definitions=definitions, plugin_manager=pm, **kwargs)

    return make
