"""A sweep's trials as outcomes: start/end held-out figures, reward-hacking flags, the Pareto front of quality
vs KL, and the choice of one trial by held-out quality — never by the reward the policy optimised."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rlhf_ray.evaluation.hacking import HackingThresholds, hacking_flags
from rlhf_ray.evaluation.pareto import pareto_front

FIGURES = ("reward", "words", "canned_rate", "reward_length_corr", "true_utility", "judge_reward")


@dataclass(frozen=True)
class TrialOutcome:
    """One trial: its parameters, how it ended, its held-out figures at start and end, and the final KL."""

    trial_id: str
    params: Mapping[str, Any]
    status: str  # "completed", "stopped" (early, by the scheduler) or "error"
    iterations: int
    start: Mapping[str, float | None]
    end: Mapping[str, float | None]
    kl: float | None
    flags: Mapping[str, str] = field(default_factory=dict)
    pareto: bool = False

    def quality(self, key: str, at: str = "end") -> float | None:
        value = (self.end if at == "end" else self.start).get(key)
        return None if value is None else float(value)


def figures_from_report(metrics: Mapping[str, Any], prefix: str) -> dict[str, float | None]:
    """`eval/reward` → `reward`, ... for the figures a sweep compares, from one reported metrics dict."""
    return {name: metrics.get(f"{prefix}/{name}") for name in FIGURES if f"{prefix}/{name}" in metrics}


def assess(outcomes: Sequence[TrialOutcome], quality: str,
           thresholds: HackingThresholds | None = None) -> list[TrialOutcome]:
    """Outcomes with their hacking flags and Pareto membership (max quality, min KL) filled in. The front is
    over completed trials only: one stopped early has had fewer updates, so its low KL says nothing."""
    limits = thresholds or HackingThresholds()
    flagged = [replace(o, flags=hacking_flags(o.start, o.end, quality, limits)) for o in outcomes]
    measured = [i for i, o in enumerate(flagged)
                if o.status == "completed" and o.quality(quality) is not None and o.kl is not None]
    front = {measured[i] for i in pareto_front([(flagged[i].quality(quality), flagged[i].kl) for i in measured],
                                               (True, False))}
    return [replace(o, pareto=i in front) for i, o in enumerate(flagged)]


def choose(outcomes: Sequence[TrialOutcome], quality: str, disqualifying: Sequence[str]) -> tuple[int | None, str]:
    """The index of the trial to deploy, and why: the best end quality among completed trials without a
    disqualifying flag; failing that, the best completed trial, with the reason saying so."""
    completed = [i for i, o in enumerate(outcomes) if o.status == "completed" and o.quality(quality) is not None]
    if not completed:
        return None, "no trial completed with a held-out figure"
    clean = [i for i in completed if not set(outcomes[i].flags) & set(disqualifying)]
    pool = clean or completed
    best = max(pool, key=lambda i: outcomes[i].quality(quality) or 0.0)
    end, start = outcomes[best].quality(quality), outcomes[best].quality(quality, "start")
    gain = f" ({end - start:+.3f} over its start)" if end is not None and start is not None else ""
    if clean:
        return best, f"highest held-out {quality}{gain} among {len(clean)} unflagged trial(s)"
    return best, (f"every completed trial raised a disqualifying flag; highest held-out {quality}{gain} "
                  "chosen anyway — review before deploying")
