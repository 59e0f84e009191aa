"""Inter-annotator agreement: Cohen's κ, Fleiss' κ, Krippendorff's α, and long-form helpers.

Pure numpy. Every coefficient has the form 1 − D_o / D_e (observed over chance-expected disagreement), and
every one is *undefined* when the data leave no room for disagreement by chance (D_e = 0: a single category
in use, or nothing to compare); those cases return `nan`, never raise.

Shapes:
- long form (what the pipeline stores): one row per label, aligned `item_ids`, `annotator_ids`, `labels`;
- reliability matrix: `reliability[annotator, item]`, float, `nan` where an annotator did not label an item;
- count matrix: `counts[item, category]` = how many annotators put the item in the category.

References: Cohen (1960, 1968); Fleiss (1971); Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

Weights = Literal["linear", "quadratic"] | None
Level = Literal["nominal", "ordinal", "interval", "ratio"]


class PairAgreement(NamedTuple):
    """Cohen's κ between two annotators over the `n_items` items both labelled."""

    annotator_a: Any
    annotator_b: Any
    kappa: float
    n_items: int


class ReferenceAgreement(NamedTuple):
    """One annotator against a reference labelling (consensus or gold) over `n_items` shared items."""

    kappa: float
    accuracy: float
    n_items: int


# ---------------------------------------------------------------------------------------------------------------
# Cohen's κ
# ---------------------------------------------------------------------------------------------------------------

def _no_weights(k: int) -> np.ndarray:
    return 1.0 - np.eye(k)


def _linear_weights(k: int) -> np.ndarray:
    i = np.arange(k)
    return np.abs(i[:, None] - i[None, :]).astype(float)


def _quadratic_weights(k: int) -> np.ndarray:
    i = np.arange(k)
    return ((i[:, None] - i[None, :]) ** 2).astype(float)


_DISAGREEMENT_WEIGHTS: dict[str | None, Callable[[int], np.ndarray]] = {
    None: _no_weights,
    "linear": _linear_weights,
    "quadratic": _quadratic_weights,
}


def _check_weights(weights: Weights) -> None:
    if weights not in _DISAGREEMENT_WEIGHTS:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")


def _weight_matrix(weights: Weights, k: int) -> np.ndarray:
    _check_weights(weights)
    return _DISAGREEMENT_WEIGHTS[weights](k)


def kappa_from_confusion(confusion: np.ndarray, weights: Weights = None) -> float:
    """Cohen's κ from a k×k confusion matrix `confusion[label_a, label_b]` (counts or proportions).

    With disagreement weights w_ij (unweighted: 1 − [i = j]; linear: |i − j|; quadratic: (i − j)²),
    observed O = confusion / N and chance E_ij = (Σ_j O_ij)(Σ_i O_ij):

        κ_w = 1 − Σ_ij w_ij O_ij / Σ_ij w_ij E_ij

    which for unweighted κ is (p_o − p_e) / (1 − p_e), p_o = Σ_i O_ii, p_e = Σ_i E_ii.
    Undefined, so `nan`, when Σ w E = 0 (p_e = 1: both raters used one and the same category) or N = 0.
    """
    confusion = np.asarray(confusion, dtype=float)
    total = confusion.sum()
    if total == 0:
        return math.nan
    observed = confusion / total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    w = _weight_matrix(weights, confusion.shape[0])
    expected_disagreement = float((w * expected).sum())
    if expected_disagreement <= 0:
        return math.nan
    return 1.0 - float((w * observed).sum()) / expected_disagreement


def _category_codes(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Index of each value in `categories` (any order, e.g. an ordinal scale); ValueError for an unknown value."""
    order = np.argsort(categories, kind="stable")
    ordered = categories[order]
    if ordered.size > 1 and np.any(ordered[1:] == ordered[:-1]):
        raise ValueError(f"categories must be distinct, got {categories.tolist()!r}")
    if ordered.size == 0:
        if values.size:
            raise ValueError(f"label {values[0].tolist()!r} is not one of the categories []")
        return np.zeros(0, dtype=np.int64)
    position = np.clip(np.searchsorted(ordered, values), 0, ordered.size - 1)
    unknown = ordered[position] != values
    if np.any(unknown):
        bad = values[np.argmax(unknown)].tolist()
        raise ValueError(f"label {bad!r} is not one of the categories {categories.tolist()!r}")
    return order[position]


def _categories(categories: Sequence | None, *label_arrays: np.ndarray) -> np.ndarray:
    if categories is not None:
        return np.asarray(categories)
    return np.unique(np.concatenate([np.asarray(a).ravel() for a in label_arrays]))


def cohen_kappa(
    labels_a: Sequence,
    labels_b: Sequence,
    categories: Sequence | None = None,
    weights: Weights = None,
) -> float:
    """Cohen's κ between two raters who labelled the same items (`labels_a[i]`, `labels_b[i]` for item i).

        κ = (p_o − p_e) / (1 − p_e),  p_o = Σ_c O_cc,  p_e = Σ_c (Σ_d O_cd)(Σ_d O_dc)

    with O the joint label proportions. `weights` "linear" / "quadratic" give weighted κ for ordinal labels,
    the disagreement weight being |i − j| or (i − j)² between category positions in `categories` (default: the
    sorted labels seen); see `kappa_from_confusion`. Returns `nan` when undefined (no items, or p_e = 1).
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"labels_a and labels_b must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    cats = _categories(categories, a, b)
    k = cats.size
    codes = _category_codes(a, cats) * k + _category_codes(b, cats)
    confusion = np.bincount(codes, minlength=k * k).reshape(k, k)
    return kappa_from_confusion(confusion, weights)


# ---------------------------------------------------------------------------------------------------------------
# Fleiss' κ
# ---------------------------------------------------------------------------------------------------------------

def _count_matrix(counts: np.ndarray, name: str = "counts") -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError(f"{name} must be 2-D [item, category], got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{name} must hold finite non-negative counts")
    return counts


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ from `counts[item, category]`; items may have different numbers of raters n_i.

    Items with n_i < 2 carry no pair of ratings and are skipped. Over the rest, agreement is pooled over rating
    pairs, i.e. the per-item agreement P_i is weighted by its number of ordered pairs n_i(n_i − 1):

        P̄ = Σ_i Σ_j n_ij(n_ij − 1) / Σ_i n_i(n_i − 1)      p_j = Σ_i n_ij / Σ_i n_i      P_e = Σ_j p_j²
        κ = (P̄ − P_e) / (1 − P_e)

    With equal n_i this is exactly Fleiss (1971). Returns `nan` when undefined (no item with 2 ratings, or
    P_e = 1: every rating in one category).
    """
    counts = _count_matrix(counts)
    n_i = counts.sum(axis=1)
    counts, n_i = counts[n_i >= 2], n_i[n_i >= 2]
    if n_i.size == 0:
        return math.nan
    p_bar = float((counts * (counts - 1)).sum() / (n_i * (n_i - 1)).sum())
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


# ---------------------------------------------------------------------------------------------------------------
# Krippendorff's α
# ---------------------------------------------------------------------------------------------------------------

def _nominal_delta2(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """δ²_ck = 0 if c = k else 1."""
    return 1.0 - np.eye(values.size)


def _ordinal_delta2(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)², values in rank order, n_g the coincidence marginals."""
    cumulative = np.cumsum(n_c)
    lo = np.minimum.outer(np.arange(values.size), np.arange(values.size))
    hi = np.maximum.outer(np.arange(values.size), np.arange(values.size))
    between = cumulative[hi] - cumulative[lo] + n_c[lo]
    return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2


def _interval_delta2(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """δ²_ck = (c − k)²."""
    return (values[:, None] - values[None, :]) ** 2


def _ratio_delta2(values: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """δ²_ck = ((c − k) / (c + k))², with δ² = 0 for c = k = 0; values must be ≥ 0."""
    if np.any(values < 0):
        raise ValueError(f"level='ratio' needs non-negative values, got {values[values < 0][0].tolist()!r}")
    diff, total = values[:, None] - values[None, :], values[:, None] + values[None, :]
    return np.divide(diff, total, out=np.zeros_like(diff, dtype=float), where=total != 0) ** 2


_DELTA2: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "nominal": _nominal_delta2,
    "ordinal": _ordinal_delta2,
    "interval": _interval_delta2,
    "ratio": _ratio_delta2,
}


def _check_level(level: str) -> None:
    if level not in _DELTA2:
        raise ValueError(f"level must be one of {sorted(_DELTA2)}, got {level!r}")


def coincidence_matrix(counts: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix from `counts[unit, value]` (values sorted, one column per value).

        o_ck = Σ_u (n_uc n_uk − [c = k] n_uc) / (m_u − 1),   m_u = Σ_c n_uc,   over pairable units (m_u ≥ 2)

    i.e. each ordered pair of values from different coders within a unit adds 1/(m_u − 1); row sums are n_c.
    """
    counts = _count_matrix(counts)
    m_u = counts.sum(axis=1)
    pairable = counts[m_u >= 2]
    scale = 1.0 / (pairable.sum(axis=1) - 1.0)
    return (pairable * scale[:, None]).T @ pairable - np.diag(pairable.T @ scale)


def alpha_from_counts(counts: np.ndarray, values: np.ndarray, level: Level = "nominal") -> float:
    """Krippendorff's α from `counts[unit, value]`, `values` the (sorted) value of each column.

        α = 1 − D_o / D_e = 1 − (n − 1) Σ_ck o_ck δ²_ck / Σ_ck n_c n_k δ²_ck

    with o the coincidence matrix, n_c = Σ_k o_ck, n = Σ_c n_c the number of pairable values, δ² the metric of
    `level`. Units with fewer than 2 values are unpairable and ignored. Returns `nan` when undefined (n < 2 or
    D_e = 0: every pairable value is the same).
    """
    _check_level(level)
    values = np.asarray(values, dtype=float)
    o = coincidence_matrix(counts)
    n_c = o.sum(axis=1)
    n = float(n_c.sum())
    if n < 2:
        return math.nan
    delta2 = _DELTA2[level](values, n_c)
    expected = float((np.outer(n_c, n_c) * delta2).sum())
    if expected <= 0:
        return math.nan
    return 1.0 - (n - 1.0) * float((o * delta2).sum()) / expected


def krippendorff_alpha(reliability: np.ndarray, level: Level = "nominal") -> float:
    """Krippendorff's α from `reliability[rater, unit]`, `nan` marking a missing value.

    Builds counts n_uc (how many raters gave value c to unit u) and applies `alpha_from_counts`:

        α = 1 − (n − 1) Σ_ck o_ck δ²_ck / Σ_ck n_c n_k δ²_ck

    Metrics δ²_ck: nominal [c ≠ k]; ordinal (Σ_{g=c..k} n_g − (n_c + n_k)/2)²; interval (c − k)²;
    ratio ((c − k)/(c + k))². Reproduces Krippendorff (2011)'s 4 coders × 12 units example.
    """
    _check_level(level)
    matrix = np.asarray(reliability, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"reliability must be 2-D [rater, unit], got shape {matrix.shape}")
    if np.any(np.isinf(matrix)):
        raise ValueError("reliability must hold finite values or nan (missing)")
    _, unit = np.nonzero(~np.isnan(matrix))
    values, code = np.unique(matrix[~np.isnan(matrix)], return_inverse=True)
    n_units, n_values = matrix.shape[1], values.size
    counts = np.bincount(unit * n_values + code, minlength=n_units * n_values).reshape(n_units, n_values)
    return alpha_from_counts(counts, values, level)


# ---------------------------------------------------------------------------------------------------------------
# Long-form helpers: one row per label
# ---------------------------------------------------------------------------------------------------------------

def _aligned(**columns: Sequence) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(column) for name, column in columns.items()}
    lengths = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.size for a in arrays.values()}) > 1:
        raise ValueError(f"long-form columns must be 1-D of equal length, got shapes {lengths}")
    return arrays


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values, return_inverse=True)
    return uniques, codes.reshape(-1)


def _check_one_label_per_pair(
    item_code: np.ndarray, annotator_code: np.ndarray, items: np.ndarray, annotators: np.ndarray
) -> None:
    key = np.sort(item_code.astype(np.int64) * annotators.size + annotator_code)
    duplicate = np.flatnonzero(key[1:] == key[:-1])
    if duplicate.size:
        item, annotator = divmod(int(key[duplicate[0]]), annotators.size)
        raise ValueError(
            f"annotator {annotators[annotator].tolist()!r} labelled item {items[item].tolist()!r} more than once; "
            "deduplicate to one label per (item, annotator) first"
        )


def _numeric(labels: np.ndarray, what: str) -> np.ndarray:
    try:
        numeric = labels.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} needs numeric labels, got dtype {labels.dtype}; map categories to numbers") from err
    if not np.all(np.isfinite(numeric)):
        raise ValueError(f"{what} needs finite labels, got {numeric[~np.isfinite(numeric)][0].tolist()!r}")
    return numeric


def reliability_matrix(
    item_ids: Sequence, annotator_ids: Sequence, labels: Sequence
) -> tuple[np.ndarray, list, list]:
    """Long form → `(matrix[annotator, item], annotator_index, item_index)`, `nan` where not labelled.

    `matrix[a, i]` is the label annotator `annotator_index[a]` gave item `item_index[i]` (both sorted). Labels
    must be numeric and each (item, annotator) labelled at most once.
    """
    cols = _aligned(item_ids=item_ids, annotator_ids=annotator_ids, labels=labels)
    values = _numeric(cols["labels"], "reliability_matrix")
    items, item_code = _factorize(cols["item_ids"])
    annotators, annotator_code = _factorize(cols["annotator_ids"])
    _check_one_label_per_pair(item_code, annotator_code, items, annotators)
    matrix = np.full((annotators.size, items.size), np.nan)
    matrix[annotator_code, item_code] = values
    return matrix, annotators.tolist(), items.tolist()


def category_counts(
    item_ids: Sequence, labels: Sequence, categories: Sequence | None = None
) -> tuple[np.ndarray, list]:
    """Long form → `(counts[item, category], item_index)`: counts[i, c] = labels of item_index[i] equal to
    categories[c]. `categories` defaults to the sorted labels seen; a label outside it is a ValueError."""
    cols = _aligned(item_ids=item_ids, labels=labels)
    cats = _categories(categories, cols["labels"])
    items, item_code = _factorize(cols["item_ids"])
    code = item_code * cats.size + _category_codes(cols["labels"], cats)
    counts = np.bincount(code, minlength=items.size * cats.size).reshape(items.size, cats.size)
    return counts, items.tolist()


def pairwise_cohen(
    item_ids: Sequence,
    annotator_ids: Sequence,
    labels: Sequence,
    min_overlap: int = 10,
    weights: Weights = None,
    categories: Sequence | None = None,
) -> list[PairAgreement]:
    """Cohen's κ for every annotator pair (a < b, sorted ids) sharing at least `min_overlap` items.

    One coded matrix L[annotator, item] (−1 = unlabelled) and the overlap counts S = P Pᵀ (P = [L ≥ 0]) are
    built once; each qualifying pair then costs one bincount over the items both labelled. `categories`
    (default: sorted labels seen) fixes the category positions used by weighted κ, the same for every pair.
    """
    _check_weights(weights)
    cols = _aligned(item_ids=item_ids, annotator_ids=annotator_ids, labels=labels)
    cats = _categories(categories, cols["labels"])
    k = cats.size
    items, item_code = _factorize(cols["item_ids"])
    annotators, annotator_code = _factorize(cols["annotator_ids"])
    _check_one_label_per_pair(item_code, annotator_code, items, annotators)
    coded = np.full((annotators.size, items.size), -1, dtype=np.int32)
    coded[annotator_code, item_code] = _category_codes(cols["labels"], cats)
    present = coded >= 0
    overlap = present.astype(np.float64) @ present.T.astype(np.float64)
    names = annotators.tolist()
    pairs = []
    for a, b in zip(*np.triu_indices(annotators.size, k=1), strict=True):
        if overlap[a, b] < max(min_overlap, 1):
            continue
        shared = np.flatnonzero(present[a] & present[b])
        confusion = np.bincount(coded[a, shared] * k + coded[b, shared], minlength=k * k).reshape(k, k)
        pairs.append(PairAgreement(names[a], names[b], kappa_from_confusion(confusion, weights), int(shared.size)))
    return pairs


def agreement_with_reference(
    item_ids: Sequence,
    annotator_ids: Sequence,
    labels: Sequence,
    reference: Mapping[Any, Any],
    weights: Weights = None,
    categories: Sequence | None = None,
) -> dict[Any, ReferenceAgreement]:
    """Each annotator against `reference[item_id] → label` (consensus or gold), over items in the reference.

    kappa = Cohen's κ(annotator, reference); accuracy = mean [label = reference label]; n_items = shared items.
    Every annotator appears; one with no referenced item gets (nan, nan, 0). For consensus references, leave
    the annotator's own label out of the consensus to avoid inflated agreement (the caller's choice).
    """
    cols = _aligned(item_ids=item_ids, annotator_ids=annotator_ids, labels=labels)
    ref_items, ref_labels = np.asarray(list(reference.keys())), np.asarray(list(reference.values()))
    cats = _categories(categories, cols["labels"], ref_labels)
    k = cats.size
    annotators, annotator_code = _factorize(cols["annotator_ids"])
    ref_code = _reference_codes(cols["item_ids"], ref_items, _category_codes(ref_labels, cats))
    keep = ref_code >= 0
    flat = (annotator_code[keep] * k + _category_codes(cols["labels"][keep], cats)) * k + ref_code[keep]
    confusion = np.bincount(flat, minlength=annotators.size * k * k).reshape(annotators.size, k, k)
    result = {}
    for a, annotator in enumerate(annotators.tolist()):
        n = int(confusion[a].sum())
        accuracy = float(np.trace(confusion[a]) / n) if n else math.nan
        result[annotator] = ReferenceAgreement(kappa_from_confusion(confusion[a], weights), accuracy, n)
    return result


def _reference_codes(item_ids: np.ndarray, ref_items: np.ndarray, ref_label_code: np.ndarray) -> np.ndarray:
    """Reference label code of each row's item, −1 where the item has no reference label."""
    if ref_items.size == 0:
        return np.full(item_ids.size, -1, dtype=np.int64)
    order = np.argsort(ref_items, kind="stable")
    position = np.clip(np.searchsorted(ref_items[order], item_ids), 0, ref_items.size - 1)
    found = ref_items[order][position] == item_ids
    return np.where(found, ref_label_code[order][position], -1)


# ---------------------------------------------------------------------------------------------------------------
# Expected agreement from annotator accuracies
# ---------------------------------------------------------------------------------------------------------------

def expected_fleiss_kappa(item_ids: Sequence, annotator_ids: Sequence, labels: Sequence,
                          accuracy: Mapping[Any, float]) -> float:
    """The Fleiss κ that these labels would show if each annotator i labelled with accuracy `accuracy[i]`
    (e.g. measured on gold items), independently of the others given the truth, on binary labels (a wrong label
    is the other one, so two annotators agree when both are right or both are wrong).

    Over the items with n ≥ 2 labels, pooled over ordered rating pairs as `fleiss_kappa` pools them:

        P̄_exp = Σ_items Σ_{i ≠ j, both labelled it} A_ij / Σ_items n(n − 1),   A_ij = a_i a_j + (1 − a_i)(1 − a_j)
        P_e  = Σ_c p_c²    (p_c: the observed share of labels in category c, the chance term of `fleiss_kappa`)
        κ_exp = (P̄_exp − P_e) / (1 − P_e)

    Observed and expected κ share P_e, so they differ only in the pair agreement: observed below expected means
    the annotators agree less on these items than their accuracies predict. Per item, Σ_{i≠j} a_i a_j =
    (Σ a)² − Σ a². Returns `nan` when undefined (no item with 2 labels, or P_e = 1). An annotator missing from
    `accuracy` or an accuracy outside [0, 1] is a ValueError.
    """
    cols = _aligned(item_ids=item_ids, annotator_ids=annotator_ids, labels=labels)
    items, item_code = _factorize(cols["item_ids"])
    annotators, annotator_code = _factorize(cols["annotator_ids"])
    _check_one_label_per_pair(item_code, annotator_code, items, annotators)
    missing = [a for a in annotators.tolist() if a not in accuracy]
    if missing:
        raise ValueError(f"accuracy has no value for annotator(s) {missing[:5]!r}; expected one per annotator")
    outside = [(a, accuracy[a]) for a in annotators.tolist() if not 0.0 <= accuracy[a] <= 1.0]
    if outside:
        raise ValueError(f"accuracy of annotator {outside[0][0]!r} must lie in [0, 1], got {outside[0][1]!r}")
    per_annotator = np.array([float(accuracy[a]) for a in annotators.tolist()])
    right = per_annotator[annotator_code]
    n = np.bincount(item_code, minlength=items.size).astype(float)
    pairable = n >= 2
    if not pairable.any():
        return math.nan

    def ordered_pair_products(values: np.ndarray) -> np.ndarray:
        total = np.bincount(item_code, weights=values, minlength=items.size)
        return total**2 - np.bincount(item_code, weights=values**2, minlength=items.size)

    agree = (ordered_pair_products(right) + ordered_pair_products(1.0 - right))[pairable].sum()
    p_bar = float(agree / (n * (n - 1))[pairable].sum())
    _, label_code = _factorize(cols["labels"])
    shares = np.bincount(label_code[pairable[item_code]]) / pairable[item_code].sum()
    p_e = float((shares**2).sum())
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _summary(item_code: np.ndarray, annotator_code: np.ndarray, label_code: np.ndarray, values: np.ndarray,
             level: Level) -> dict[str, Any]:
    """Fleiss κ (nominal) and Krippendorff α (`level`) of one subset of coded long-form labels."""
    _, item_local = np.unique(item_code, return_inverse=True)
    n_items, k = int(item_local.max(initial=-1)) + 1, values.size
    counts = np.bincount(item_local * k + label_code, minlength=n_items * k).reshape(n_items, k)
    return {
        "fleiss_kappa": _json_float(fleiss_kappa(counts)),
        "krippendorff_alpha": _json_float(alpha_from_counts(counts, values, level)),
        "n_items": n_items,
        "n_pairable_items": int((counts.sum(axis=1) >= 2).sum()),
        "n_labels": int(label_code.size),
        "n_annotators": int(np.unique(annotator_code).size),
    }


def agreement_report(
    item_ids: Sequence,
    annotator_ids: Sequence,
    labels: Sequence,
    groups: Mapping[str, Sequence] | None = None,
    level: Level = "nominal",
) -> dict[str, Any]:
    """Fleiss κ and Krippendorff α overall and per value of each grouping, as a JSON-serialisable dict.

    `groups` maps a name (e.g. "guideline_version", "topic") to a sequence aligned with the labels; each group
    value's statistics use only that value's labels. Fleiss κ treats labels as nominal; α uses `level`
    (non-nominal levels need numeric labels). Undefined statistics are `None`. Shape:

        {"level": ..., "overall": S, "groups": {name: {str(value): S}}}
        S = {"fleiss_kappa", "krippendorff_alpha", "n_items", "n_pairable_items", "n_labels", "n_annotators"}
    """
    _check_level(level)
    cols = _aligned(item_ids=item_ids, annotator_ids=annotator_ids, labels=labels,
                    **{f"group {name!r}": values for name, values in (groups or {}).items()})
    items, item_code = _factorize(cols["item_ids"])
    annotators, annotator_code = _factorize(cols["annotator_ids"])
    _check_one_label_per_pair(item_code, annotator_code, items, annotators)
    raw_labels = cols["labels"] if level == "nominal" else _numeric(cols["labels"], f"level={level!r}")
    categories, label_code = _factorize(raw_labels)
    values = np.arange(categories.size, dtype=float) if level == "nominal" else categories

    def summary(mask: np.ndarray | slice) -> dict[str, Any]:
        return _summary(item_code[mask], annotator_code[mask], label_code[mask], values, level)

    report: dict[str, Any] = {"level": level, "overall": summary(slice(None)), "groups": {}}
    for name in groups or {}:
        group_values, group_code = _factorize(cols[f"group {name!r}"])
        report["groups"][name] = {str(v): summary(group_code == g) for g, v in enumerate(group_values.tolist())}
    return report
