"""Judges of answers that never train the policy: a second reward model, an LLM judge, or in simulation the
world's hidden utility. The PPO engine and the sweep read quality only through this interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Evaluator(Protocol):
    """Scores a batch of answers; `figure` names its headline figure (e.g. "true_utility", "judge_reward")."""

    figure: str

    def evaluate(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                 responses: Sequence[str]) -> dict[str, float]:
        """Figures of these answers, averaged over them; holds at least `figure`."""
        ...


def mean_figures(evaluators: Sequence[Evaluator], prompt_ids: Sequence[str], prompts: Sequence[str],
                 responses: Sequence[str]) -> dict[str, float]:
    """Every evaluator's figures for one batch of answers, merged (a later evaluator never hides an earlier
    one's figure of the same name: that is a configuration error)."""
    merged: dict[str, float] = {}
    for evaluator in evaluators:
        figures = evaluator.evaluate(prompt_ids, prompts, responses)
        if clash := sorted(set(figures) & set(merged)):
            raise ValueError(f"evaluators report the same figure twice: {clash}")
        merged.update({name: float(value) for name, value in figures.items()})
    return merged


def mean(values: Sequence[float]) -> float:
    """The mean, 0.0 for no values (a figure of an empty batch)."""
    return float(np.mean(values)) if len(values) else 0.0
