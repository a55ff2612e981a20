"""Named segments: compiled rules that may nest (``{"$segment": "other"}``).

A :class:`SegmentRegistry` is built whole from definitions and is immutable: every rule is
compiled, every reference checked and cycles rejected before it exists, so a bad definition
fails at load with the place named (``segments.vip.rule.$and[1].traits.ltv: ...``) and
nothing is half-applied. Evaluation is lazy and memoized per :class:`Subject`: a segment no
slot asks about costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import RuleError, SegmentCycleError, UnknownSegmentError
from .profile import Profile
from .rules.compiler import CompiledRule, Explanation, FieldResolver, compile_rule
from .rules.conditions import ConditionRegistry
from .rules.subject import Subject

__all__ = ["SEGMENT_NAME", "Segment", "SegmentRegistry"]

SEGMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


@attrs.frozen
class Segment:
    name: str
    rule: CompiledRule
    description: str = ""
    #: where the definition came from: ``code``, ``json``, ``admin``...
    source: str = "code"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule.spec, "description": self.description}


def check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not SEGMENT_NAME.match(name):
        raise RuleError(
            where,
            f"a segment name is 1-64 lower-case letters, digits, '-' or '_', got {name!r}",
        )
    return name


class SegmentRegistry:
    """An immutable, validated set of segments."""

    __slots__ = ("_segments", "_tests", "profile_segments")

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        by_name: dict[str, Segment] = {}
        for segment in segments:
            if segment.name in by_name:
                raise RuleError(f"segments.{segment.name}", "defined twice")
            by_name[segment.name] = segment
        _check_graph(by_name)
        self._segments = by_name
        self._tests = {name: s.rule.predicate for name, s in by_name.items()}
        #: segments whose rules read only the profile (no ``context.*``, also through nested
        #: segments): their membership is kept on the profile as events arrive. Segments that
        #: depend on the request (device, campaign, time of day) are decided per request.
        self.profile_segments: tuple[str, ...] = tuple(
            sorted(n for n in by_name if "context" not in _transitive_roots(n, by_name, {}))
        )

    @classmethod
    def compile(
        cls,
        definitions: Mapping[str, Any],
        *,
        fields: FieldResolver,
        conditions: ConditionRegistry | None = None,
        source: str = "json",
        base: SegmentRegistry | None = None,
        where: str = "segments",
    ) -> SegmentRegistry:
        """Compile ``{name: {"rule": ..., "description": ...}}`` (or ``{name: rule}``).

        ``base`` segments are kept and may be referenced; a name defined in both is an error.
        """
        if not isinstance(definitions, Mapping):
            raise RuleError(
                where,
                f"segments are an object of name: definition, got {type(definitions).__name__}",
            )
        compiled: list[Segment] = list(base) if base is not None else []
        for name, definition in definitions.items():
            here = f"{where}.{name}"
            check_name(name, here)
            description = ""
            if isinstance(definition, Mapping) and "rule" in definition:
                extra = set(definition) - {"rule", "description"}
                if extra:
                    raise RuleError(
                        here,
                        f"unknown key(s) {', '.join(sorted(map(str, extra)))}; "
                        "a segment has rule and description",
                    )
                description = definition.get("description") or ""
                if not isinstance(description, str):
                    raise RuleError(f"{here}.description", "must be a string")
                rule_spec = definition["rule"]
            else:
                rule_spec = definition
            rule = compile_rule(
                rule_spec, where=f"{here}.rule", fields=fields, conditions=conditions
            )
            compiled.append(Segment(name, rule, description, source))
        return cls(compiled)

    # -- reading ---------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._segments

    def __iter__(self) -> Any:
        return iter(self._segments.values())

    def __len__(self) -> int:
        return len(self._segments)

    def names(self) -> list[str]:
        return sorted(self._segments)

    def get(self, name: str) -> Segment | None:
        return self._segments.get(name)

    def test(self, name: str, subject: Subject) -> bool:
        """Does ``subject`` match segment ``name``? An unknown name is False (the registry
        refuses unknown references at load, so this only happens for lookups by callers)."""
        rule = self._tests.get(name)
        return False if rule is None else rule(subject)

    def explain(self, name: str, subject: Subject) -> Explanation:
        segment = self._segments.get(name)
        if segment is None:
            return Explanation(False, f"segment {name} is not defined")
        return segment.rule.explain(subject)

    def evaluate_all(self, subject: Subject) -> set[str]:
        """Every segment the subject is in (for sync and reports; not for page rendering)."""
        return {name for name in self._segments if subject.in_segment(name)}

    def sync_memberships(self, profile: Profile, subject: Subject) -> tuple[list[str], list[str]]:
        """Update ``profile.segments`` for the :attr:`profile_segments`; return (entered,
        exited). Request-dependent segments are not stored."""
        now_in = {name for name in self.profile_segments if subject.in_segment(name)}
        entered = sorted(now_in - profile.segments.keys())
        exited = sorted(n for n in profile.segments if n not in now_in and n in self._segments)
        for name in entered:
            profile.segments[name] = subject.now
        for name in exited:
            del profile.segments[name]
        return entered, exited

    def to_json(self) -> dict[str, Any]:
        return {name: s.to_json() for name, s in sorted(self._segments.items())}


def _field_roots(spec: Any) -> set[str]:
    """The first parts of every field path a rule names (``traits``, ``context``...)."""
    roots: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and not key.startswith("$"):
                    roots.add(key.split(".", 1)[0])  # a field: its condition names no roots
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return roots


def _transitive_roots(
    name: str, segments: Mapping[str, Segment], memo: dict[str, set[str]]
) -> set[str]:
    if name not in memo:
        memo[name] = set()  # graph is acyclic (checked first); this only guards re-entry
        roots = _field_roots(segments[name].rule.spec)
        for ref in segments[name].rule.refs:
            roots |= _transitive_roots(ref, segments, memo)
        memo[name] = roots
    return memo[name]


def _check_graph(segments: Mapping[str, Segment]) -> None:
    for name, segment in segments.items():
        for ref in sorted(segment.rule.refs):
            if ref not in segments:
                raise UnknownSegmentError(
                    f"segments.{name}.rule", f'refers to segment "{ref}", which is not defined'
                )
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in sorted(segments):
        if state.get(start) == 2:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(segments[start].rule.refs))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                raise SegmentCycleError([*path[path.index(nxt) :], nxt])
            if state.get(nxt) != 2:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(segments[nxt].rule.refs)))
