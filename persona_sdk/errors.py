"""Typed exceptions raised at the SDK's boundaries.

Every error that bad input can cause is a subclass of :class:`PersonaError`, so a host can
catch one type at a boundary (a view, a management command) and show a clear message.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentUpdateError",
    "ConfigError",
    "ConsentError",
    "EventError",
    "IdentityError",
    "PersonaError",
    "PluginError",
    "ProfileFormatError",
    "RuleError",
    "SegmentCycleError",
    "UnknownSegmentError",
    "UnknownSlotError",
]


class PersonaError(Exception):
    """Base class of every error persona-sdk raises on purpose."""


class RuleError(PersonaError, ValueError):
    """A rule or segment definition does not compile.

    ``where`` names the place in the definition, e.g.
    ``segments.vip.rule.$and[1].traits.ltv``; the message reads
    ``segments.vip.rule.$and[1].traits.ltv: $gte expects a number, got "abc"``.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class SegmentCycleError(RuleError):
    """Segments refer to each other in a loop (``a -> b -> a``)."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(
            f"segments.{cycle[0]}",
            "segments refer to each other in a cycle: " + " -> ".join(cycle),
        )


class UnknownSegmentError(RuleError):
    """A rule, slot or lookup names a segment that is not defined."""


class UnknownSlotError(PersonaError, LookupError):
    """A decision was asked for a slot that is not defined."""


class EventError(PersonaError, ValueError):
    """An event payload is malformed, too large, or names no identity."""


class IdentityError(PersonaError, ValueError):
    """An identity (email, id) is malformed."""


class ConsentError(PersonaError, ValueError):
    """An unknown purpose or consent state."""


class ProfileFormatError(PersonaError, ValueError):
    """A stored profile document cannot be read (bad shape, unknown schema version)."""


class ConcurrentUpdateError(PersonaError):
    """A profile changed between read and write; the caller should re-read and retry."""


class ConfigError(PersonaError, ValueError):
    """The SDK's configuration is invalid."""


class PluginError(PersonaError):
    """A plugin registered something invalid (a duplicate name, a bad callable)."""
