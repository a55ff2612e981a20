"""Rules: MongoDB-style conditions compiled once into fast callables (never eval'd).

* :mod:`~persona_sdk.rules.compiler` — the JSON form and its compiler;
* :mod:`~persona_sdk.rules.builder` — a small Python builder producing the same JSON;
* :mod:`~persona_sdk.rules.conditions` — custom condition types registered by plugins;
* :mod:`~persona_sdk.rules.fields` — the profile and context fields a path can name;
* :mod:`~persona_sdk.rules.subject` — what a rule is evaluated against.
"""

from __future__ import annotations

from .builder import all_of, any_of, condition, field, none_of, not_, segment
from .compiler import MISSING, CompiledRule, Explanation, compile_rule, dict_resolver
from .conditions import ConditionRegistry
from .fields import profile_fields
from .subject import Subject

__all__ = [
    "MISSING",
    "CompiledRule",
    "ConditionRegistry",
    "Explanation",
    "Subject",
    "all_of",
    "any_of",
    "compile_rule",
    "condition",
    "dict_resolver",
    "field",
    "none_of",
    "not_",
    "profile_fields",
    "segment",
]
