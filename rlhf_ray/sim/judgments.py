"""How simulated people turn the hidden utility into feedback, noise and biases included."""

from __future__ import annotations

import numpy as np

from rlhf_ray.contracts import RUBRIC_CRITERIA
from rlhf_ray.sim.population import AnnotatorProfile, UserProfile, sigmoid
from rlhf_ray.sim.prompts import PromptSpec
from rlhf_ray.sim.utility import UtilityBreakdown, normalize

TIE_MARGIN = 0.05
RANKING_NOISE_SCALE = 1.5
RUBRIC_NOISE_SCALE = 2.0
SAFETY_FLAG_RECALL = 0.92
SAFETY_FLAG_FALSE_POSITIVE_RATE = 0.03
REPORTED_SUCCESS_GIVEN_SUCCESS = 0.9
REPORTED_SUCCESS_GIVEN_FAILURE = 0.15
RETRY_MAX_PROB = 0.6
COPY_MAX_PROB = 0.5


def pairwise_choice(
    annotator: AnnotatorProfile,
    position: int,
    a: UtilityBreakdown,
    b: UtilityBreakdown,
    rng: np.random.Generator,
) -> str:
    """Pick "a", "b" or "tie".

    A spammer flips a coin. Otherwise, with probability `verbosity_bias` the longer answer wins
    regardless of quality; else the truly better one wins with probability a(t) (see
    `AnnotatorProfile.accuracy_at`). Near-equal answers are a coin toss with an occasional "tie".
    """
    if annotator.spammer:
        return "a" if rng.random() < 0.5 else "b"
    if a.words != b.words and rng.random() < annotator.verbosity_bias:
        return "a" if a.words > b.words else "b"
    if abs(a.total - b.total) < TIE_MARGIN:
        return str(rng.choice(["a", "b", "tie"], p=[0.4, 0.4, 0.2]))
    better, worse = ("a", "b") if a.total > b.total else ("b", "a")
    return better if rng.random() < annotator.accuracy_at(position) else worse


def best_of_n_ranking(
    annotator: AnnotatorProfile,
    position: int,
    breakdowns: list[UtilityBreakdown],
    ideal_words: int,
    rng: np.random.Generator,
) -> list[int]:
    """Indices of the responses from best to worst as the annotator perceives them.

        perceived_i = U_i + bias · words_i / ideal + ε_i,   ε_i ~ N(0, (1 − a(t)) · 1.5)
    """
    if annotator.spammer:
        return [int(i) for i in rng.permutation(len(breakdowns))]
    noise = (1.0 - annotator.accuracy_at(position)) * RANKING_NOISE_SCALE
    perceived = [
        b.total + annotator.verbosity_bias * b.words / ideal_words + rng.normal(0.0, noise) for b in breakdowns
    ]
    return [int(i) for i in np.argsort(perceived)[::-1]]


def rubric_scores(
    annotator: AnnotatorProfile, position: int, breakdown: UtilityBreakdown, rng: np.random.Generator
) -> dict[str, float]:
    """1–5 per criterion from the utility's parts, plus noise; length-biased annotators overrate helpfulness."""
    if annotator.spammer:
        return {c: float(rng.integers(1, 6)) for c in RUBRIC_CRITERIA}
    clean = {
        "helpfulness": 1 + 4 * breakdown.coverage + 4 * annotator.verbosity_bias * min(1.0, breakdown.verbosity_cost),
        "correctness": 5.0 if breakdown.task_success else 1 + 3 * breakdown.coverage,
        "safety": 1.0 if breakdown.safety_violations else 5.0,
        "concision": 5 - 4 * min(1.0, breakdown.verbosity_cost) - 0.5 * breakdown.boilerplate,
    }
    noise = (1.0 - annotator.accuracy_at(position)) * RUBRIC_NOISE_SCALE
    return {c: float(np.clip(round(v + rng.normal(0.0, noise)), 1, 5)) for c, v in clean.items()}


def describe(spec: PromptSpec, response: str, breakdown: UtilityBreakdown) -> str:
    """A rationale fragment an annotator would write: what is covered, missing, unsafe or padded."""
    text = normalize(response)
    covered = [t for t in spec.required_terms if t in text]
    missing = [t for t in spec.required_terms if t not in text]
    notes = []
    if covered:
        notes.append("covers " + " , ".join(covered))
    if missing:
        notes.append("misses " + " , ".join(missing))
    if breakdown.safety_violations:
        notes.append("gives unsafe advice")
    if breakdown.verbosity_cost > 0.5:
        notes.append("is too long")
    if breakdown.boilerplate:
        notes.append("has filler phrases")
    return " ; ".join(notes) or "says little"


def spammer_rationale(rng: np.random.Generator) -> str:
    return str(rng.choice(["looks fine .", "ok .", "good .", "better ."]))


def thumbs_up(user: UserProfile, breakdown: UtilityBreakdown, rng: np.random.Generator) -> float:
    """P(up) = σ((U − θ_user) / T_user)."""
    return float(rng.random() < sigmoid((breakdown.total - user.satisfaction_threshold) / user.temperature))


def likert(user: UserProfile, breakdown: UtilityBreakdown, rng: np.random.Generator) -> float:
    """score = round(1 + 4 · σ((U − θ_user) / T_user + ε)),  ε ~ N(0, 0.3)."""
    z = (breakdown.total - user.satisfaction_threshold) / user.temperature + rng.normal(0.0, 0.3)
    return float(round(1 + 4 * sigmoid(z)))


def implicit_events(
    user: UserProfile, breakdown: UtilityBreakdown, rng: np.random.Generator
) -> list[tuple[str, float]]:
    """What one interaction leaves behind: always a dwell time, sometimes a retry or a copy.

        P(retry) = 0.6 · σ((θ − U)/T),  P(copy) = 0.5 · σ((U − θ)/T),
        dwell ~ LogNormal(log(3 + 0.4 · words) + 0.3 · (U − θ), 0.4)  seconds
    """
    margin = (breakdown.total - user.satisfaction_threshold) / user.temperature
    events = [("dwell", float(rng.lognormal(np.log(3 + 0.4 * breakdown.words) + 0.3 * margin, 0.4)))]
    if rng.random() < RETRY_MAX_PROB * sigmoid(-margin):
        events.append(("retry", 1.0))
    if rng.random() < COPY_MAX_PROB * sigmoid(margin):
        events.append(("copy", 1.0))
    return events


def reported_success(breakdown: UtilityBreakdown, rng: np.random.Generator) -> bool:
    p = REPORTED_SUCCESS_GIVEN_SUCCESS if breakdown.task_success else REPORTED_SUCCESS_GIVEN_FAILURE
    return bool(rng.random() < p)


def safety_review(breakdown: UtilityBreakdown, rng: np.random.Generator) -> tuple[bool, str, int | None]:
    """A trust-and-safety reviewer with imperfect recall and a small false-positive rate."""
    unsafe = breakdown.safety_violations > 0
    flagged = bool(rng.random() < (SAFETY_FLAG_RECALL if unsafe else SAFETY_FLAG_FALSE_POSITIVE_RATE))
    if not flagged:
        return False, "none", None
    return True, "harmful_instructions", int(min(3, max(1, breakdown.safety_violations)))
