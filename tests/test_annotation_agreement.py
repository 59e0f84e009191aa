"""Inter-annotator agreement: κ/α against sklearn, statsmodels, Krippendorff (2011) and brute-force definitions."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from rlhf_ray.annotation.agreement import (
    PairAgreement,
    ReferenceAgreement,
    agreement_report,
    agreement_with_reference,
    category_counts,
    cohen_kappa,
    coincidence_matrix,
    fleiss_kappa,
    kappa_from_confusion,
    krippendorff_alpha,
    pairwise_cohen,
    reliability_matrix,
)

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders × 12 units, missing data.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])
KRIPPENDORFF_2011_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
LEVELS = ("nominal", "ordinal", "interval", "ratio")
WEIGHTS = (None, "linear", "quadratic")
FAST = settings(max_examples=60, deadline=None)


def _same(x: float, y: float, tol: float = 1e-9) -> bool:
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol


def _brute_alpha(reliability: np.ndarray, level: str) -> float:
    """α = 1 − D_o/D_e straight from the pair definitions: within-unit pairs vs all pairs of pairable values."""
    units = [col[~np.isnan(col)] for col in reliability.T]
    units = [u for u in units if u.size >= 2]
    if not units:
        return math.nan
    pooled = np.concatenate(units)
    values, n_v = np.unique(pooled, return_counts=True)
    n_of = dict(zip(values.tolist(), n_v.tolist(), strict=True))

    def delta2(c: float, k: float) -> float:
        if level == "nominal":
            return float(c != k)
        if level == "interval":
            return (c - k) ** 2
        if level == "ratio":
            return 0.0 if c + k == 0 else ((c - k) / (c + k)) ** 2
        lo, hi = min(c, k), max(c, k)
        return (sum(n for v, n in n_of.items() if lo <= v <= hi) - (n_of[c] + n_of[k]) / 2) ** 2

    def pair_sum(xs: np.ndarray) -> float:
        return sum(delta2(x, y) for (i, x), (j, y) in itertools.product(enumerate(xs.tolist()), repeat=2) if i != j)

    n = pooled.size
    d_o = sum(pair_sum(u) / (u.size - 1) for u in units) / n
    d_e = pair_sum(pooled) / (n * (n - 1))
    return math.nan if d_e == 0 else 1 - d_o / d_e


reliability_matrices = st.integers(2, 5).flatmap(
    lambda raters: st.integers(1, 8).flatmap(
        lambda units: st.lists(
            st.one_of(st.none(), st.integers(0, 4)), min_size=raters * units, max_size=raters * units
        ).map(lambda xs: np.array([NAN if x is None else x for x in xs], dtype=float).reshape(raters, units))
    )
)


# ---------------------------------------------------------------------------------------------------------------
# Cohen's κ
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", WEIGHTS)
def test_cohen_kappa_matches_sklearn_on_fixed_labels(weights: str | None) -> None:
    a = [0, 1, 2, 2, 1, 0, 3, 3, 2, 1, 0, 0, 2, 3, 1]
    b = [0, 1, 1, 2, 1, 0, 3, 2, 2, 2, 0, 1, 2, 3, 0]
    assert cohen_kappa(a, b, weights=weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)
    strings = ["no", "yes", "yes", "maybe", "no", "maybe", "yes", "no"]
    other = ["no", "yes", "no", "maybe", "no", "yes", "yes", "maybe"]
    order = ["no", "maybe", "yes"]
    assert cohen_kappa(strings, other, categories=order, weights=weights) == pytest.approx(
        cohen_kappa_score(strings, other, labels=order, weights=weights), abs=1e-12
    )


@FAST
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60), st.sampled_from(WEIGHTS))
def test_cohen_kappa_matches_sklearn_where_defined(pairs: list[tuple[int, int]], weights: str | None) -> None:
    a, b = (list(x) for x in zip(*pairs, strict=True))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = cohen_kappa_score(a, b, weights=weights)
    got = cohen_kappa(a, b, weights=weights)
    if np.isfinite(expected):
        assert got == pytest.approx(expected, abs=1e-9)
        assert got == pytest.approx(cohen_kappa(b, a, weights=weights), abs=1e-12)
    else:
        assert math.isnan(got)


def test_cohen_kappa_degenerate_and_bad_input() -> None:
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(kappa_from_confusion(np.zeros((3, 3))))
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert cohen_kappa([0, 1], [1, 0]) == -1.0
    with pytest.raises(ValueError, match="weights"):
        cohen_kappa([0, 1], [0, 1], weights="cubic")
    with pytest.raises(ValueError, match="equal length"):
        cohen_kappa([0, 1], [0])
    with pytest.raises(ValueError, match="label 7"):
        cohen_kappa([0, 7], [0, 1], categories=[0, 1])
    with pytest.raises(ValueError, match="distinct"):
        cohen_kappa([0, 1], [0, 1], categories=[0, 1, 1])


# ---------------------------------------------------------------------------------------------------------------
# Fleiss' κ
# ---------------------------------------------------------------------------------------------------------------

FLEISS_1971_TABLE = np.array([  # the 10 subjects × 5 categories, 14 raters example; κ = 0.210
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


@pytest.mark.parametrize("table", [
    FLEISS_1971_TABLE,
    np.array([[3, 0], [0, 3], [2, 1], [1, 2], [3, 0]]),
    np.array([[1, 1, 1, 1], [4, 0, 0, 0], [0, 2, 2, 0], [0, 0, 1, 3]]),
])
def test_fleiss_kappa_matches_statsmodels(table: np.ndarray) -> None:
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)


def test_fleiss_kappa_reproduces_fleiss_1971_example() -> None:
    assert round(fleiss_kappa(FLEISS_1971_TABLE), 3) == 0.210


@FAST
@given(st.integers(2, 6).flatmap(lambda raters: st.lists(
    st.lists(st.integers(0, 2), min_size=raters, max_size=raters), min_size=1, max_size=20)))
def test_fleiss_kappa_matches_statsmodels_on_random_equal_rater_tables(ratings: list[list[int]]) -> None:
    table = np.stack([np.bincount(row, minlength=3) for row in ratings])
    with np.errstate(all="ignore"):
        expected = sm_fleiss_kappa(table, method="fleiss")
    got = fleiss_kappa(table)
    assert got == pytest.approx(expected, abs=1e-9) if np.isfinite(expected) else math.isnan(got)
    assert _same(fleiss_kappa(table[::-1]), got) and _same(fleiss_kappa(table[:, ::-1]), got)


def test_fleiss_kappa_unequal_raters_pools_pairs_and_skips_single_ratings() -> None:
    table = np.array([[3, 1, 0], [0, 2, 0], [1, 1, 1], [0, 0, 5]])
    n_i = table.sum(axis=1)
    agreeing_pairs = (table * (table - 1)).sum()
    p_bar = agreeing_pairs / (n_i * (n_i - 1)).sum()
    p_e = ((table.sum(axis=0) / n_i.sum()) ** 2).sum()
    assert fleiss_kappa(table) == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    padded = np.vstack([table, [[0, 1, 0], [0, 0, 0]]])
    assert fleiss_kappa(padded) == pytest.approx(fleiss_kappa(table), abs=1e-12)
    assert math.isnan(fleiss_kappa(np.array([[2, 0], [3, 0]])))
    assert math.isnan(fleiss_kappa(np.array([[1, 0], [0, 1]])))
    with pytest.raises(ValueError, match="non-negative"):
        fleiss_kappa(np.array([[2, -1]]))


# ---------------------------------------------------------------------------------------------------------------
# Krippendorff's α
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_reproduces_textbook_example(level: str) -> None:
    alpha = krippendorff_alpha(KRIPPENDORFF_2011, level)
    assert round(alpha, 3) == KRIPPENDORFF_2011_ALPHA[level]
    assert alpha == pytest.approx(_brute_alpha(KRIPPENDORFF_2011, level), abs=1e-12)


def test_krippendorff_coincidence_matrix_of_textbook_example() -> None:
    """Krippendorff (2011) tabulates n = 40 pairable values with marginals n_1..n_5 = 9, 13, 10, 5, 3."""
    counts = np.stack([np.bincount(col[~np.isnan(col)].astype(int), minlength=6)[1:] for col in KRIPPENDORFF_2011.T])
    o = coincidence_matrix(counts)
    assert np.allclose(o, o.T)
    assert o.sum(axis=1) == pytest.approx([9, 13, 10, 5, 3])
    assert o[0, 0] == pytest.approx(7) and o[0, 1] == pytest.approx(4 / 3)


@FAST
@given(reliability_matrices, st.sampled_from(LEVELS))
def test_krippendorff_alpha_matches_pair_definition_and_is_permutation_invariant(
    reliability: np.ndarray, level: str
) -> None:
    alpha = krippendorff_alpha(reliability, level)
    assert _same(alpha, _brute_alpha(reliability, level))
    rng = np.random.default_rng(0)
    shuffled = reliability[rng.permutation(reliability.shape[0])][:, rng.permutation(reliability.shape[1])]
    assert _same(krippendorff_alpha(shuffled, level), alpha)


@pytest.mark.parametrize("level", LEVELS)
def test_krippendorff_alpha_perfect_random_and_missing(level: str) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 6, size=200).astype(float)
    perfect = np.tile(truth, (4, 1))
    perfect[rng.random(perfect.shape) < 0.3] = NAN
    assert krippendorff_alpha(perfect, level) == pytest.approx(1.0)
    noise = rng.integers(1, 6, size=(5, 4000)).astype(float)
    assert abs(krippendorff_alpha(noise, level)) < 0.02
    with_empty_units = np.hstack([KRIPPENDORFF_2011, np.full((4, 3), NAN)])
    assert krippendorff_alpha(with_empty_units, level) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level))
    assert math.isnan(krippendorff_alpha(np.full((3, 5), NAN), level))
    assert math.isnan(krippendorff_alpha(np.array([[1, NAN], [NAN, 2.0]]), level))  # no unit has 2 values
    assert math.isnan(krippendorff_alpha(np.array([[3, 3, NAN], [3, 3, 3.0]]), level))  # no variation


def test_nominal_alpha_and_fleiss_kappa_agree_up_to_sample_size_correction() -> None:
    """Complete data, m raters: 1 − α = (n − 1)/n · (1 − κ_Fleiss), n = number of values."""
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, size=50)
    ratings = np.where(rng.random((4, 50)) < 0.7, truth, rng.integers(0, 3, size=(4, 50)))
    counts = np.stack([np.bincount(col, minlength=3) for col in ratings.T])
    n = ratings.size
    alpha, kappa = krippendorff_alpha(ratings.astype(float)), fleiss_kappa(counts)
    assert 1 - alpha == pytest.approx((n - 1) / n * (1 - kappa), abs=1e-12)


def test_ordinal_alpha_rewards_near_misses_over_nominal() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(1, 8, size=300)
    near_miss = np.clip(truth + rng.choice([-1, 0, 0, 1], size=(3, 300)), 1, 7).astype(float)
    nominal, ordinal = krippendorff_alpha(near_miss, "nominal"), krippendorff_alpha(near_miss, "ordinal")
    assert ordinal > nominal + 0.2
    assert krippendorff_alpha(near_miss, "interval") > nominal + 0.2


def test_krippendorff_alpha_bad_input() -> None:
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(KRIPPENDORFF_2011, "cardinal")
    with pytest.raises(ValueError, match="2-D"):
        krippendorff_alpha(np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        krippendorff_alpha(np.array([[-1.0, 2.0], [-1.0, 1.0]]), "ratio")
    with pytest.raises(ValueError, match="finite"):
        krippendorff_alpha(np.array([[np.inf, 2.0], [1.0, 1.0]]))


# ---------------------------------------------------------------------------------------------------------------
# Long-form helpers
# ---------------------------------------------------------------------------------------------------------------

def _long_form(reliability: np.ndarray, prefix: str = "") -> tuple[list, list, list]:
    raters, units = np.nonzero(~np.isnan(reliability))
    return ([f"{prefix}item{u:02d}" for u in units], [f"{prefix}ann{r}" for r in raters],
            reliability[raters, units].tolist())


def _synthetic(n_items: int = 300, n_annotators: int = 6, seed: int = 4) -> tuple[list, list, list, dict]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, size=n_items)
    accuracy = np.linspace(0.5, 0.95, n_annotators)
    items, annotators, labels = [], [], []
    for i in range(n_items):
        for a in rng.choice(n_annotators, size=rng.integers(1, 5), replace=False):
            items.append(f"item{i}")
            annotators.append(f"ann{a}")
            labels.append(int(truth[i] if rng.random() < accuracy[a] else rng.integers(0, 4)))
    return items, annotators, labels, {f"item{i}": int(t) for i, t in enumerate(truth)}


def test_reliability_matrix_round_trip() -> None:
    items, annotators, labels = _long_form(KRIPPENDORFF_2011)
    order = np.random.default_rng(5).permutation(len(items))
    matrix, annotator_index, item_index = reliability_matrix(
        np.array(items)[order], np.array(annotators)[order], np.array(labels)[order]
    )
    assert annotator_index == ["ann0", "ann1", "ann2", "ann3"]
    assert item_index == [f"item{u:02d}" for u in range(12)]
    np.testing.assert_array_equal(matrix, KRIPPENDORFF_2011)
    with pytest.raises(ValueError, match="more than once"):
        reliability_matrix(["x", "x"], ["a", "a"], [1, 2])
    with pytest.raises(ValueError, match="numeric"):
        reliability_matrix(["x"], ["a"], ["good"])
    with pytest.raises(ValueError, match="finite"):
        reliability_matrix(["x"], ["a"], [NAN])
    with pytest.raises(ValueError, match="equal length"):
        reliability_matrix(["x", "y"], ["a"], [1])


def test_category_counts() -> None:
    counts, item_index = category_counts(["b", "a", "b", "b", "a"], ["yes", "no", "no", "yes", "no"],
                                         categories=["yes", "no", "maybe"])
    assert item_index == ["a", "b"]
    np.testing.assert_array_equal(counts, [[0, 2, 0], [2, 1, 0]])
    with pytest.raises(ValueError, match="'never'"):
        category_counts(["a"], ["never"], categories=["yes", "no"])


@pytest.mark.parametrize("weights", WEIGHTS)
def test_pairwise_cohen_equals_direct_kappa_per_pair(weights: str | None) -> None:
    items, annotators, labels, _ = _synthetic()
    pairs = pairwise_cohen(items, annotators, labels, min_overlap=25, weights=weights)
    by_pair = {(p.annotator_a, p.annotator_b): p for p in pairs}
    matrix, annotator_index, _ = reliability_matrix(items, annotators, labels)
    for (a, name_a), (b, name_b) in itertools.combinations(enumerate(annotator_index), 2):
        shared = ~np.isnan(matrix[a]) & ~np.isnan(matrix[b])
        if shared.sum() < 25:
            assert (name_a, name_b) not in by_pair
            continue
        expected = cohen_kappa(matrix[a, shared], matrix[b, shared], categories=[0, 1, 2, 3], weights=weights)
        assert by_pair[name_a, name_b] == PairAgreement(name_a, name_b, pytest.approx(expected), int(shared.sum()))
    assert len(by_pair) >= 10


def test_pairwise_cohen_is_invariant_to_row_order_and_annotator_renaming() -> None:
    items, annotators, labels, _ = _synthetic(seed=6)
    base = {frozenset((p.annotator_a, p.annotator_b)): p.kappa for p in pairwise_cohen(items, annotators, labels)}
    order = np.random.default_rng(7).permutation(len(items))
    renamed = [f"z{9 - int(a[3:])}" for a in annotators]  # reverses the sorted annotator order
    shuffled = pairwise_cohen(np.array(items)[order], np.array(renamed)[order], np.array(labels)[order])
    back = {f"z{9 - k}": f"ann{k}" for k in range(6)}
    assert {frozenset((back[p.annotator_a], back[p.annotator_b])): p.kappa for p in shuffled} == pytest.approx(base)


def test_agreement_with_reference() -> None:
    items, annotators, labels, truth = _synthetic(n_items=400)
    reference = {item: label for item, label in truth.items() if item != "item0"}
    result = agreement_with_reference([*items, "unreferenced"], [*annotators, "ann9"], [*labels, 0], reference)
    assert result["ann9"].n_items == 0 and math.isnan(result["ann9"].kappa) and math.isnan(result["ann9"].accuracy)
    for annotator in {f"ann{a}" for a in range(6)}:
        rows = [(i, lab) for i, a, lab in zip(items, annotators, labels, strict=True)
                if a == annotator and i in reference]
        mine, gold = [lab for _, lab in rows], [reference[i] for i, _ in rows]
        expected = ReferenceAgreement(cohen_kappa(mine, gold, categories=[0, 1, 2, 3]),
                                      float(np.mean(np.array(mine) == np.array(gold))), len(rows))
        assert result[annotator] == pytest.approx(expected)
    accuracies = [result[f"ann{a}"].accuracy for a in range(6)]
    assert accuracies[0] < accuracies[-1]


def test_agreement_report_overall_groups_and_json() -> None:
    items, annotators, labels, _ = _synthetic(seed=8)
    version = ["v1" if int(i[4:]) < 150 else "v2" for i in items]
    topic = [("code", "chat", "math")[int(i[4:]) % 3] for i in items]
    report = agreement_report(items, annotators, labels, groups={"guideline_version": version, "topic": topic},
                              level="ordinal")
    json.dumps(report, allow_nan=False)
    counts, _ = category_counts(items, labels)
    matrix, _, _ = reliability_matrix(items, annotators, labels)
    overall = report["overall"]
    assert overall["fleiss_kappa"] == pytest.approx(fleiss_kappa(counts))
    assert overall["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(matrix, "ordinal"))
    assert overall["n_labels"] == len(labels) and overall["n_items"] == 300 and overall["n_annotators"] == 6
    assert overall["n_pairable_items"] == int((counts.sum(axis=1) >= 2).sum())
    assert set(report["groups"]) == {"guideline_version", "topic"}
    v2 = np.array(version) == "v2"
    sub = [np.array(col)[v2] for col in (items, annotators, labels)]
    assert report["groups"]["guideline_version"]["v2"]["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha(reliability_matrix(*sub)[0], "ordinal"))
    assert report["groups"]["guideline_version"]["v2"]["fleiss_kappa"] == pytest.approx(
        fleiss_kappa(category_counts(sub[0], sub[2])[0]))
    assert sum(g["n_labels"] for g in report["groups"]["topic"].values()) == len(labels)


def test_agreement_report_string_labels_and_undefined_values() -> None:
    report = agreement_report(["x", "x", "y", "y", "z"], ["a", "b", "a", "b", "a"], ["A", "A", "B", "A", "tie"],
                              groups={"batch": [1, 1, 2, 2, 2]})
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert set(report["groups"]["batch"]) == {"1", "2"}
    one = report["groups"]["batch"]["1"]
    assert one["fleiss_kappa"] is None and one["krippendorff_alpha"] is None and one["n_pairable_items"] == 1
    with pytest.raises(ValueError, match="numeric"):
        agreement_report(["x"], ["a"], ["A"], level="interval")
    with pytest.raises(ValueError, match="more than once"):
        agreement_report(["x", "x"], ["a", "a"], ["A", "B"])
    with pytest.raises(ValueError, match="equal length"):
        agreement_report(["x", "y"], ["a", "b"], ["A", "B"], groups={"topic": ["t"]})


@FAST
@given(reliability_matrices, st.randoms(use_true_random=False))
def test_report_is_invariant_to_permuting_annotators_items_and_rows(reliability: np.ndarray, rnd) -> None:
    items, annotators, labels = _long_form(reliability)
    if not items:
        return
    base = agreement_report(items, annotators, labels, level="interval")["overall"]
    order = list(range(len(items)))
    rnd.shuffle(order)
    annotator_names, item_names = sorted(set(annotators)), sorted(set(items))
    annotator_map = dict(zip(annotator_names, rnd.sample(annotator_names, len(annotator_names)), strict=True))
    item_map = dict(zip(item_names, rnd.sample(item_names, len(item_names)), strict=True))
    permuted = agreement_report([item_map[items[r]] for r in order], [annotator_map[annotators[r]] for r in order],
                                [labels[r] for r in order], level="interval")["overall"]
    assert permuted == pytest.approx(base)
