"""persona-sdk: embeddable, consent-first personalization for existing sites.

Where things are:

* a profile is built in :mod:`persona_sdk.profile` (the data) and :mod:`persona_sdk.events`
  (how events update it); identities and merging in :mod:`persona_sdk.identity` and
  :func:`persona_sdk.profile.merge_profiles`;
* consent is decided by :func:`persona_sdk.consent.may`;
* rules and segments: :mod:`persona_sdk.rules`, :mod:`persona_sdk.segments`;
* a decision is made in :mod:`persona_sdk.decisions` (strategies are plugins);
* adapters plug in through :mod:`persona_sdk.hookspecs` (entry-point group ``persona_sdk``);
* :class:`persona_sdk.Persona` wires it all together.

This package never imports Django.
"""

from __future__ import annotations

from .consent import ConsentPolicy, ConsentState, may
from .context import RequestInfo
from .decisions import Decision, Reason, Slot, Variant
from .errors import (
    ConcurrentUpdateError,
    ConfigError,
    ConsentError,
    EventError,
    IdentityError,
    PersonaError,
    PluginError,
    ProfileFormatError,
    RuleError,
    SegmentCycleError,
    UnknownSegmentError,
    UnknownSlotError,
)
from .events import BehaviourConfig, Event
from .hookspecs import hookimpl
from .identity import Identity
from .profile import Profile
from .sdk import IngestResult, Persona

__version__ = "0.1.0"

__all__ = [
    "BehaviourConfig",
    "ConcurrentUpdateError",
    "ConfigError",
    "ConsentError",
    "ConsentPolicy",
    "ConsentState",
    "Decision",
    "Event",
    "EventError",
    "Identity",
    "IdentityError",
    "IngestResult",
    "Persona",
    "PersonaError",
    "PluginError",
    "Profile",
    "ProfileFormatError",
    "Reason",
    "RequestInfo",
    "RuleError",
    "SegmentCycleError",
    "Slot",
    "UnknownSegmentError",
    "UnknownSlotError",
    "Variant",
    "hookimpl",
    "may",
]
