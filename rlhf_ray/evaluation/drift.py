"""Drift between a reference and a current sample: PSI, the two-sample KS test, share shifts, reward shift.

Pure functions over numbers and label counts. What is compared (prompt lengths, topics, tokens, the signal mix,
label balance, rewards of a fixed probe set under two reward-model versions) is the caller's choice; the
thresholds that raise an alert are configuration (`DriftThresholds`).

Rules of thumb behind the defaults: PSI < 0.1 stable, 0.1–0.25 a moderate shift, > 0.25 a major one (Siddiqi,
"Credit Risk Scorecards", 2006); a KS distance of 0.1 means a tenth of the mass moved past some threshold.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rlhf_ray.config import StrictModel

OTHER = "__other__"
SHARE_FLOOR = 1e-4


def _as_sample(name: str, values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers; got {array.size} value(s)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; got NaN or inf")
    return array


def psi(reference: Sequence[float], current: Sequence[float], floor: float = SHARE_FLOOR) -> float:
    """Population stability index of two histograms over the same bins (counts or shares):

        r_i = ref_i / Σ ref,   c_i = cur_i / Σ cur,   both floored at ε (an empty bin would be ln 0)
        PSI = Σ_i (c_i − r_i) · ln(c_i / r_i)          ≥ 0, and 0 only for equal shares

    It is the symmetrised KL divergence KL(c‖r) + KL(r‖c).
    """
    r, c = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if r.shape != c.shape or r.ndim != 1 or r.size == 0:
        raise ValueError(f"reference and current must be histograms over the same bins; got {r.size} and "
                         f"{c.size} bins")
    if (r < 0).any() or (c < 0).any() or r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("histogram counts must be ≥ 0 with a positive total")
    r = np.maximum(r / r.sum(), floor)
    c = np.maximum(c / c.sum(), floor)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: Sequence[float], bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles 1/bins, …, (bins−1)/bins (repeated edges merged), so each
    bin holds about the same share of the reference; the outer bins are open (−∞, e₁] and (e_k, ∞)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer ≥ 2; got {bins!r}")
    sample = _as_sample("reference", reference)
    return np.unique(np.quantile(sample, np.arange(1, bins) / bins))


def binned(values: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """Counts per bin: bin j holds e_{j−1} < x ≤ e_j (with e₀ = −∞ and e_{k+1} = +∞)."""
    return np.bincount(np.searchsorted(edges, np.asarray(values, dtype=float), side="left"),
                       minlength=edges.size + 1).astype(float)


def numeric_psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """PSI of a numeric feature over reference-quantile bins (`quantile_edges`)."""
    edges = quantile_edges(reference, bins)
    return psi(binned(reference, edges), binned(_as_sample("current", current), edges))


def ks_test(reference: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov distance and its asymptotic p-value:

        D  = sup_x |F_ref(x) − F_cur(x)|             (empirical CDFs; the sup is reached at a sample point)
        nₑ = n·m / (n + m),   λ = (√nₑ + 0.12 + 0.11/√nₑ) · D
        p  = Q(λ) = 2 Σ_{k≥1} (−1)^{k−1} exp(−2k²λ²)   (Stephens 1970; Numerical Recipes §14.3)
    """
    r, c = np.sort(_as_sample("reference", reference)), np.sort(_as_sample("current", current))
    points = np.concatenate([r, c])
    distance = float(np.max(np.abs(np.searchsorted(r, points, side="right") / r.size
                                   - np.searchsorted(c, points, side="right") / c.size)))
    effective = r.size * c.size / (r.size + c.size)
    lam = (math.sqrt(effective) + 0.12 + 0.11 / math.sqrt(effective)) * distance
    return distance, kolmogorov_q(lam)


def kolmogorov_q(lam: float, terms: int = 100) -> float:
    """Q(λ) = 2 Σ_{k=1}^{∞} (−1)^{k−1} exp(−2k²λ²), clipped to [0, 1]; Q(0) = 1."""
    if lam <= 0:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, terms + 1))
    return float(min(1.0, max(0.0, 2.0 * total)))


def label_counts(labels: Iterable[Any], top: Sequence[str] | None = None) -> Counter[str]:
    """Counts per label (as text); with `top`, labels outside it are pooled as `__other__`."""
    keep = None if top is None else set(top)
    return Counter(str(x) if keep is None or str(x) in keep else OTHER for x in labels)


def aligned(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both count maps over the union of their labels, in sorted order."""
    labels = sorted(set(reference) | set(current))
    return (labels, np.array([float(reference.get(k, 0)) for k in labels]),
            np.array([float(current.get(k, 0)) for k in labels]))


def share_shift(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Largest change of one label's share: max_k |c_k/Σc − r_k/Σr| (label balance, signal mix)."""
    _, r, c = aligned(reference, current)
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("label counts must have a positive total on both sides")
    return float(np.max(np.abs(c / c.sum() - r / r.sum())))


def standardized_mean_shift(reference: Sequence[float], current: Sequence[float]) -> float:
    """(μ_cur − μ_ref) / σ_ref: how far the mean moved, in reference standard deviations (σ_ref = 0 → 1)."""
    r, c = _as_sample("reference", reference), _as_sample("current", current)
    sigma = float(r.std()) or 1.0
    return float((c.mean() - r.mean()) / sigma)


class DriftThresholds(StrictModel):
    """When drift raises an alert."""

    psi: float = Field(0.2, gt=0, description="alert when PSI exceeds this (0.1 moderate, 0.25 major)")
    ks: float = Field(0.1, gt=0, le=1, description="alert when the KS distance D exceeds this ...")
    ks_p_value: float = Field(0.01, gt=0, lt=1, description="... and its p-value is below this")
    label_balance: float = Field(0.1, gt=0, le=1, description="alert when a label's share moves more than this")
    reward_mean_shift: float = Field(0.5, gt=0, description="alert when the probe reward mean moves more than "
                                     "this many reference σ")
    bins: int = Field(10, ge=2, description="reference-quantile bins for numeric PSI")


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    alert: bool
    reasons: tuple[str, ...] = ()
    ks: float | None = None
    ks_p_value: float | None = None
    shift: float | None = None  # share shift (categorical) or standardized mean shift (numeric, when asked)
    reference_size: float = 0
    current_size: float = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


def numeric_drift(feature: str, reference: Sequence[float], current: Sequence[float], thresholds: DriftThresholds,
                  mean_shift: bool = False) -> FeatureDrift:
    """PSI and KS of a numeric feature (and, with `mean_shift`, the standardized mean shift), with the alert."""
    value = numeric_psi(reference, current, thresholds.bins)
    distance, p_value = ks_test(reference, current)
    reasons = []
    if value > thresholds.psi:
        reasons.append(f"psi {value:.3f} > {thresholds.psi}")
    if distance > thresholds.ks and p_value < thresholds.ks_p_value:
        reasons.append(f"ks {distance:.3f} > {thresholds.ks} (p={p_value:.2g})")
    shift = standardized_mean_shift(reference, current) if mean_shift else None
    if shift is not None and abs(shift) > thresholds.reward_mean_shift:
        reasons.append(f"mean shift {shift:+.2f}σ beyond ±{thresholds.reward_mean_shift}σ")
    return FeatureDrift(feature, "numeric", value, bool(reasons), tuple(reasons), distance, p_value, shift,
                        len(reference), len(current))


def categorical_drift(feature: str, reference: Mapping[str, float], current: Mapping[str, float],
                      thresholds: DriftThresholds, balance: bool = False) -> FeatureDrift:
    """PSI over label counts (and, with `balance`, the label-balance alert on the largest share shift)."""
    _, r, c = aligned(reference, current)
    value = psi(r, c)
    shift = share_shift(reference, current)
    reasons = [f"psi {value:.3f} > {thresholds.psi}"] if value > thresholds.psi else []
    if balance and shift > thresholds.label_balance:
        reasons.append(f"a label's share moved {shift:.3f} > {thresholds.label_balance}")
    return FeatureDrift(feature, "categorical", value, bool(reasons), tuple(reasons), shift=shift,
                        reference_size=float(r.sum()), current_size=float(c.sum()))


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def alerts(self) -> list[str]:
        return [f.feature for f in self.features if f.alert]

    def to_dict(self) -> dict[str, Any]:
        return {"alerts": self.alerts, "thresholds": self.thresholds,
                "features": [f.to_dict() for f in self.features]}

    def figures(self) -> dict[str, float]:
        """Sink figures: `drift/psi/<f>`, `drift/ks/<f>`, `drift/alert/<f>`, `drift/label_balance_shift` (largest
        over the label-balance features) and `drift/reward_mean_shift`."""
        out: dict[str, float] = {}
        for f in self.features:
            out[f"drift/psi/{f.feature}"] = round(f.psi, 6)
            out[f"drift/alert/{f.feature}"] = float(f.alert)
            if f.ks is not None:
                out[f"drift/ks/{f.feature}"] = round(f.ks, 6)
        balance = [f.shift for f in self.features if f.kind == "categorical" and f.feature.startswith("label_")]
        if balance:
            out["drift/label_balance_shift"] = round(max(balance), 6)
        reward = [f.shift for f in self.features if f.kind == "numeric" and f.shift is not None]
        if reward:
            out["drift/reward_mean_shift"] = round(reward[0], 6)
        return out
