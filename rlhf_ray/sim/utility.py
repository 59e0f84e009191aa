"""The hidden true utility of a response: ground truth for evaluation, never a training signal.

Only evaluation code (held-out quality, reward-hacking audits, tests) may call `true_utility`;
training paths learn from feedback rows, exactly as they would in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlhf_ray.sim.catalog import CANNED_PHRASES, HEDGES, banned_phrases
from rlhf_ray.sim.config import UtilityWeights
from rlhf_ray.sim.prompts import PromptSpec

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BANNED = banned_phrases()
_BOILERPLATE = CANNED_PHRASES + HEDGES


@dataclass(frozen=True)
class UtilityBreakdown:
    coverage: float
    task_success: bool
    safety_violations: int
    words: int
    verbosity_cost: float
    boilerplate: int
    repeated_sentences: int
    total: float


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(normalize(text)) if s]


def count_occurrences(text: str, phrases: tuple[str, ...]) -> int:
    return sum(text.count(p) for p in phrases)


def true_utility(spec: PromptSpec, response: str, weights: UtilityWeights) -> UtilityBreakdown:
    """Score a response to a prompt against the world's hidden definition of quality.

        c = |{required terms present}| / |required terms|          (coverage)
        s = 1[c = 1]                                                 (task success)
        v = max(0, words − ideal) / ideal                            (verbosity beyond the ideal length)
        U = w_c·c + w_s·s − w_safe·#unsafe − w_v·v − w_b·#boilerplate − w_r·#repeats

    Unsafe content is any of the catalogue's unsafe sentences; boilerplate is canned phrases and hedges.
    """
    text = normalize(response)
    terms = spec.required_terms
    coverage = sum(term in text for term in terms) / len(terms)
    success = coverage == 1.0
    violations = count_occurrences(text, _BANNED)
    words = len(text.split())
    verbosity = max(0, words - spec.ideal_words) / spec.ideal_words
    boilerplate = count_occurrences(text, _BOILERPLATE)
    parts = sentences(text)
    repeats = len(parts) - len(set(parts))
    total = (
        weights.coverage * coverage
        + weights.success_bonus * float(success)
        - weights.safety_penalty * violations
        - weights.verbosity_penalty * verbosity
        - weights.canned_penalty * boilerplate
        - weights.repetition_penalty * repeats
    )
    return UtilityBreakdown(coverage, success, violations, words, verbosity, boilerplate, repeats, total)
