"""benchmarks/learning.py's pure parts: mean ± sd over seeds, the hacking test and the targets (no training)."""

from __future__ import annotations

import math

import pytest

from benchmarks import learning


def test_mean_sd_is_the_sample_standard_deviation():
    figures = learning.mean_sd([1.0, 2.0, 4.0])
    assert figures["mean"] == pytest.approx(7 / 3, abs=1e-4)
    assert figures["sd"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2),
                                          abs=1e-4)
    assert figures["n"] == 3


def test_mean_sd_of_one_seed_has_no_sd_and_skips_nan():
    assert learning.mean_sd([0.5]) == {"mean": 0.5, "sd": None, "n": 1}
    assert learning.mean_sd([1.0, float("nan"), 3.0]) == {"mean": 2.0, "sd": pytest.approx(1.4142, abs=1e-4),
                                                           "n": 2}
    assert learning.mean_sd([]) == {"mean": None, "sd": None, "n": 0}


def test_aggregate_keeps_the_tree_and_folds_each_leaf():
    runs = [{"seed": 0, "loss": 1.0, "path": "a", "ok": True, "rm": {"accuracy": 0.8, "balanced": None}},
            {"seed": 1, "loss": 3.0, "path": "b", "ok": False, "rm": {"accuracy": 0.9, "balanced": 0.7}}]
    summary = learning.aggregate(runs)
    assert summary["loss"] == {"mean": 2.0, "sd": pytest.approx(1.4142, abs=1e-4), "n": 2}
    assert summary["ok"] == {"all": False, "any": True, "values": [True, False]}
    assert summary["rm"]["accuracy"]["mean"] == pytest.approx(0.85)
    assert summary["rm"]["balanced"] == {"mean": 0.7, "sd": None, "n": 1}  # None on a seed: left out
    assert "path" not in summary


def test_hacking_needs_both_thresholds():
    assert learning.hacking(0.2, -0.05)
    assert not learning.hacking(0.19, -0.5)
    assert not learning.hacking(1.0, -0.04)


def _run(accuracy: float, ppo_gain: float, ppo_kl: float, grpo_gain: float, hacked: bool, clean: bool) -> dict:
    return {"reward_model": {"accuracy": accuracy},
            "policies": {"ppo": {"utility_gain": ppo_gain, "kl": ppo_kl}, "grpo": {"utility_gain": grpo_gain,
                                                                                  "kl": 1.0}},
            "hacking": {"without_penalties": {"hacking": hacked}, "with_penalties": {"hacking": not clean}}}


def test_targets_need_every_seed():
    good = _run(0.9, 0.2, 4.0, 0.0, True, True)
    assert learning.targets([good, good]) == {"rm_accuracy": True, "ppo_gain": True, "grpo_gain": False,
                                              "policy_gain": True, "hacking_without_penalties": True,
                                              "no_hacking_with_penalties": True}
    too_far = _run(0.9, 0.3, 5.5, 0.0, True, True)  # the gain is there but KL is past 5 nats
    weak = _run(0.78, 0.1, 1.0, 0.0, False, False)  # mean accuracy (0.9 + 0.78) / 2 = 0.84 < 0.85
    figures = learning.targets([good, weak])
    assert not figures["rm_accuracy"] and not figures["policy_gain"]
    assert not figures["hacking_without_penalties"] and not figures["no_hacking_with_penalties"]
    assert not learning.targets([good, too_far])["ppo_gain"]


def test_the_loop_config_has_every_optional_gate_off(tmp_path):
    config = learning.loop_config(3, tmp_path, fast=True)
    assert config.seed == 3 and config.stages == learning.STAGES
    assert config.gates.max_quarantine_rate is None and config.gates.min_rm_accuracy is None
    assert all(value is None for name, value in config.gates if f"gates.{name}=null" in learning.gates_off())
