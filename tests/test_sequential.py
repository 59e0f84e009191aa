"""The sequential test's maths: the closed form, validity under continuous monitoring, power, and the
fixed-horizon sample size (pure numpy, no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf_ray.evaluation.sequential import (
    ArmCounts,
    SequentialSettings,
    always_valid_p,
    difference_estimate,
    fixed_horizon_total,
    msprt_log_lambda,
    sequential_decision,
)


def test_log_lambda_matches_the_mixture_integral() -> None:
    delta, variance, tau = 0.07, 0.002, 0.1
    grid = np.linspace(-1.5, 1.5, 200001)
    normal = lambda x, m, v: np.exp(-((x - m) ** 2) / (2 * v)) / np.sqrt(2 * np.pi * v)  # noqa: E731
    mixture = np.trapezoid(normal(delta, grid, variance) * normal(grid, 0.0, tau * tau), grid)
    assert msprt_log_lambda(delta, variance, tau) == pytest.approx(math.log(mixture / normal(delta, 0.0, variance)),
                                                                   rel=1e-6)
    # Johari et al.'s equal-arm form: V = 2σ²/n
    sigma2, n = 0.25, 400
    johari = 0.5 * math.log(2 * sigma2 / (2 * sigma2 + n * tau**2)) + (
        n**2 * tau**2 * delta**2 / (4 * sigma2 * (2 * sigma2 + n * tau**2)))
    assert msprt_log_lambda(delta, 2 * sigma2 / n, tau) == pytest.approx(johari)


def test_always_valid_p_never_increases() -> None:
    p = 1.0
    for log_lambda in (0.5, 2.0, 0.1, 3.0, -1.0):
        new = always_valid_p(p, log_lambda)
        assert new <= p
        p = new
    assert p == pytest.approx(math.exp(-3.0))


def _monitor(rates: tuple[float, float], settings: SequentialSettings, runs: int, horizon: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the test after every pair of observations; (decision per run, observations used per run)."""
    rng = np.random.default_rng(seed)
    a = rng.random((runs, horizon)) < rates[0]
    b = rng.random((runs, horizon)) < rates[1]
    actions = np.full(runs, "continue", dtype=object)
    used = np.full(runs, 2 * horizon)
    for run in range(runs):
        xa, xb, p = np.cumsum(a[run]), np.cumsum(b[run]), 1.0
        for n in range(settings.min_samples, horizon + 1):
            result = sequential_decision(ArmCounts(int(xa[n - 1]), n), ArmCounts(int(xb[n - 1]), n), settings, p)
            p = result.p_value
            if result.action != "continue":
                actions[run], used[run] = result.action, 2 * n
                break
    return actions, used


def test_false_positives_stay_below_alpha_under_continuous_peeking() -> None:
    settings = SequentialSettings(alpha=0.1, mde=0.1, baseline_rate=0.3, max_samples=100000)
    actions, _ = _monitor((0.3, 0.3), settings, runs=200, horizon=500, seed=1)
    false_positive = np.mean(actions != "continue")
    assert false_positive <= 0.1
    # whereas a z-test peeked at after every observation rejects far more often than its nominal 10 %
    rng = np.random.default_rng(1)
    a, b = rng.random((200, 500)) < 0.3, rng.random((200, 500)) < 0.3
    n = np.arange(1, 501)
    pa, pb = np.cumsum(a, 1) / n, np.cumsum(b, 1) / n
    pooled = (pa + pb) / 2
    z = np.abs(pb - pa) / np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / n, 1e-12))
    peeking = np.mean((z[:, 19:] > 1.645).any(axis=1))
    assert peeking > 2 * max(false_positive, 0.05)


def test_a_real_difference_is_found_before_the_fixed_horizon() -> None:
    settings = SequentialSettings(alpha=0.05, power=0.8, mde=0.15, baseline_rate=0.4)
    total = fixed_horizon_total(settings)
    actions, used = _monitor((0.4, 0.7), settings, runs=100, horizon=total, seed=2)
    assert np.mean(actions == "promote") >= 0.9
    assert np.median(used) < total
    actions, _ = _monitor((0.7, 0.4), settings, runs=50, horizon=total, seed=3)
    assert np.mean(actions == "rollback") >= 0.9


def test_fixed_horizon_total_and_inputs() -> None:
    # two-sided α = 0.05, power 0.8, 0.5 → 0.6 with equal arms: N = 7.849 · (0.25 + 0.24)/0.5 / 0.01 ≈ 770
    assert fixed_horizon_total(SequentialSettings(alpha=0.05, power=0.8, mde=0.1, baseline_rate=0.5)) == 770
    # an unequal split needs more traffic in total
    assert fixed_horizon_total(SequentialSettings(), 0.1) > fixed_horizon_total(SequentialSettings(), 0.5)
    assert difference_estimate(ArmCounts(3, 10), ArmCounts(6, 10))[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="alpha"):
        SequentialSettings(alpha=1.5)
    with pytest.raises(ValueError, match="successes"):
        ArmCounts(5, 3)
    early = sequential_decision(ArmCounts(1, 5), ArmCounts(5, 5), SequentialSettings(min_samples=20))
    assert early.action == "continue" and "fewer than 20" in early.reason
    stop = sequential_decision(ArmCounts(50, 100), ArmCounts(50, 100), SequentialSettings(max_samples=200))
    assert stop.action == "rollback" and "no significant improvement" in stop.reason
