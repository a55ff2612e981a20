"""The plugin contract: every hook a persona-sdk plugin can implement.

A plugin is a module (or object) with functions named after these hooks, decorated with
:data:`hookimpl`, and listed under the ``persona_sdk`` entry-point group of its
distribution::

    [project.entry-points.persona_sdk]
    my_plugin = "my_package.persona_plugin"

The built-in plugins (strategies, enrichers, the Django adapter...) register exactly this
way. Hooks named ``persona_register_*`` receive a ``register`` callback and call it once per
thing they contribute (the ``llm`` style); they are called once, when the SDK starts.
The other hooks are notifications or fan-outs, called as things happen. Every hook that
runs for a particular SDK instance also receives ``persona``, the :class:`Persona` that
called it (one process may hold several: a site's, a test's); take it only if you need it —
pluggy passes an implementation just the arguments it names.

Every hook here is documented with its exact signature; a test fails otherwise.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .checks import CheckMessage
    from .consent import ConsentState, LedgerEntry
    from .decisions import Decision, Strategy
    from .identity import Identity
    from .outbox import EventSink
    from .profile import Profile
    from .sdk import Persona
    from .sources import ProfileSource

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "persona_sdk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def persona_configure(settings: Mapping[str, Any]) -> None:
    """Receive the site's plugin settings once, when the SDK is built.

    ``settings`` is the host's plugin-settings mapping (in Django, ``PERSONA["PLUGINS"]``),
    keyed by plugin name by convention: read your own key, ignore the rest, and raise
    ``persona_sdk.errors.ConfigError`` with a clear message for a bad value. Historic: a
    plugin registered later still receives the call.
    """


@hookspec
def persona_register_conditions(register: Callable[..., None]) -> None:
    """Register custom condition types for rules.

    Call ``register(name, factory, doc="...")``. ``name`` (``[a-z][a-z0-9_]*``) becomes the
    operator ``{"$name": argument}``. ``factory(argument, where) -> predicate`` runs when a
    rule is compiled: validate ``argument`` there and raise
    ``persona_sdk.errors.RuleError(where, "...")`` if it is wrong; return a fast
    ``predicate(subject) -> bool`` (``subject.profile``, ``subject.context``, ``subject.now``).
    Never evaluate the argument as code.
    """


@hookspec
def persona_register_enrichers(register: Callable[..., None]) -> None:
    """Register request-context enrichers.

    Call ``register(name, fn, order=100, doc="...")`` where
    ``fn(request: RequestInfo, context: dict) -> None`` adds keys to ``context`` (lower
    ``order`` runs first). Enrichers run on every personalized request: keep them cheap,
    do no network I/O, and never raise on odd input (a raising enricher is logged and skipped).
    """


@hookspec
def persona_register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register decision strategies (``priority`` and ``experiment`` are built in).

    Call ``register(strategy)`` with an object that has a unique ``name`` and
    ``decide(slot, subject, candidates) -> Decision``, where ``candidates`` are the slot's
    variants whose targeting matches, in priority order. A learning strategy (a bandit) can
    keep statistics by also implementing :func:`persona_exposure` and
    :func:`persona_conversion`.
    """


@hookspec
def persona_register_profile_sources(
    register: Callable[[ProfileSource], None], persona: Persona
) -> None:
    """Register read-through profile sources (a CDP's profile API, a CRM).

    Call ``register(source)`` with an object that has ``name``, ``budget`` (seconds) and
    ``fetch(profile) -> Mapping[str, Any] | None``. The SDK calls ``fetch`` with a time
    budget; whatever arrives in time is merged as traits with ``source=name``; whatever does
    not is ignored for this request. Cache inside the source.
    """


@hookspec
def persona_register_sinks(register: Callable[[EventSink], None], persona: Persona) -> None:
    """Register event sinks: destinations that events are forwarded to through the outbox.

    Call ``register(sink)`` with an object that has ``name``, ``purposes`` (consent purposes
    every forwarded item needs, e.g. ``("sharing",)``), ``max_batch``,
    ``accepts(event) -> bool`` and ``deliver(items) -> DeliveryResult``. Delivery happens in
    a worker, never in the request; consent is checked again at delivery.
    """


@hookspec
def persona_consent_changed(
    profile: Profile,
    purpose: str,
    old: ConsentState,
    new: ConsentState,
    entry: LedgerEntry,
    persona: Persona,
) -> None:
    """Called after a consent decision is recorded in the ledger and on the profile.

    ``entry`` is the ledger line (source, time, policy version). A plugin that holds data
    for a purpose that is now denied should stop using it.
    """


@hookspec
def persona_segment_entered(profile: Profile, segment: str, at: float, persona: Persona) -> None:
    """Called when a profile newly matches a segment (segment sync, real-time activation).

    Memberships are re-evaluated after each ingested event, with that event's context;
    ``at`` is the event's time. An email adapter adds the person to a list here.
    """


@hookspec
def persona_segment_exited(profile: Profile, segment: str, at: float, persona: Persona) -> None:
    """Called when a profile stops matching a segment it was in.

    Same timing as :func:`persona_segment_entered`; an email adapter removes the person
    from the list (or tag) that mirrors the segment.
    """


@hookspec
def persona_exposure(profile: Profile, decision: Decision, channel: str, persona: Persona) -> None:
    """Called when a decision's variant was shown (``channel``: ``web``, ``email``...).

    Only called when ``analytics`` consent allows recording exposures.
    """


@hookspec
def persona_conversion(
    profile: Profile, goal: str, value: float, at: float, persona: Persona
) -> None:
    """Called when a profile completes a conversion goal (a configured event name)."""


@hookspec
def persona_profile_merged(into: Profile, merged_id: str, persona: Persona) -> None:
    """Called after the profile ``merged_id`` was merged into ``into`` (login, identify).

    Plugins keyed by profile id should re-key ``merged_id`` to ``into.id``.
    """


@hookspec
def persona_erase(
    profile: Profile, identities: Sequence[Identity], persona: Persona
) -> Mapping[str, Any] | None:
    """Erase everything the plugin holds about a person (right to be forgotten).

    Return a small report (``{"adapter": name, "status": "requested", ...}``) or None if
    the plugin holds nothing. Called before the profile itself is deleted.
    """


@hookspec
def persona_export(profile: Profile, persona: Persona) -> Mapping[str, Any] | None:
    """Return what the plugin holds about a person, for a data-access request.

    Return ``{"section-name": json-able data}`` or None.
    """


@hookspec
def persona_check_config(persona: Persona) -> list[CheckMessage] | None:
    """Check this plugin's configuration; return problems as ``CheckMessage`` s.

    Called by ``persona validate`` and, in Django, by the system checks framework. Use ids
    like ``myplugin.E001`` and give a ``hint``.
    """


def documented_hooks() -> dict[str, str]:
    """Hook name → docstring, for the ``persona plugins`` command and the docs test."""
    import inspect
    import sys

    module = sys.modules[__name__]
    return {
        name: inspect.getdoc(obj) or ""
        for name, obj in vars(module).items()
        if name.startswith("persona_") and callable(obj)
    }
