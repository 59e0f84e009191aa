"""Calibration of binary probability forecasts, e.g. a reward model's P(chosen ≻ rejected) = σ(r_c − r_r)
against what annotators actually chose.

Equal-width bins on [0, 1]: bin b (of K) holds the p with ⌊K·p⌋ = b, i.e. [b/K, (b+1)/K), the last bin
closed so that p = 1 lands in it. For bin B_b with n_b forecasts:

    conf(B_b) = (1/n_b) Σ_{i∈B_b} p_i          acc(B_b) = (1/n_b) Σ_{i∈B_b} y_i
    ECE       = Σ_b (n_b / n) · |acc(B_b) − conf(B_b)|

Reference: Naeini et al. (2015); Guo et al., "On Calibration of Modern Neural Networks" (2017).
Inputs may be numpy arrays, torch tensors (any device/dtype) or sequences; outputs are numpy / float.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class ReliabilityBins(NamedTuple):
    """Per-bin statistics for a reliability diagram; arrays of length `bins` (edges: `bins + 1`)."""

    edges: np.ndarray
    """bin edges 0, 1/K, …, 1"""
    confidence: np.ndarray
    """mean forecast p in the bin (nan where the bin is empty)"""
    accuracy: np.ndarray
    """mean outcome y in the bin (nan where the bin is empty)"""
    count: np.ndarray
    """number of forecasts in the bin (int)"""


def _as_float_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {arr[~np.isfinite(arr)][:3].tolist()}")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got range [{arr.min()}, {arr.max()}]")
    return arr


def reliability_bins(probabilities: Any, outcomes: Any, bins: int = 10) -> ReliabilityBins:
    """Bin forecasts p ∈ [0, 1] into `bins` equal-width bins and return (conf, acc, n) per bin.

    Args:
        probabilities: [n] forecast probabilities of the positive outcome.
        outcomes: [n] observed outcomes, 0/1 or bool (soft labels in [0, 1] are accepted and averaged).
        bins: number of equal-width bins K ≥ 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int; got bins={bins!r}")
    p = _as_float_array(probabilities, "probabilities")
    y = _as_float_array(outcomes, "outcomes")
    if p.shape != y.shape:
        raise ValueError(f"probabilities and outcomes must have the same length; got {p.size} and {y.size}")

    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # ⌊K·p⌋, p = 1 into the last bin
    count = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, sum_p / count, np.nan)
        accuracy = np.where(count > 0, sum_y / count, np.nan)
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), confidence, accuracy, count)


def expected_calibration_error(probabilities: Any, outcomes: Any, bins: int = 10) -> float:
    """ECE = Σ_b (n_b / n) · |acc(B_b) − conf(B_b)| over `bins` equal-width bins (see module docstring).

    0 for perfectly calibrated forecasts (up to binning and sampling noise), up to 1 at worst.
    Returns nan for empty input (undefined, like the agreement statistics).
    """
    rb = reliability_bins(probabilities, outcomes, bins)
    n = int(rb.count.sum())
    if n == 0:
        return float("nan")
    filled = rb.count > 0
    gap = np.abs(rb.accuracy[filled] - rb.confidence[filled])
    return float(np.sum(rb.count[filled] / n * gap))
