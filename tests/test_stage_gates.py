"""The loop's data and reward-model gates, and the κ their data gate expects from gold accuracies."""

from __future__ import annotations

import math

import pytest

from jobs.loop_config import GatesSection
from rlhf_ray.annotation.agreement import expected_fleiss_kappa, fleiss_kappa
from rlhf_ray.evaluation.stage_gates import data_gate, reward_model_gate

DEFAULTS = GatesSection()


def _expected(rows: list[tuple[str, str, str]], accuracy: dict[str, float]) -> float:
    items, annotators, labels = zip(*rows, strict=True)
    return expected_fleiss_kappa(items, annotators, labels, accuracy)


def test_expected_kappa_of_two_annotators_by_hand() -> None:
    # A = 0.9·0.8 + 0.1·0.2 = 0.74; balanced labels: P_e = 0.5² + 0.5² = 0.5; κ = (0.74 − 0.5) / 0.5 = 0.48
    rows = [("1", "x", "a"), ("1", "y", "a"), ("2", "x", "b"), ("2", "y", "b"),
            ("3", "x", "a"), ("3", "y", "b"), ("4", "x", "b"), ("4", "y", "a")]
    assert _expected(rows, {"x": 0.9, "y": 0.8}) == pytest.approx(0.48)
    # Perfect annotators would always agree (κ 1); annotators at chance would agree by chance only (κ 0).
    assert _expected(rows, {"x": 1.0, "y": 1.0}) == pytest.approx(1.0)
    assert _expected(rows, {"x": 0.5, "y": 0.5}) == pytest.approx(0.0)
    # Two annotators who are both always wrong agree as much as two who are always right.
    assert _expected(rows, {"x": 0.0, "y": 0.0}) == pytest.approx(1.0)


def test_expected_kappa_pools_ordered_pairs_as_fleiss_does() -> None:
    # Item 1: x, y → 2 ordered pairs of A_xy = 0.74. Item 2: x, y, z → 2 (A_xy + A_xz + A_yz) = 2 (0.74 + 0.66
    # + 0.62) = 4.04 over 6 ordered pairs. Item 3 has one label: no pair, and not in P_e either.
    # P̄ = (1.48 + 4.04) / 8 = 0.69; labels of items 1–2: 2 a, 3 b → P_e = 0.4² + 0.6² = 0.52;
    # κ = (0.69 − 0.52) / 0.48 = 0.3541666…
    rows = [("1", "x", "a"), ("1", "y", "b"), ("2", "x", "a"), ("2", "y", "b"), ("2", "z", "b"), ("3", "z", "a")]
    assert _expected(rows, {"x": 0.9, "y": 0.8, "z": 0.7}) == pytest.approx(0.17 / 0.48)
    # The observed κ of the same labels shares its P_e: P̄_obs = (0 + 2) / 8 = 0.25 → κ = (0.25 − 0.52) / 0.48.
    assert fleiss_kappa([[1, 1], [1, 2]]) == pytest.approx((0.25 - 0.52) / 0.48)


def test_expected_kappa_is_undefined_or_refused_where_it_should_be() -> None:
    assert math.isnan(_expected([("1", "x", "a"), ("2", "y", "b")], {"x": 0.9, "y": 0.9}))  # no item twice
    assert math.isnan(_expected([("1", "x", "a"), ("1", "y", "a")], {"x": 0.9, "y": 0.9}))  # one category: P_e 1
    with pytest.raises(ValueError, match=r"no value for annotator\(s\) \['y'\]"):
        _expected([("1", "x", "a"), ("1", "y", "b")], {"x": 0.9})
    with pytest.raises(ValueError, match=r"annotator 'y' must lie in \[0, 1\], got 1.2"):
        _expected([("1", "x", "a"), ("1", "y", "b")], {"x": 0.9, "y": 1.2})


INGEST = {"input_rows": 1000, "quarantined_rows": 20}
AGREEING = {"fleiss_kappa": 0.21, "expected_fleiss_kappa": 0.25, "expected_fleiss_kappa_gold_labels": 80}


def _data_gate(curate: dict, ingest: dict = INGEST, gates: GatesSection = DEFAULTS):
    return data_gate(ingest, curate, gates.max_quarantine_rate, gates.min_fleiss_kappa, gates.min_kappa_ratio,
                     gates.min_gold_labels)


def test_the_default_data_gate_passes_agreeing_labels_and_fails_labels_noisier_than_gold() -> None:
    good = _data_gate(AGREEING)
    assert good.passed and good.failures() == []
    assert [c.name for c in good.checks] == ["quarantine_rate", "fleiss_kappa_vs_expected"]  # no absolute floor
    assert good.checks[1].value == pytest.approx(0.84)

    noisy = _data_gate({**AGREEING, "fleiss_kappa": 0.04})  # 0.16 of what the gold accuracies predict
    assert not noisy.passed
    (failure,) = noisy.failures()
    assert failure.startswith("fleiss_kappa_vs_expected=0.16 (≥ 0.3 required: κ 0.04 vs 0.25 expected from 80 gold")
    assert noisy.to_dict()["verdict"] == "fail" and noisy.to_dict()["checks"][1]["passed"] is False

    broken_feed = _data_gate(AGREEING, {"input_rows": 1000, "quarantined_rows": 400})
    assert [f.split("=")[0] for f in broken_feed.failures()] == ["quarantine_rate"]


@pytest.mark.parametrize(("curate", "why"), [
    ({**AGREEING, "expected_fleiss_kappa_gold_labels": 6}, "rests on 6 gold labels, 50 needed"),
    ({"fleiss_kappa": 0.2, "expected_fleiss_kappa": None, "expected_fleiss_kappa_gold_labels": 0}, "pass --gold"),
    ({**AGREEING, "expected_fleiss_kappa": -0.01}, "no better than chance"),
    ({**AGREEING, "fleiss_kappa": None}, "no Fleiss κ"),
])
def test_the_data_gate_never_passes_a_kappa_it_cannot_judge(curate: dict, why: str) -> None:
    gate = _data_gate(curate)
    (failure,) = gate.failures()
    assert failure.startswith("fleiss_kappa_vs_expected=missing") and why in failure


def test_the_absolute_kappa_floor_is_an_optional_override() -> None:
    without_gold = {"fleiss_kappa": 0.02, "expected_fleiss_kappa": None, "expected_fleiss_kappa_gold_labels": 0}
    absolute = GatesSection(min_kappa_ratio=None, min_fleiss_kappa=0.1)
    assert [c.name for c in _data_gate(without_gold, gates=absolute).checks] == ["quarantine_rate", "fleiss_kappa"]
    assert _data_gate(without_gold, gates=absolute).failures() == ["fleiss_kappa=0.02 (≥ 0.1 required)"]
    assert _data_gate({**without_gold, "fleiss_kappa": 0.2}, gates=absolute).passed


def _rm_gate(figures: dict, gates: GatesSection = DEFAULTS):
    return reward_model_gate(figures, gates.min_rm_accuracy, gates.max_rm_length_correlation)


def test_the_default_reward_model_gate_fails_a_length_biased_model() -> None:
    # The quickstart's RM vs the RM trained on verbosity-biased annotators (README figures).
    assert _rm_gate({"heldout_accuracy": 0.8809, "heldout_length_correlation_at_equal_utility": -0.0634}).passed
    biased = _rm_gate({"heldout_accuracy": 0.70, "heldout_length_correlation_at_equal_utility": 0.73})
    assert biased.failures() == ["length_correlation_at_equal_utility=0.73 (≤ 0.3 required)"]
    chance = _rm_gate({"heldout_accuracy": 0.52, "heldout_length_correlation_at_equal_utility": 0.0})
    assert chance.failures() == ["heldout_accuracy=0.52 (≥ 0.6 required)"]
    # An RM whose length bias could not be measured does not pass.
    assert _rm_gate({"heldout_accuracy": 0.9, "heldout_length_correlation_at_equal_utility": None}).failures() == [
        "length_correlation_at_equal_utility=missing (≤ 0.3 required)"]
