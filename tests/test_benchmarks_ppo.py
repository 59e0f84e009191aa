"""benchmarks/ppo.py's pure part: the 2-core bound (no training)."""

from __future__ import annotations

import pytest

from benchmarks.ppo import two_core_bound


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
