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


def test_paired_interval_is_the_t_interval_of_the_seed_differences() -> None:
    interval = learning.paired_interval([0.30, 0.25, 0.40], [0.20, 0.25, 0.30])  # differences 0.1, 0, 0.1
    assert interval["diffs"] == pytest.approx([0.1, 0.0, 0.1])
    half = 4.302653 * 0.057735 / 3 ** 0.5  # t(0.975, 2) · sd / √3
    assert interval["mean"] == pytest.approx(0.0667, abs=1e-4)
    assert interval["low"] == pytest.approx(0.0667 - half, abs=1e-3)
    assert interval["high"] == pytest.approx(0.0667 + half, abs=1e-3)
    with pytest.raises(ValueError, match="≥ 2 seeds"):
        learning.paired_interval([0.1], [0.2])


def _pipelined(sync: tuple[float, ...], piped: tuple[float, ...], start: float = 0.3) -> list[dict]:
    return [{"policies": {"ppo": {"true_utility": s, "utility_gain": round(s - start, 4)},
                          "ppo_async": {"true_utility": p, "utility_gain": round(p - start, 4)}}}
            for s, p in zip(sync, piped, strict=True)]


def test_pipeline_quality_pairs_each_mode_with_the_sync_run_by_seed():
    figures = learning.pipeline_quality(_pipelined((0.40, 0.42, 0.38), (0.41, 0.40, 0.39)), ["async"])["async"]
    assert figures["mode_minus_sync"]["diffs"] == pytest.approx([0.01, -0.02, 0.01])
    assert figures["sync_gains_on_every_seed"] and figures["mode_gains_on_every_seed"]
    assert figures["not_worse"] is (figures["mode_minus_sync"]["low"] > -0.05) is True
    worse = learning.pipeline_quality(_pipelined((0.40, 0.42, 0.38), (0.25, 0.40, 0.20)), ["async"])["async"]
    assert not worse["not_worse"] and not worse["mode_gains_on_every_seed"]  # 0.25 and 0.20 are below the start
    assert "mode_minus_sync" not in learning.pipeline_quality(_pipelined((0.4,), (0.4,)), ["async"])["async"]


def test_targets_of_runs_left_out_are_not_reported():
    run = _run(0.9, 0.2, 1.0, 0.0, True, True)
    run["policies"].pop("grpo")
    run.pop("hacking")
    assert learning.targets([run]) == {"rm_accuracy": True, "ppo_gain": True, "policy_gain": True}
