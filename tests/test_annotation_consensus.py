"""Label consensus: majority vote and Dawid–Skene on synthetic annotators with known accuracies."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ray.annotation.consensus import Consensus, DawidSkeneResult, dawid_skene, majority_vote

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Labels(NamedTuple):
    truth: np.ndarray
    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray


def simulate(seed: int, n_items: int, accuracies: list[float], per_item: int, n_classes: int = 2) -> Labels:
    """Symmetric flip model: annotator j gives the true class w.p. accuracies[j], else a uniform other class.

    Each item is labelled by `per_item` distinct annotators drawn uniformly; accuracy 1 / n_classes is a spammer.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    annotator = np.argsort(rng.random((n_items, len(accuracies))), axis=1)[:, :per_item].ravel()
    item = np.repeat(np.arange(n_items), per_item)
    correct = rng.random(len(item)) < np.asarray(accuracies)[annotator]
    wrong = (truth[item] + rng.integers(1, n_classes, len(item))) % n_classes
    return Labels(truth, item, annotator, np.where(correct, truth[item], wrong))


def run_ds(data: Labels, n_annotators: int, n_classes: int = 2, **kwargs) -> DawidSkeneResult:
    return dawid_skene(data.item, data.annotator, data.label, len(data.truth), n_annotators, n_classes, **kwargs)


def run_mv(data: Labels, n_classes: int = 2) -> Consensus:
    return majority_vote(data.item, data.label, len(data.truth), n_classes)


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float((predicted == truth).mean())


def assert_probability_rows(posterior: np.ndarray, n_items: int, n_classes: int) -> None:
    assert posterior.shape == (n_items, n_classes)
    assert np.isfinite(posterior).all()
    assert (posterior >= 0).all() and (posterior <= 1 + 1e-12).all()
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0, atol=1e-9)


BINARY_POOL = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.5]  # 20 % spammers
SPAMMERS = [8, 9]


# --- majority vote ---------------------------------------------------------------------------------


def test_majority_vote_shares_ties_and_unlabelled_items() -> None:
    item = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    label = np.array([0, 0, 1, 2, 1, 1, 2, 2, 1])
    result = majority_vote(item, label, n_items=4, n_classes=3)
    np.testing.assert_allclose(
        result.posterior, [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]
    )
    np.testing.assert_array_equal(result.label, [0, 1, 1, 0])
    np.testing.assert_allclose(result.confidence, [2 / 3, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(result.tied, [False, True, True, False])
    np.testing.assert_array_equal(result.n_labels, [3, 2, 4, 0])


def test_majority_vote_weights_break_ties_and_zero_weight_is_no_vote() -> None:
    item = np.array([0, 0, 1])
    label = np.array([0, 1, 1])
    result = majority_vote(item, label, n_items=2, n_classes=2, weights=[1.0, 3.0, 0.0])
    np.testing.assert_allclose(result.posterior, [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_array_equal(result.label, [1, 0])
    np.testing.assert_allclose(result.confidence, [0.75, 0.0])
    np.testing.assert_array_equal(result.tied, [False, False])
    near_tie = majority_vote(item[:2], label[:2], n_items=1, n_classes=2, weights=[0.1 + 0.2, 0.3])
    assert near_tie.tied[0] and near_tie.label[0] == 0


# --- Dawid–Skene: recovering annotators ----------------------------------------------------------------


def test_dawid_skene_recovers_binary_annotator_accuracies_and_spammers() -> None:
    data = simulate(seed=0, n_items=3000, accuracies=BINARY_POOL, per_item=5)
    result = run_ds(data, n_annotators=len(BINARY_POOL))
    truth = np.asarray(BINARY_POOL)
    assert result.converged and result.iterations < 100
    assert (result.annotator_label_count > 1200).all()
    assert result.annotator_label_count.sum() == len(data.label)
    np.testing.assert_allclose(result.annotator_accuracy, truth, atol=0.05)
    np.testing.assert_allclose(result.annotator_accuracy[SPAMMERS], 0.5, atol=0.05)
    np.testing.assert_allclose(result.class_prior, [0.5, 0.5], atol=0.03)


def test_dawid_skene_recovers_three_class_confusion() -> None:
    pool = [0.9, 0.85, 0.8, 0.7, 0.6, 1 / 3]
    data = simulate(seed=1, n_items=3000, accuracies=pool, per_item=4, n_classes=3)
    result = run_ds(data, n_annotators=len(pool), n_classes=3, max_iter=500)
    assert result.converged
    np.testing.assert_allclose(result.annotator_accuracy, pool, atol=0.05)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0)
    best = result.confusion[0]  # symmetric flips: 0.9 on the diagonal, 0.05 elsewhere
    np.testing.assert_allclose(best, np.where(np.eye(3, dtype=bool), 0.9, 0.05), atol=0.04)
    assert accuracy(result.label, data.truth) > accuracy(run_mv(data, n_classes=3).label, data.truth)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_dawid_skene_beats_majority_vote_with_spammers(seed: int) -> None:
    data = simulate(seed=seed, n_items=2000, accuracies=BINARY_POOL, per_item=5)
    ds_accuracy = accuracy(run_ds(data, n_annotators=len(BINARY_POOL)).label, data.truth)
    mv_accuracy = accuracy(run_mv(data).label, data.truth)
    assert ds_accuracy > mv_accuracy + 0.01


def test_dawid_skene_matches_majority_vote_when_annotators_are_perfect() -> None:
    data = simulate(seed=5, n_items=500, accuracies=[1.0] * 4, per_item=3)
    result = run_ds(data, n_annotators=4)
    assert accuracy(result.label, data.truth) == accuracy(run_mv(data).label, data.truth) == 1.0
    assert (result.annotator_accuracy > 0.99).all()
    assert (result.confidence > 0.99).all()


# --- gold items ------------------------------------------------------------------------------------------


def test_gold_fixes_the_labelling_under_an_adversarial_majority() -> None:
    pool = [0.9, 0.9, 0.2, 0.2, 0.2]  # three colluding annotators who mostly flip the label
    data = simulate(seed=6, n_items=2000, accuracies=pool, per_item=5)
    gold = {int(i): int(data.truth[i]) for i in range(0, 2000, 50)}  # 2 % answer key

    assert accuracy(run_mv(data).label, data.truth) < 0.5
    unanchored = run_ds(data, n_annotators=5)
    assert accuracy(unanchored.label, data.truth) < 0.1  # a consistent but permuted labelling
    anchored = run_ds(data, n_annotators=5, gold=gold, init="gold")
    assert accuracy(anchored.label, data.truth) > 0.95
    np.testing.assert_allclose(anchored.annotator_accuracy, pool, atol=0.05)


def test_gold_items_are_clamped_even_against_every_label() -> None:
    data = simulate(seed=7, n_items=400, accuracies=[0.9, 0.85, 0.8], per_item=3)
    flipped = 1 - data.truth[0]
    result = run_ds(data, n_annotators=3, gold={0: int(flipped), 399: int(data.truth[399])})
    np.testing.assert_array_equal(result.posterior[0], np.eye(2)[flipped])
    assert result.label[0] == flipped and result.confidence[0] == 1.0
    assert result.label[399] == data.truth[399]


def test_gold_improves_accuracy_estimates_with_few_labels() -> None:
    pool = [0.9, 0.8, 0.7, 0.6, 0.5]
    data = simulate(seed=8, n_items=300, accuracies=pool, per_item=2)
    gold = {int(i): int(data.truth[i]) for i in range(0, 300, 3)}
    plain = run_ds(data, n_annotators=5)
    anchored = run_ds(data, n_annotators=5, gold=gold)
    error = np.abs(anchored.annotator_accuracy - pool).mean()
    assert error < np.abs(plain.annotator_accuracy - pool).mean()
    assert error < 0.05


# --- shapes, edge cases, determinism ---------------------------------------------------------------------


def test_unlabelled_items_and_idle_annotators_are_handled() -> None:
    data = simulate(seed=9, n_items=200, accuracies=[0.9, 0.8, 0.7], per_item=3)
    result = dawid_skene(data.item, data.annotator, data.label, n_items=210, n_annotators=5, n_classes=2)
    assert_probability_rows(result.posterior, 210, 2)
    np.testing.assert_allclose(result.posterior[200:], np.tile(result.class_prior, (10, 1)))
    np.testing.assert_array_equal(result.n_labels[200:], 0)
    np.testing.assert_array_equal(result.annotator_label_count[3:], 0)
    np.testing.assert_allclose(result.confusion[3:], 0.5)
    np.testing.assert_allclose(result.annotator_accuracy[3:], 0.5)


def test_no_labels_at_all() -> None:
    empty = np.zeros(0, dtype=int)
    result = dawid_skene(empty, empty, empty, n_items=3, n_annotators=0, n_classes=3)
    assert_probability_rows(result.posterior, 3, 3)
    assert result.confusion.shape == (0, 3, 3) and result.annotator_accuracy.shape == (0,)
    assert result.converged
    assert (majority_vote(empty, empty, n_items=3, n_classes=3).confidence == 0).all()


def test_dawid_skene_is_deterministic_and_ignores_label_order() -> None:
    data = simulate(seed=10, n_items=500, accuracies=BINARY_POOL, per_item=4)
    first, second = run_ds(data, n_annotators=10), run_ds(data, n_annotators=10)
    for field in ("posterior", "confusion", "class_prior", "log_likelihood"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    order = np.random.default_rng(0).permutation(len(data.label))
    shuffled = Labels(data.truth, data.item[order], data.annotator[order], data.label[order])
    reordered = run_ds(shuffled, n_annotators=10)
    np.testing.assert_allclose(reordered.posterior, first.posterior, atol=1e-9)
    np.testing.assert_array_equal(reordered.label, first.label)


def test_convergence_is_reported_and_log_likelihood_climbs() -> None:
    data = simulate(seed=11, n_items=1000, accuracies=BINARY_POOL, per_item=5)
    result = run_ds(data, n_annotators=10)
    assert result.converged and 1 < result.iterations < 100
    assert len(result.log_likelihood) == result.iterations
    assert (np.diff(result.log_likelihood) > -1e-6).all()
    assert (result.log_likelihood < 0).all()
    capped = run_ds(data, n_annotators=10, max_iter=2)
    assert not capped.converged and capped.iterations == 2
    assert_probability_rows(capped.posterior, 1000, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": [0, 2]}, r"label must lie in \[0, 2\), got 2"),
        ({"item_index": [0, 5]}, r"item_index must lie in \[0, 3\), got 5"),
        ({"annotator_index": [-1, 0]}, r"annotator_index must lie in \[0, 2\), got -1"),
        ({"label": [0.0, 1.0]}, "label must hold integer codes"),
        ({"label": [0, 1, 1]}, "one entry per label"),
        ({"gold": {7: 0}}, r"gold item must lie in \[0, 3\), got 7"),
        ({"gold": {0: 4}}, r"gold class must lie in \[0, 2\), got 4"),
        ({"init": "gold"}, "needs at least one gold item"),
        ({"init": "random"}, "init must be one of"),
        ({"smoothing": 0.0}, "smoothing must be"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict, message: str) -> None:
    arguments = {"item_index": [0, 1], "annotator_index": [0, 1], "label": [0, 1], "n_items": 3}
    arguments |= {"n_annotators": 2, "n_classes": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        dawid_skene(**arguments)


def test_majority_vote_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="weights must be finite and >= 0, got -1"):
        majority_vote([0, 0], [0, 1], n_items=1, n_classes=2, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        majority_vote([0, 0], [0, 1], n_items=1, n_classes=2, weights=[1.0])


@st.composite
def small_problems(draw: st.DrawFn) -> dict:
    n_items = draw(st.integers(0, 6))
    n_annotators = draw(st.integers(1, 4))
    n_classes = draw(st.integers(1, 4))
    rows = (
        draw(st.lists(st.tuples(st.integers(0, n_items - 1), st.integers(0, n_annotators - 1)), max_size=20))
        if n_items
        else []
    )
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=len(rows), max_size=len(rows)))
    gold = draw(st.dictionaries(st.integers(0, n_items - 1), st.integers(0, n_classes - 1))) if n_items else {}
    return {
        "item_index": np.array([item for item, _ in rows], dtype=int),
        "annotator_index": np.array([annotator for _, annotator in rows], dtype=int),
        "label": np.array(labels, dtype=int),
        "n_items": n_items,
        "n_annotators": n_annotators,
        "n_classes": n_classes,
        "gold": gold,
        "smoothing": draw(st.sampled_from([1e-6, 0.01, 1.0])),
        "max_iter": draw(st.integers(1, 30)),
    }


@PROPERTY
@given(small_problems())
def test_random_small_inputs_give_valid_probabilities(problem: dict) -> None:
    n_items, n_classes = problem["n_items"], problem["n_classes"]
    result = dawid_skene(**problem)
    assert_probability_rows(result.posterior, n_items, n_classes)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0)
    np.testing.assert_allclose(result.class_prior.sum(), 1.0)
    assert ((result.annotator_accuracy >= 0) & (result.annotator_accuracy <= 1 + 1e-12)).all()
    assert np.isfinite(result.log_likelihood).all() and len(result.log_likelihood) == result.iterations
    np.testing.assert_array_equal(result.confidence, result.posterior[np.arange(n_items), result.label])
    for item, cls in problem["gold"].items():
        assert result.label[item] == cls

    votes = majority_vote(problem["item_index"], problem["label"], n_items, n_classes)
    assert_probability_rows(votes.posterior, n_items, n_classes)
    assert ((votes.label >= 0) & (votes.label < n_classes)).all()
    np.testing.assert_array_equal(votes.confidence == 0, votes.n_labels == 0)


def test_answer_files_read_rankings_as_their_first_choice_and_name_a_bad_line(tmp_path) -> None:
    from rlhf_ray.annotation.answers import AnswerFileError, read_answers

    path = tmp_path / "gold.jsonl"
    path.write_text('{"item_id": "a", "answer": "b"}\n\n{"item_id": 7, "answer": [2, 0, 1]}\n')
    assert read_answers(str(path), "gold") == {"a": "b", "7": "2"}
    assert read_answers(None, "gold") == {}
    path.write_text('{"item_id": "a", "answer": "b"}\n{"item": "c"}\n')
    with pytest.raises(AnswerFileError, match=r"gold file .* line 2: expected \{item_id, answer\}"):
        read_answers(str(path), "gold")
    with pytest.raises(AnswerFileError, match="does not exist"):
        read_answers(str(tmp_path / "missing.jsonl"), "gold")
