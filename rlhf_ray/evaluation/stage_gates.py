"""The loop's data and reward-model gates: pass/fail checks on a stage's figures before the next stage may use
its output. (The policy gate is `rlhf_ray.evaluation.gate`; the canary's guardrails live with the canary.)

    data gate:          quarantined / input rows ≤ max_quarantine_rate      (a broken feed, a schema change)
                        κ / κ_expected ≥ min_kappa_ratio                    (annotators agree as their gold
                                                                             accuracies predict)
                        Fleiss κ of the pairwise labels ≥ min_fleiss_kappa  (an absolute floor, optional)
    reward-model gate:  held-out accuracy vs truth ≥ min_accuracy
                        length correlation at equal utility ≤ max_length_correlation   (verbosity bias)

A figure that is missing (None) fails its check unless its limit is None (the check is off): a gate never
passes on data it could not see.

κ_expected is curate's `expected_fleiss_kappa`: the Fleiss κ the pairwise labels would show if each annotator
labelled every item as accurately as its gold items (`rlhf_ray.annotation.agreement.expected_fleiss_kappa`). A
ratio well below 1 means the labels agree less than the annotators' own measured accuracy predicts: labels noisier
on the bulk than on gold (careless work on items known not to be gold, ambiguous guidelines, a feed that garbles
choices). The ratio is judged only on at least `min_gold_labels` gold labels: on fewer, κ_expected is noise.
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
    note: str = ""  # what the value was judged from, or why it is missing

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
                f"({'≤' if c.kind == 'max' else '≥'} {c.limit} required{': ' + c.note if c.note else ''})"
                for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.name, "verdict": "pass" if self.passed else "fail",
                "checks": [{**asdict(c), "passed": c.passed} for c in self.checks], "failures": self.failures()}


def _checks(specs: list[tuple[Any, ...]]) -> tuple[StageCheck, ...]:
    """One check per (name, value, limit, kind[, note]) whose limit is set (None turns a check off)."""
    return tuple(StageCheck(*spec) for spec in specs if spec[2] is not None)


def kappa_ratio(curate: Mapping[str, Any], min_gold_labels: int) -> tuple[float | None, str]:
    """κ / κ_expected from curate's figures, and what it was judged from or why it cannot be (then None)."""
    kappa, expected = curate.get("fleiss_kappa"), curate.get("expected_fleiss_kappa")
    gold_labels = curate.get("expected_fleiss_kappa_gold_labels") or 0
    if expected is None:
        return None, "no expected κ: curate had no gold labels on pairwise items (pass --gold)"
    if gold_labels < min_gold_labels:
        return None, f"the expected κ rests on {gold_labels} gold labels, {min_gold_labels} needed"
    if expected <= 0:
        return None, f"expected κ {expected} ≤ 0: on gold the annotators are no better than chance"
    if kappa is None:
        return None, "no Fleiss κ"
    return kappa / expected, f"κ {kappa} vs {expected} expected from {gold_labels} gold labels"


def data_gate(ingest: Mapping[str, Any], curate: Mapping[str, Any], max_quarantine_rate: float | None,
              min_fleiss_kappa: float | None, min_kappa_ratio: float | None, min_gold_labels: int) -> StageGate:
    """Quarantine rate = quarantined_rows / input_rows of the ingest; κ and κ_expected from curate's pairwise
    agreement (`kappa_ratio`)."""
    rows = ingest.get("input_rows") or 0
    rate = ingest.get("quarantined_rows", 0) / rows if rows else None
    ratio, judged_from = kappa_ratio(curate, min_gold_labels)
    return StageGate("data", _checks([("quarantine_rate", rate, max_quarantine_rate, "max"),
                                      ("fleiss_kappa_vs_expected", ratio, min_kappa_ratio, "min", judged_from),
                                      ("fleiss_kappa", curate.get("fleiss_kappa"), min_fleiss_kappa, "min")]))


def reward_model_gate(figures: Mapping[str, Any], min_accuracy: float | None,
                      max_length_correlation: float | None) -> StageGate:
    """Held-out accuracy and length bias from `train-rm`'s summary."""
    return StageGate("reward_model", _checks([
        ("heldout_accuracy", figures.get("heldout_accuracy"), min_accuracy, "min"),
        ("length_correlation_at_equal_utility", figures.get("heldout_length_correlation_at_equal_utility"),
         max_length_correlation, "max")]))
