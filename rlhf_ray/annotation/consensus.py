"""Label consensus: (weighted) majority vote and Dawid–Skene EM, as pure vectorised numpy functions.

Input is long-form and integer-coded, one row per label: `item_index` in [0, n_items), `annotator_index`
in [0, n_annotators), `label` in [0, n_classes). Every pass over the labels is one `np.bincount`, so
100k items × 5 labels take milliseconds per pass; nothing loops over labels or items in Python.

Dawid, A. P. & Skene, A. M. (1979). Maximum likelihood estimation of observer error-rates using the EM
algorithm. Journal of the Royal Statistical Society C, 28(1), 20–28.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

TIE_RTOL = 1e-9
"""Relative tolerance under which two weighted vote totals count as a tie."""


@dataclass(frozen=True)
class Consensus:
    """Majority-vote consensus per item.

    posterior[i, k]: share of item i's (weighted) votes for class k; a uniform row when item i has none.
    label[i]: the class with the most votes, the lowest such class on a tie.
    confidence[i]: posterior[i, label[i]], and 0 for items without votes.
    n_labels[i]: number of labels item i received.
    tied[i]: item i has votes and more than one class shares the top vote.
    """

    posterior: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    n_labels: np.ndarray
    tied: np.ndarray


@dataclass(frozen=True)
class DawidSkeneResult:
    """Dawid–Skene estimate.

    posterior[i, k] = T_ik = P(true class of item i is k | labels); gold items are one-hot, items without
    labels carry the class prior. label[i] = argmax_k T_ik, confidence[i] = max_k T_ik.
    confusion[j, k, l] = π_j[k, l] = P(annotator j says l | true class k); rows sum to 1.
    class_prior[k] = p_k.
    annotator_accuracy[j] = Σ_k p_k π_j[k, k]; 1 / n_classes for an annotator without labels.
    annotator_label_count[j]: number of labels annotator j gave (judge `annotator_accuracy` by it).
    iterations: EM rounds run; converged: whether max_ik |ΔT_ik| fell below `tol` within `max_iter`.
    log_likelihood[t]: log P(labels | parameters of round t), gold classes observed (see `dawid_skene`).
    """

    posterior: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    n_labels: np.ndarray
    confusion: np.ndarray
    class_prior: np.ndarray
    annotator_accuracy: np.ndarray
    annotator_label_count: np.ndarray
    iterations: int
    converged: bool
    log_likelihood: np.ndarray


def majority_vote(
    item_index: ArrayLike,
    label: ArrayLike,
    n_items: int,
    n_classes: int,
    weights: ArrayLike | None = None,
) -> Consensus:
    """Per-item vote shares: posterior[i, k] = Σ_{labels (i, l=k)} w / Σ_{labels of i} w, w = 1 unless `weights`.

    `weights` holds one non-negative weight per label (e.g. an annotator reliability gathered by
    `annotator_index`). Ties are split evenly in the posterior and broken towards the lowest class in
    `label`, with `tied` recording them; items with no (or only zero-weight) votes get a uniform row and
    confidence 0.
    """
    _check_count("n_items", n_items, minimum=0)
    _check_count("n_classes", n_classes, minimum=1)
    items = _codes("item_index", item_index, n_items)
    labels = _codes("label", label, n_classes)
    _check_same_length(item_index=items, label=labels)
    vote_weights = _label_weights(weights, len(items))

    votes = np.bincount(items * n_classes + labels, weights=vote_weights, minlength=n_items * n_classes)
    votes = votes.reshape(n_items, n_classes)
    totals = votes.sum(axis=1)
    voted = totals > 0
    posterior = np.full((n_items, n_classes), 1.0 / n_classes)
    posterior[voted] = votes[voted] / totals[voted, None]

    top = np.isclose(votes, votes.max(axis=1)[:, None], rtol=TIE_RTOL, atol=0.0) & voted[:, None]
    winner = np.argmax(top, axis=1)
    return Consensus(
        posterior=posterior,
        label=winner,
        confidence=np.where(voted, posterior[np.arange(n_items), winner], 0.0),
        n_labels=np.bincount(items, minlength=n_items),
        tied=top.sum(axis=1) > 1,
    )


def dawid_skene(
    item_index: ArrayLike,
    annotator_index: ArrayLike,
    label: ArrayLike,
    n_items: int,
    n_annotators: int,
    n_classes: int,
    gold: Mapping[int, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    init: str = "majority",
) -> DawidSkeneResult:
    """Dawid–Skene EM over per-annotator confusion matrices π_j and class priors p.

    Each round is an M-step from the current posterior T followed by an E-step:

        M:  p_k       = (α + Σ_i T_ik) / Σ_k' (α + Σ_i T_ik')                 (i over items with labels or gold)
            π_j[k, l] = (α + Σ_{labels (i, j, l)} T_ik) / Σ_l' (α + Σ_{labels (i, j, l')} T_ik)
        E:  log T_ik  = log p_k + Σ_{labels (i, j, l)} log π_j[k, l] − log Z_i,   T_ig = [k = g] for gold (i, g)

    with α = `smoothing` > 0 (a Dirichlet(α + 1) prior that keeps every log finite; an annotator without
    labels gets a uniform π_j). The log-likelihood of round t is

        Σ_{i not gold} log Σ_k p_k Π_{labels (i, j, l)} π_j[k, l] + Σ_{gold (i, g)} log p_g Π_{(i, j, l)} π_j[g, l]

    Gold items stay clamped in every E-step, so they anchor π_j. Stops once max_ik |ΔT_ik| < `tol`.

    `init` picks the first posterior: "majority" (vote shares; the usual choice) or "gold" (only the gold
    items, so the first π_j is estimated from the answer key alone; needs `gold`). EM finds a local optimum
    and the likelihood is symmetric under relabelling the classes, so a colluding or adversarial majority
    can yield a consistent but permuted labelling; a small answer key does not overturn it from a
    "majority" start (the first π_j already trusts the majority), whereas init="gold" does.
    """
    _check_count("n_items", n_items, minimum=0)
    _check_count("n_annotators", n_annotators, minimum=0)
    _check_count("n_classes", n_classes, minimum=1)
    _check_count("max_iter", max_iter, minimum=1)
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be a finite number > 0, got {smoothing!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if init not in _INITIALIZERS:
        raise ValueError(f"init must be one of {sorted(_INITIALIZERS)}, got {init!r}")
    items = _codes("item_index", item_index, n_items)
    annotators = _codes("annotator_index", annotator_index, n_annotators)
    labels = _codes("label", label, n_classes)
    _check_same_length(item_index=items, annotator_index=annotators, label=labels)
    gold_items, gold_classes = _gold_arrays(gold, n_items, n_classes)

    n_labels = np.bincount(items, minlength=n_items)
    observed = n_labels > 0
    observed[gold_items] = True
    # Flat bincount targets, fixed across rounds: E-step sums into (i, k), M-step into (j, k, l).
    classes = np.arange(n_classes)
    item_class = (items[:, None] * n_classes + classes).ravel()
    annotator_class_label = ((annotators * n_classes * n_classes + labels)[:, None] + classes * n_classes).ravel()

    posterior = _INITIALIZERS[init](items, labels, n_items, n_classes, gold_items)
    posterior[gold_items] = np.eye(n_classes)[gold_classes]
    trace: list[float] = []
    converged = False
    for _ in range(max_iter):
        class_prior, confusion = _m_step(
            posterior, observed, items, annotator_class_label, n_annotators, n_classes, smoothing
        )
        new_posterior, log_likelihood = _e_step(
            np.log(class_prior), np.log(confusion), annotators, labels, item_class, n_items, gold_items, gold_classes
        )
        trace.append(log_likelihood)
        change = np.abs(new_posterior - posterior).max(initial=0.0)
        posterior = new_posterior
        if change < tol:
            converged = True
            break

    predicted = np.argmax(posterior, axis=1)
    return DawidSkeneResult(
        posterior=posterior,
        label=predicted,
        confidence=posterior.max(axis=1),
        n_labels=n_labels,
        confusion=confusion,
        class_prior=class_prior,
        annotator_accuracy=confusion.diagonal(axis1=1, axis2=2) @ class_prior,
        annotator_label_count=np.bincount(annotators, minlength=n_annotators),
        iterations=len(trace),
        converged=converged,
        log_likelihood=np.asarray(trace),
    )


def _m_step(
    posterior: np.ndarray,
    observed: np.ndarray,
    items: np.ndarray,
    annotator_class_label: np.ndarray,
    n_annotators: int,
    n_classes: int,
    smoothing: float,
) -> tuple[np.ndarray, np.ndarray]:
    """p_k ∝ α + Σ_{observed i} T_ik and π_j[k, l] ∝ α + Σ_{labels (i, j, l)} T_ik (see `dawid_skene`)."""
    prior = smoothing + posterior[observed].sum(axis=0)
    counts = np.bincount(
        annotator_class_label, weights=posterior[items].ravel(), minlength=n_annotators * n_classes * n_classes
    )
    confusion = smoothing + counts.reshape(n_annotators, n_classes, n_classes)
    return prior / prior.sum(), confusion / confusion.sum(axis=2, keepdims=True)


def _e_step(
    log_prior: np.ndarray,
    log_confusion: np.ndarray,
    annotators: np.ndarray,
    labels: np.ndarray,
    item_class: np.ndarray,
    n_items: int,
    gold_items: np.ndarray,
    gold_classes: np.ndarray,
) -> tuple[np.ndarray, float]:
    """T_ik ∝ p_k Π_{labels (i, j, l)} π_j[k, l] in log space, gold rows clamped; returns (T, log-likelihood)."""
    n_classes = len(log_prior)
    per_label = log_confusion.transpose(0, 2, 1)[annotators, labels]  # [labels, K]: log π_j[:, l]
    log_joint = log_prior + np.bincount(
        item_class, weights=per_label.ravel(), minlength=n_items * n_classes
    ).reshape(n_items, n_classes)
    log_evidence = _logsumexp_rows(log_joint)
    posterior = np.exp(log_joint - log_evidence[:, None])
    log_evidence[gold_items] = log_joint[gold_items, gold_classes]
    posterior[gold_items] = np.eye(n_classes)[gold_classes]
    return posterior, float(log_evidence.sum())


def _logsumexp_rows(values: np.ndarray) -> np.ndarray:
    """log Σ_k exp(values[i, k]) per row, shifted by the row maximum for stability."""
    shift = values.max(axis=1)
    return shift + np.log(np.exp(values - shift[:, None]).sum(axis=1))


def _init_majority(
    items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int, gold_items: np.ndarray
) -> np.ndarray:
    """First posterior: each item's vote shares (uniform where it has none)."""
    return majority_vote(items, labels, n_items, n_classes).posterior


def _init_gold(
    items: np.ndarray, labels: np.ndarray, n_items: int, n_classes: int, gold_items: np.ndarray
) -> np.ndarray:
    """First posterior: zero rows, so the first M-step sees only the (clamped) gold items."""
    if len(gold_items) == 0:
        raise ValueError("init='gold' needs at least one gold item, got gold=None or empty")
    return np.zeros((n_items, n_classes))


_INITIALIZERS: dict[str, Callable[[np.ndarray, np.ndarray, int, int, np.ndarray], np.ndarray]] = {
    "majority": _init_majority,
    "gold": _init_gold,
}


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _codes(name: str, values: ArrayLike, upper: int) -> np.ndarray:
    """`values` as a 1-D intp array of codes in [0, upper), or a ValueError naming `name` and the bad value."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.intp)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, got dtype {array.dtype}")
    bad = (array < 0) | (array >= upper)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {upper}), got {array[bad][0]} at position {np.flatnonzero(bad)[0]}")
    return array.astype(np.intp, copy=False)


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"one entry per label expected, got lengths {lengths}")


def _label_weights(weights: ArrayLike | None, n_labels: int) -> np.ndarray | None:
    if weights is None:
        return None
    array = np.asarray(weights, dtype=float)
    if array.shape != (n_labels,):
        raise ValueError(f"weights must have one entry per label, shape ({n_labels},), got {array.shape}")
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        raise ValueError(f"weights must be finite and >= 0, got {array[bad][0]} at position {np.flatnonzero(bad)[0]}")
    return array


def _gold_arrays(gold: Mapping[int, int] | None, n_items: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold (item, class) pairs as two intp arrays, checked against the item and class ranges."""
    pairs = list((gold or {}).items())
    gold_items = _codes("gold item", np.array([item for item, _ in pairs], dtype=np.intp), n_items)
    gold_classes = _codes("gold class", np.array([cls for _, cls in pairs], dtype=np.intp), n_classes)
    return gold_items, gold_classes
