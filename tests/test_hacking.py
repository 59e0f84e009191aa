"""Reward-hacking flags, the Pareto front and the choice of a sweep's trial: pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf_ray.evaluation.hacking import HackingThresholds, hacking_flags, pearson, reward_length_correlation
from rlhf_ray.evaluation.pareto import pareto_front
from rlhf_ray.evaluation.trials import TrialOutcome, assess, choose, figures_from_report


def test_pearson_matches_numpy_and_is_none_when_undefined() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert math.isclose(pearson(x.tolist(), y.tolist()), float(np.corrcoef(x, y)[0, 1]), rel_tol=1e-9)
    assert pearson([1.0], [2.0]) is None
    assert reward_length_correlation([1.0, 1.0, 1.0], [3, 4, 5]) is None
    with pytest.raises(ValueError, match="one length"):
        pearson([1.0, 2.0], [1.0])


HACK_START = {"reward": -0.4, "true_utility": 0.10, "words": 20.0, "canned_rate": 0.05, "reward_length_corr": 0.2}
HACK_END = {"reward": 0.3, "true_utility": -0.05, "words": 41.0, "canned_rate": 0.40, "reward_length_corr": 0.8}


def test_a_length_hack_raises_every_flag_with_its_figures() -> None:
    flags = hacking_flags(HACK_START, HACK_END, "true_utility")
    assert set(flags) == {"reward_up_quality_down", "length_drift", "canned_phrases_up", "reward_tracks_length"}
    assert "+0.700" in flags["reward_up_quality_down"] and "-0.150" in flags["reward_up_quality_down"]
    assert "× 2.05" in flags["length_drift"]


def test_an_honest_improvement_raises_none() -> None:
    end = {"reward": 0.3, "true_utility": 0.4, "words": 22.0, "canned_rate": 0.05, "reward_length_corr": 0.1}
    assert hacking_flags(HACK_START, end, "true_utility") == {}


def test_missing_figures_skip_their_flags_and_thresholds_are_checked() -> None:
    assert hacking_flags({"reward": 0.0}, {"reward": 1.0}, "judge_reward") == {}
    assert "length_drift" not in hacking_flags(HACK_START, HACK_END, "true_utility", HackingThresholds(length_ratio=3))
    with pytest.raises(ValueError, match="reward_length_corr"):
        HackingThresholds(reward_length_corr=2.0)


def test_pareto_front_keeps_the_non_dominated_points_and_ties() -> None:
    # (quality ↑, kl ↓)
    points = [(0.5, 1.0), (0.6, 2.0), (0.4, 0.5), (0.5, 1.5), (0.6, 2.0), (0.3, 3.0)]
    assert pareto_front(points, (True, False)) == [0, 1, 2, 4]
    assert pareto_front([], (True,)) == []
    with pytest.raises(ValueError, match="coordinates"):
        pareto_front([(1.0,)], (True, False))


def _outcome(trial_id: str, quality_end: float, kl: float, status: str = "completed",
             hack: bool = False) -> TrialOutcome:
    start = {"reward": 0.0, "true_utility": 0.0, "words": 20.0, "canned_rate": 0.0}
    end = {"reward": 0.8 if hack else 0.2, "true_utility": quality_end, "words": 40.0 if hack else 21.0,
           "canned_rate": 0.0}
    return TrialOutcome(trial_id, {"reward.verbosity_coef": 0.0 if hack else 1.0}, status, 8, start, end, kl)


def test_choose_prefers_held_out_quality_of_unflagged_completed_trials() -> None:
    outcomes = assess([_outcome("a", -0.1, 0.5, hack=True), _outcome("b", 0.2, 0.4), _outcome("c", 0.3, 0.9),
                       _outcome("d", 0.9, 0.1, status="stopped")], "true_utility")
    assert outcomes[0].flags and not outcomes[1].flags
    assert [o.pareto for o in outcomes] == [False, True, True, False]  # d stopped early: not comparable
    index, reason = choose(outcomes, "true_utility", ["reward_up_quality_down", "length_drift"])
    assert outcomes[index].trial_id == "c"  # d stopped early, a is flagged
    assert "+0.300" in reason and "2 unflagged" in reason


def test_choose_falls_back_with_a_warning_when_every_trial_is_flagged() -> None:
    outcomes = assess([_outcome("a", -0.1, 0.5, hack=True), _outcome("b", 0.1, 0.5, hack=True)], "true_utility")
    index, reason = choose(outcomes, "true_utility", ["length_drift"])
    assert outcomes[index].trial_id == "b" and "review before deploying" in reason
    assert choose([], "true_utility", []) == (None, "no trial completed with a held-out figure")


def test_figures_from_report_reads_the_prefixed_figures() -> None:
    metrics = {"eval/reward": 1.0, "eval/true_utility": 0.5, "start/reward": 0.0, "kl": 0.3}
    assert figures_from_report(metrics, "eval") == {"reward": 1.0, "true_utility": 0.5}
    assert figures_from_report(metrics, "start") == {"reward": 0.0}
