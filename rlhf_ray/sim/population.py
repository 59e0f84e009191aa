"""Simulated people: end users and annotators, each a fixed profile drawn from the world's seed.

Their behaviour is a noisy function of the hidden utility, with the distortions real feedback has:
users are lenient or strict, annotators differ in accuracy, some prefer longer answers, some click
at random, and everyone gets worse late in a long session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_ray.sim.config import PopulationConfig


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    region: str
    satisfaction_threshold: float
    temperature: float
    edit_propensity: float


@dataclass(frozen=True)
class AnnotatorProfile:
    """`accuracy` is the chance of picking the truly better response when fresh and not length-swayed."""

    annotator_id: str
    region: str
    accuracy: float
    verbosity_bias: float
    spammer: bool
    fatigue_halflife: float
    session_length: int

    def accuracy_at(self, position: int) -> float:
        """Fatigue: the edge over chance halves every `fatigue_halflife` items into a session.

            a(t) = ½ + (a₀ − ½) · 2^(−t / h)
        """
        if self.spammer:
            return 0.5
        return 0.5 + (self.accuracy - 0.5) * 2.0 ** (-position / self.fatigue_halflife)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(rng.uniform(low, high)) if high > low else float(low)


def build_users(config: PopulationConfig, rng: np.random.Generator) -> tuple[UserProfile, ...]:
    return tuple(
        UserProfile(
            user_id=f"user-{i:06d}",
            region=str(rng.choice(config.regions)),
            satisfaction_threshold=float(rng.normal(0.7, 0.25)),
            temperature=float(rng.uniform(0.1, 0.4)),
            edit_propensity=float(rng.uniform(0.0, 1.0)),
        )
        for i in range(config.num_users)
    )


def build_annotators(config: PopulationConfig, rng: np.random.Generator) -> tuple[AnnotatorProfile, ...]:
    """The pool: a `spammer_fraction` share (at least one when the fraction is positive) answers at random."""
    count = config.num_annotators
    num_spammers = round(config.spammer_fraction * count)
    if config.spammer_fraction > 0:
        num_spammers = max(1, num_spammers)
    spammers = set(rng.choice(count, size=num_spammers, replace=False).tolist())
    low_len, high_len = config.session_length_range
    return tuple(
        AnnotatorProfile(
            annotator_id=f"annotator-{i:03d}",
            region=str(rng.choice(config.regions)),
            accuracy=_uniform(rng, config.accuracy_range),
            verbosity_bias=_uniform(rng, config.verbosity_bias_range),
            spammer=i in spammers,
            fatigue_halflife=_uniform(rng, config.fatigue_halflife_range),
            session_length=int(rng.integers(low_len, high_len + 1)),
        )
        for i in range(count)
    )


def sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))
