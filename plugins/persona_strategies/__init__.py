"""The built-in decision strategies, registered as a plugin like any third party's.

``priority``: the first matching variant by priority (ties: declaration order).
``experiment``: a sticky, hashed, weighted experiment with a holdout (see
:mod:`persona_sdk.decisions`).
"""

from __future__ import annotations

from collections.abc import Callable

from persona_sdk.decisions import (
    Decision,
    Reason,
    Slot,
    Strategy,
    Variant,
    bucket,
    default_decision,
)
from persona_sdk.hookspecs import hookimpl
from persona_sdk.rules.subject import Subject

__all__ = ["ExperimentStrategy", "PriorityStrategy"]


_MATCHED = Reason.MATCHED


class PriorityStrategy:
    name = "priority"

    def decide(self, slot: Slot, subject: Subject) -> Decision:
        variant = slot.first_match(subject)
        if variant is not None:
            # positional arguments: keywords cost more than the rest of the call
            return Decision(
                slot.name,
                variant.key,
                _MATCHED,
                "priority",
                False,
                variant.content,
                variant.details,
                None,
                Variant.explain_match,  # called as explain_match(variant, subject) if asked
                (variant, subject),
            )
        return default_decision(
            slot, Reason.DEFAULT, self.name, "no variant matched: default content"
        )


class ExperimentStrategy:
    name = "experiment"

    def decide(self, slot: Slot, subject: Subject) -> Decision:
        eligible = list(slot.matching(subject))
        if not eligible:
            return default_decision(
                slot, Reason.DEFAULT, self.name, "no variant is eligible: default content"
            )
        experiment = slot.experiment
        key = slot.experiment_key
        holdout = experiment.holdout if experiment else 0.0
        stored = subject.profile.experiments.get(key)
        if stored is not None:
            if stored == slot.default:
                return self._holdout(slot, key, None, sticky=True)
            for variant in eligible:
                if variant.key == stored:
                    return self._chosen(slot, key, variant, None, sticky=True)
        u = bucket(experiment.seed if experiment else "", slot.name, key, subject.profile.id)
        if u < holdout:
            return self._holdout(slot, key, u, sticky=False)
        point = (u - holdout) / (1.0 - holdout) * sum(v.weight for v in eligible)
        acc = 0.0
        chosen = eligible[-1]
        for variant in eligible:
            acc += variant.weight
            if point < acc:
                chosen = variant
                break
        return self._chosen(slot, key, chosen, u, sticky=False)

    def _holdout(self, slot: Slot, key: str, u: float | None, *, sticky: bool) -> Decision:
        why = "recorded holdout assignment" if sticky else f"bucket {u:.4f} is in the holdout"
        return Decision(
            slot.name,
            slot.default,
            Reason.HOLDOUT,
            self.name,
            True,
            slot.default_content,
            {"experiment": key, "bucket": u, "sticky": sticky},
            assignment=(key, slot.default),
            explainer=lambda: f"experiment {key}: {why}: default content",
        )

    def _chosen(
        self, slot: Slot, key: str, variant: Variant, u: float | None, *, sticky: bool
    ) -> Decision:
        why = "recorded assignment" if sticky else f"bucket {u:.4f}, weight {variant.weight:g}"
        return Decision(
            slot.name,
            variant.key,
            Reason.EXPERIMENT,
            self.name,
            False,
            variant.content,
            {"experiment": key, "bucket": u, "sticky": sticky},
            assignment=(key, variant.key),
            explainer=lambda: f"experiment {key}: variant {variant.key} ({why})",
        )


@hookimpl
def persona_register_strategies(register: Callable[[Strategy], None]) -> None:
    register(PriorityStrategy())
    register(ExperimentStrategy())
