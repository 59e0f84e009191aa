"""How well a reward model ranks held-out pairs, how calibrated it is, and whether it is fooled by length."""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf_ray.algos.calibration import expected_calibration_error

UTILITY_BIN = 0.25
MIN_BIN_SIZE = 10


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def length_correlation_at_equal_utility(rewards: np.ndarray, lengths: np.ndarray, utilities: np.ndarray) -> float:
    """Mean within-bin Pearson ρ(reward, length) over bins of equal true utility (width 0.25), weighted by
    bin size. Near 0: length does not buy reward; > 0: the model rewards verbosity for its own sake."""
    bins = np.floor(utilities / UTILITY_BIN)
    total, weight = 0.0, 0
    for value in np.unique(bins):
        inside = bins == value
        if inside.sum() < MIN_BIN_SIZE or lengths[inside].std() == 0 or rewards[inside].std() == 0:
            continue
        total += float(np.corrcoef(rewards[inside], lengths[inside])[0, 1]) * int(inside.sum())
        weight += int(inside.sum())
    return total / weight if weight else float("nan")


def reward_model_report(r_chosen: np.ndarray, r_rejected: np.ndarray, len_chosen: np.ndarray,
                        len_rejected: np.ndarray, u_chosen: np.ndarray, u_rejected: np.ndarray) -> dict[str, Any]:
    """Accuracy, ECE of P(a ≻ b) = σ(r_a − r_b) with alternating orientation, and verbosity diagnostics."""
    correct = r_chosen > r_rejected
    flip = np.arange(r_chosen.size) % 2 == 1
    probability = _sigmoid(np.where(flip, r_rejected - r_chosen, r_chosen - r_rejected))
    longer_worse = len_chosen < len_rejected
    rewards = np.concatenate([r_chosen, r_rejected])
    correlation = length_correlation_at_equal_utility(rewards, np.concatenate([len_chosen, len_rejected]).astype(float),
                                                      np.concatenate([u_chosen, u_rejected]))
    return {
        "pairs": int(r_chosen.size),
        "accuracy": round(float(correct.mean()), 4),
        "ece": round(expected_calibration_error(probability, (~flip).astype(float)), 4),
        "accuracy_when_longer_is_worse": round(float(correct[longer_worse].mean()), 4) if longer_worse.any() else None,
        "pairs_longer_is_worse": int(longer_worse.sum()),
        # undefined (None, not NaN: lineage metrics are canonical JSON) when no utility bin has enough pairs
        "length_correlation_at_equal_utility": round(correlation, 4) if np.isfinite(correlation) else None,
        "reward_mean": round(float(rewards.mean()), 4),
        "reward_std": round(float(rewards.std()), 4),
    }
