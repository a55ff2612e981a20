"""Slots, variants and decisions: which content a profile sees, and why.

A :class:`Slot` has variants, each targeted at a segment, a rule, or everyone, with a
priority and an optional weight, plus a default. A strategy picks a variant:

``priority`` (the default)
    the first variant whose targeting matches, highest ``priority`` first; **ties keep the
    order the variants were declared in**. No match → the default.
``experiment``
    a sticky experiment: among the variants whose targeting matches, a seeded SHA-256 hash of
    ``seed | slot | experiment version | profile id`` places the profile in a bucket; the first
    ``holdout`` share of buckets sees the default (the control), the rest are split by
    weight. An assignment once recorded on the profile is kept (also across a login merge).

More strategies come from plugins (``persona_register_strategies``). Every decision carries
a machine-readable ``reason`` (see :class:`Reason`) and a human ``explanation``, computed
only when asked for. Without ``personalization`` consent the default is chosen with reason
``consent``; a strategy that raises yields the default with reason ``error`` (logged): a
page never breaks because of a decision.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .consent import ConsentPolicy, may
from .errors import RuleError, UnknownSegmentError
from .rules.compiler import CompiledRule, FieldResolver, compile_rule
from .rules.conditions import ConditionRegistry
from .rules.subject import Subject

if TYPE_CHECKING:
    from .segments import SegmentRegistry

__all__ = [
    "Decision",
    "DecisionEngine",
    "Experiment",
    "Reason",
    "Slot",
    "Strategy",
    "Variant",
    "bucket",
]

log = logging.getLogger("persona_sdk.decisions")

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,63}$")


class Reason:
    """The machine-readable reasons a decision gives."""

    MATCHED = "matched"  # a targeted variant matched (priority strategy)
    EXPERIMENT = "experiment"  # assigned by the sticky experiment
    HOLDOUT = "holdout"  # in the experiment's holdout: default content
    DEFAULT = "default"  # nothing matched
    CONSENT = "consent"  # no personalization consent: default content
    ERROR = "error"  # something failed: default content (logged)
    PREVIEW = "preview"  # forced by a preview (editors)


@attrs.frozen
class Variant:
    """One alternative of a slot. ``segment`` xor ``rule`` targets it; neither means all."""

    key: str
    segment: str | None = None
    rule: CompiledRule | None = None
    priority: int = 0
    weight: float = 1.0
    content: Any = None
    test: Callable[[Subject], bool] = attrs.field(init=False, eq=False, repr=False)
    #: machine-readable details a decision for this variant carries (built once)
    details: Mapping[str, Any] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        seg, rule = self.segment, self.rule
        if seg is not None and rule is not None:
            raise RuleError(f"variant {self.key}", "target a segment or a rule, not both")
        test: Callable[[Subject], bool]
        if seg is not None:
            test = lambda s: s.in_segment(seg)  # noqa: E731
        elif rule is not None:
            test = rule.predicate
        else:
            test = lambda s: True  # noqa: E731
        object.__setattr__(self, "test", test)
        details = {"segment": seg} if seg is not None else {}
        object.__setattr__(self, "details", MappingProxyType(details))

    def explain_match(self, subject: Subject) -> str:
        if self.segment is not None:
            if subject.segments is None:
                return f"matched segment {self.segment}"
            text = subject.segments.explain(self.segment, subject).text
            return f"matched segment {self.segment}: {text}"
        if self.rule is not None:
            return f"matched rule: {self.rule.explain(subject).text}"
        return "untargeted variant (everyone)"


@attrs.frozen
class Experiment:
    version: str = "1"
    holdout: float = 0.0
    seed: str = ""

    def __attrs_post_init__(self) -> None:
        if not (0.0 <= self.holdout < 1.0) or math.isnan(self.holdout):
            raise RuleError("experiment.holdout", f"must be in [0, 1), got {self.holdout!r}")


def bucket(*parts: str) -> float:
    """A uniform number in [0, 1) from a SHA-256 of the parts: sticky and reproducible."""
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@attrs.frozen
class Slot:
    """A place on a page or in an email whose content is decided per profile."""

    name: str
    variants: tuple[Variant, ...] = ()
    default: str = "default"
    strategy: str = "priority"
    experiment: Experiment | None = None
    default_content: Any = None
    #: variants in decision order: priority descending, then declaration order.
    ordered: tuple[Variant, ...] = attrs.field(init=False, eq=False, repr=False)
    #: ``first_match(subject)``: the first variant of :attr:`ordered` whose targeting
    #: matches, or None (built once; the ``priority`` strategy is this call).
    first_match: Callable[[Subject], Variant | None] = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        where = f"slots.{self.name}"
        if not isinstance(self.name, str) or not KEY.match(self.name):
            raise RuleError(where, "a slot name is 1-64 letters, digits, '-', '_' or '.'")
        keys = [v.key for v in self.variants]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise RuleError(f"{where}.variants[{i}]", f'variant key "{key}" is used twice')
            if key == self.default:
                raise RuleError(f"{where}.variants[{i}]", f'variant key "{key}" is the default key')
        indexed = sorted(enumerate(self.variants), key=lambda iv: (-iv[1].priority, iv[0]))
        object.__setattr__(self, "ordered", tuple(v for _, v in indexed))
        object.__setattr__(self, "first_match", _first_match(self.ordered))

    @property
    def experiment_key(self) -> str:
        version = self.experiment.version if self.experiment else "1"
        return f"{self.name}@{version}"

    def matching(self, subject: Subject) -> Iterator[Variant]:
        """The variants whose targeting matches, in decision order (lazily)."""
        for variant in self.ordered:
            if variant.test(subject):
                yield variant

    def segment_refs(self) -> set[str]:
        refs = {v.segment for v in self.variants if v.segment}
        for v in self.variants:
            if v.rule is not None:
                refs |= v.rule.refs
        return refs

    @classmethod
    def from_json(
        cls,
        name: str,
        data: Any,
        *,
        fields: FieldResolver,
        conditions: ConditionRegistry | None = None,
        segments: SegmentRegistry | None = None,
        strategies: Mapping[str, Strategy] | None = None,
        where: str = "slots",
    ) -> Slot:
        """Build a slot from its JSON form, checking every reference::

        {"strategy": "priority", "default": "default",
         "variants": [{"key": "vip", "segment": "returning-high-value", "priority": 10},
                      {"key": "new", "rule": {"behaviour.visits": {"$lte": 1}}}],
         "experiment": {"version": "2", "holdout": 0.1}}
        """
        here = f"{where}.{name}"
        if not isinstance(data, Mapping):
            raise RuleError(here, "a slot is an object with variants")
        unknown = set(data) - {"strategy", "default", "variants", "experiment", "default_content"}
        if unknown:
            raise RuleError(here, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        strategy = data.get("strategy", "experiment" if "experiment" in data else "priority")
        if strategies is not None and strategy not in strategies:
            raise RuleError(
                f"{here}.strategy",
                f"unknown strategy {strategy!r}; registered: {', '.join(sorted(strategies))}",
            )
        default = data.get("default", "default")
        if not isinstance(default, str) or not KEY.match(default):
            raise RuleError(f"{here}.default", "must be a variant key (letters, digits, -_.)")
        raw_variants = data.get("variants", [])
        if not isinstance(raw_variants, list):
            raise RuleError(f"{here}.variants", "must be a list")
        variants = [
            _variant_from_json(v, f"{here}.variants[{i}]", fields, conditions, segments)
            for i, v in enumerate(raw_variants)
        ]
        experiment = None
        if "experiment" in data:
            experiment = _experiment_from_json(data["experiment"], f"{here}.experiment")
        return cls(
            name,
            tuple(variants),
            default=default,
            strategy=strategy,
            experiment=experiment,
            default_content=data.get("default_content"),
        )


def _first_match(variants: tuple[Variant, ...]) -> Callable[[Subject], Variant | None]:
    """``variants`` tried in order as one closure, unrolled for up to four variants."""
    n = len(variants)
    if n == 0:
        return lambda s: None
    if n == 1:
        (v0,) = variants
        t0 = v0.test
        return lambda s: v0 if t0(s) else None
    if n == 2:
        v0, v1 = variants
        t0, t1 = v0.test, v1.test
        return lambda s: v0 if t0(s) else v1 if t1(s) else None
    if n == 3:
        v0, v1, v2 = variants
        t0, t1, t2 = v0.test, v1.test, v2.test
        return lambda s: v0 if t0(s) else v1 if t1(s) else v2 if t2(s) else None
    if n == 4:
        v0, v1, v2, v3 = variants
        t0, t1, t2, t3 = v0.test, v1.test, v2.test, v3.test
        return lambda s: v0 if t0(s) else v1 if t1(s) else v2 if t2(s) else v3 if t3(s) else None
    tests = tuple((v.test, v) for v in variants)

    def first(s: Subject) -> Variant | None:
        for test, variant in tests:
            if test(s):
                return variant
        return None

    return first


def _variant_from_json(
    data: Any,
    where: str,
    fields: FieldResolver,
    conditions: ConditionRegistry | None,
    segments: SegmentRegistry | None,
) -> Variant:
    if not isinstance(data, Mapping):
        raise RuleError(where, "a variant is an object with a key")
    unknown = set(data) - {"key", "segment", "rule", "priority", "weight", "content"}
    if unknown:
        raise RuleError(where, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    key = data.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise RuleError(f"{where}.key", f"a variant key is 1-64 letters, digits, -_. ; got {key!r}")
    segment = data.get("segment")
    if segment is not None:
        if not isinstance(segment, str):
            raise RuleError(f"{where}.segment", "must be a segment name")
        if segments is not None and segment not in segments:
            raise UnknownSegmentError(f"{where}.segment", f'segment "{segment}" is not defined')
    rule = None
    if data.get("rule") is not None:
        rule = compile_rule(
            data["rule"], where=f"{where}.rule", fields=fields, conditions=conditions
        )
        if segments is not None:
            for ref in sorted(rule.refs):
                if ref not in segments:
                    raise UnknownSegmentError(
                        f"{where}.rule", f'refers to segment "{ref}", which is not defined'
                    )
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RuleError(f"{where}.priority", f"must be an integer, got {priority!r}")
    weight = data.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not weight > 0
        or not math.isfinite(weight)
    ):
        raise RuleError(f"{where}.weight", f"must be a positive number, got {weight!r}")
    try:
        return Variant(key, segment, rule, priority, float(weight), data.get("content"))
    except RuleError as exc:
        raise RuleError(where, exc.problem) from None


def _experiment_from_json(data: Any, where: str) -> Experiment:
    if not isinstance(data, Mapping):
        raise RuleError(where, "an experiment is an object (version, holdout, seed)")
    unknown = set(data) - {"version", "holdout", "seed"}
    if unknown:
        raise RuleError(where, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    version = str(data.get("version", "1"))
    holdout = data.get("holdout", 0.0)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)):
        raise RuleError(f"{where}.holdout", f"must be a number in [0, 1), got {holdout!r}")
    seed = data.get("seed", "")
    if not isinstance(seed, str):
        raise RuleError(f"{where}.seed", "must be a string")
    try:
        return Experiment(version, float(holdout), seed)
    except RuleError as exc:
        raise RuleError(f"{where}.holdout", exc.problem) from None


def _no_explanation() -> str:
    return ""


_NO_DETAILS: Mapping[str, Any] = MappingProxyType({})


@attrs.define(eq=True)
class Decision:
    """The outcome for one slot: the variant key, why, and how to explain it.

    Treat it as immutable (it is built on every decision, so it is a plain slotted class
    rather than a frozen one, whose constructor costs several times more).
    """

    slot: str
    variant: str
    reason: str
    strategy: str
    is_default: bool
    content: Any = None
    details: Mapping[str, Any] = attrs.field(default=_NO_DETAILS)
    #: ``(experiment key, variant key)`` to record on the profile with the exposure.
    assignment: tuple[str, str] | None = None
    #: computes :attr:`explanation` when asked, called as ``explainer(*explain_args)``
    explainer: Callable[..., str] = attrs.field(default=_no_explanation, eq=False, repr=False)
    explain_args: tuple[Any, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def explanation(self) -> str:
        """A sentence for humans, e.g. ``matched segment vip: ltv=820 >= 500``."""
        return self.explainer(*self.explain_args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "variant": self.variant,
            "is_default": self.is_default,
            "reason": self.reason,
            "strategy": self.strategy,
            "details": dict(self.details),
            "explanation": self.explanation,
        }


def default_decision(
    slot: Slot, reason: str, strategy: str, explanation: str, **details: Any
) -> Decision:
    return Decision(
        slot.name,
        slot.default,
        reason,
        strategy,
        True,
        slot.default_content,
        details,
        explainer=lambda: explanation,
    )


class Strategy(Protocol):
    """Chooses a variant. ``slot.matching(subject)`` yields the eligible variants lazily."""

    name: str

    def decide(self, slot: Slot, subject: Subject) -> Decision: ...


@attrs.define
class DecisionEngine:
    """Decides slots for subjects through the registered strategies, behind the consent gate."""

    strategies: Mapping[str, Strategy]
    policy: ConsentPolicy
    slots: Mapping[str, Slot] = attrs.Factory(dict)

    def decide(self, slot: Slot, subject: Subject, gpc: bool = False) -> Decision:
        if not may(subject.profile, "personalization", self.policy, gpc):
            return default_decision(
                slot,
                Reason.CONSENT,
                slot.strategy,
                "no personalization consent: default content",
            )
        strategy = self.strategies.get(slot.strategy)
        if strategy is None:
            log.error("slot %r uses unknown strategy %r", slot.name, slot.strategy)
            return default_decision(
                slot,
                Reason.ERROR,
                slot.strategy,
                f"strategy {slot.strategy!r} is not registered: default content",
            )
        try:
            return strategy.decide(slot, subject)
        except Exception as exc:
            log.exception("deciding slot %r failed; showing its default", slot.name)
            return default_decision(
                slot,
                Reason.ERROR,
                slot.strategy,
                f"error while deciding ({type(exc).__name__}): default content",
                error=type(exc).__name__,
            )
