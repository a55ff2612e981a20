"""A registry of custom condition types that plugins add to the rule language.

A custom condition is a top-level rule key ``"$name"`` that is not a built-in operator, e.g.
``{"$geo_country": ["FR", "BE"]}``. Its factory is called ONCE, when a rule is compiled, with the
operator's argument and the ``where`` of the operator (``segments.eu.rule.$geo_country``); it
validates the argument (raising :class:`~persona_sdk.errors.RuleError` with that ``where``) and
returns a predicate over the subject the rule is evaluated against::

    def geo_country(arg: Any, where: str) -> Callable[[Any], bool]:
        if not isinstance(arg, list) or not all(isinstance(c, str) for c in arg):
            raise RuleError(where, "expects a list of country codes")
        countries = frozenset(arg)
        return lambda subject: subject.country in countries

    registry.register("geo_country", geo_country, doc="visitor's country is one of the codes")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from persona_sdk.errors import PluginError

__all__ = [
    "BUILTIN_OPERATORS",
    "CONDITION_NAME_RE",
    "ConditionFactory",
    "ConditionRegistry",
]

ConditionFactory = Callable[[Any, str], Callable[[Any], bool]]
"""``factory(argument, where) -> predicate(subject) -> bool``, called at compile time."""

BUILTIN_OPERATORS: Final[frozenset[str]] = frozenset(
    {
        # field-level operators
        "eq",
        "ne",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "nin",
        "all",
        "size",
        "exists",
        "type",
        "regex",
        "options",
        "elemMatch",
        "not",
        # document-level operators
        "and",
        "or",
        "nor",
        "segment",
    }
)
"""Names (without ``$``) of the operators the rule compiler implements itself."""

CONDITION_NAME_RE: Final[re.Pattern[str]] = re.compile(r"[a-z][a-z0-9_]*")
"""A custom condition's name (without ``$``) must match this pattern entirely."""


@attrs.define
class ConditionRegistry:
    """Custom condition types, by name (without the leading ``$``).

    Plugins fill it at start-up; :func:`persona_sdk.rules.compiler.compile_rule` looks names up
    in it when it meets a top-level ``"$name"`` key that is not a built-in operator.
    """

    _factories: dict[str, ConditionFactory] = attrs.field(factory=dict, init=False)
    _docs: dict[str, str] = attrs.field(factory=dict, init=False)

    def register(self, name: str, factory: ConditionFactory, *, doc: str = "") -> None:
        """Add the condition type ``$name``.

        ``name`` is written without ``$``, must match ``^[a-z][a-z0-9_]*$``, and must not be a
        built-in operator or an already registered name; ``factory`` must be callable.
        ``doc`` is a one-line description shown by :meth:`docs` (and the CLI).

        Raises :class:`~persona_sdk.errors.PluginError` on any of these mistakes.
        """
        if not isinstance(name, str) or not CONDITION_NAME_RE.fullmatch(name):
            raise PluginError(
                f"invalid condition name {name!r}: use lowercase letters, digits and _, "
                'starting with a letter, and no leading "$"'
            )
        if name in BUILTIN_OPERATORS:
            raise PluginError(f'condition name "{name}" is a built-in operator (${name})')
        if name in self._factories:
            raise PluginError(f'condition "${name}" is already registered')
        if not callable(factory):
            raise PluginError(f'condition "${name}": factory {factory!r} is not callable')
        if not isinstance(doc, str):
            raise PluginError(f'condition "${name}": doc must be a string')
        self._factories[name] = factory
        self._docs[name] = doc

    def get(self, name: str) -> ConditionFactory | None:
        """The factory registered as ``name`` (without ``$``), or None."""
        return self._factories.get(name)

    def names(self) -> list[str]:
        """The registered names (without ``$``), sorted."""
        return sorted(self._factories)

    def docs(self) -> dict[str, str]:
        """``{name: doc}`` for every registered condition, sorted by name."""
        return {name: self._docs[name] for name in sorted(self._docs)}
