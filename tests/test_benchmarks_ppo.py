"""benchmarks/ppo.py's pure parts: the 2-core bound and the seed-paired interval (no training)."""

from __future__ import annotations

import pytest

from benchmarks.ppo import paired_interval, two_core_bound


def test_two_core_bound_sums_the_roles_cpu_per_sample_and_halves_it() -> None:
    cpu = {"rollout": 3.0, "scorer": 0.2, "reference": 0.8, "learner": 4.0, "driver": 1.0, "ray_system": 0.6}
    bound = two_core_bound(cpu, samples=160)
    assert bound["roles_cpu_s_per_sample"] == pytest.approx(8.0 / 160)  # driver and Ray's processes left out
    assert bound["overhead_s_per_sample"] == pytest.approx(1.6 / 160)
    assert bound["min_s_per_sample"] == pytest.approx(8.0 / 160 / 2)
    assert bound["max_samples_per_s"] == pytest.approx(2 * 160 / 8.0)  # 40 samples/s on 2 cores
    assert two_core_bound(cpu, samples=160, cores=4)["max_samples_per_s"] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="samples=0"):
        two_core_bound(cpu, samples=0)


def test_paired_interval_is_the_t_interval_of_the_seed_differences() -> None:
    interval = paired_interval([0.30, 0.25, 0.40], [0.20, 0.25, 0.30])  # differences 0.1, 0, 0.1
    assert interval["diffs"] == pytest.approx([0.1, 0.0, 0.1])
    half = 4.302653 * 0.057735 / 3 ** 0.5  # t(0.975, 2) · sd / √3
    assert interval["mean"] == pytest.approx(0.0667, abs=1e-4)
    assert interval["low"] == pytest.approx(0.0667 - half, abs=1e-3)
    assert interval["high"] == pytest.approx(0.0667 + half, abs=1e-3)
    with pytest.raises(ValueError, match="≥ 2 seeds"):
        paired_interval([0.1], [0.2])
