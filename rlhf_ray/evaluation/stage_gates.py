"""The loop's data and reward-model gates: pass/fail checks on a stage's figures before the next stage may use
its output. (The policy gate is `rlhf_ray.evaluation.gate`; the canary's guardrails live with the canary.)

    data gate:          quarantined / input rows ≤ max_quarantine_rate      (a broken feed, a schema change)
                        Fleiss κ of the pairwise labels ≥ min_fleiss_kappa  (annotators still agree)
    reward-model gate:  held-out accuracy vs truth ≥ min_accuracy
                        length correlation at equal utility ≤ max_length_correlation   (verbosity bias)

A figure that is missing (None) fails its check unless its limit is None (the check is off): a gate never
passes on data it could not see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StageCheck:
    name: str
    value: float | None
    limit: float
    kind: str  # "max" or "min"

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit


@dataclass(frozen=True)
class StageGate:
    name: str
    checks: tuple[StageCheck, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.name}={'missing' if c.value is None else round(c.value, 4)} "
                f"({'≤' if c.kind == 'max' else '≥'} {c.limit} required)" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.name, "verdict": "pass" if self.passed else "fail",
                "checks": [{**asdict(c), "passed": c.passed} for c in self.checks], "failures": self.failures()}


def _checks(specs: list[tuple[str, float | None, float | None, str]]) -> tuple[StageCheck, ...]:
    return tuple(StageCheck(name, value, limit, kind) for name, value, limit, kind in specs if limit is not None)


def data_gate(ingest: Mapping[str, Any], curate: Mapping[str, Any], max_quarantine_rate: float | None,
              min_fleiss_kappa: float | None) -> StageGate:
    """Quarantine rate = quarantined_rows / input_rows of the ingest; κ from curate's pairwise agreement."""
    rows = ingest.get("input_rows") or 0
    rate = ingest.get("quarantined_rows", 0) / rows if rows else None
    return StageGate("data", _checks([("quarantine_rate", rate, max_quarantine_rate, "max"),
                                      ("fleiss_kappa", curate.get("fleiss_kappa"), min_fleiss_kappa, "min")]))


def reward_model_gate(figures: Mapping[str, Any], min_accuracy: float | None,
                      max_length_correlation: float | None) -> StageGate:
    """Held-out accuracy and length bias from `train-rm`'s summary."""
    return StageGate("reward_model", _checks([
        ("heldout_accuracy", figures.get("heldout_accuracy"), min_accuracy, "min"),
        ("length_correlation_at_equal_utility", figures.get("heldout_length_correlation_at_equal_utility"),
         max_length_correlation, "max")]))
