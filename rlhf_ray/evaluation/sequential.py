"""Always-valid sequential A/B testing of two Bernoulli rates (accept / win rate of incumbent vs canary).

A fixed-horizon test is only valid if it is looked at once, at the planned sample size; a canary is watched
continuously, and peeking at a z-test after every observation inflates the false-positive rate far above α.
The mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari, Koomen, Pekelis & Walsh,
"Peeking at A/B tests", KDD 2017 and "Always valid inference", Operations Research 2022) stays valid at any
stopping time:

    data       Δ̂_n = p̂_B − p̂_A,   V_n = p̃_A(1 − p̃_A)/n_A + p̃_B(1 − p̃_B)/n_B     (Δ̂_n ≈ N(θ, V_n))
    mixture    θ ~ N(θ₀, τ²) under the alternative, H₀: θ = θ₀
    statistic  Λ_n = ∫ φ(Δ̂_n; θ, V_n) dN(θ; θ₀, τ²) / φ(Δ̂_n; θ₀, V_n)
                   = √(V_n / (V_n + τ²)) · exp( τ² (Δ̂_n − θ₀)² / (2 V_n (V_n + τ²)) )
    p-value    p_n = min(p_{n−1}, 1 / Λ_n),  p_0 = 1
    decision   stop and reject H₀ the first time p_n ≤ α; P_H₀(ever p_n ≤ α) ≤ α by Ville's inequality,
               because Λ_n is a non-negative martingale under H₀ with Λ_0 = 1.

With equal arms (V_n = 2σ²/n) this is Johari et al.'s eq. (8). The variance is a plug-in estimate (their
large-sample Bernoulli approximation) with Agresti–Caffo smoothing p̃ = (x + 1)/(n + 2), so an arm with no
successes yet does not get zero variance; `min_samples` per arm guards the first few observations where the
normal approximation is poor. τ is the spread of effects one expects: Johari et al. advise τ near the effect
one wants to detect, so the default is the minimum detectable effect.

`fixed_horizon_total` is the sample size a one-look two-sided z-test needs for the same α and power; a
sequential test that stops before it has saved traffic.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

Action = Literal["promote", "rollback", "continue"]
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class ArmCounts:
    """Bernoulli outcomes of one variant: `successes` accepted answers out of `trials` judged ones."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.trials < 0 or not 0 <= self.successes <= self.trials:
            raise ValueError(f"ArmCounts needs 0 ≤ successes ≤ trials; got successes={self.successes}, "
                             f"trials={self.trials}")

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else 0.0

    @property
    def smoothed_rate(self) -> float:
        """Agresti–Caffo p̃ = (x + 1) / (n + 2): never exactly 0 or 1, so the plug-in variance stays positive."""
        return (self.successes + 1) / (self.trials + 2)


@dataclass(frozen=True)
class SequentialSettings:
    """α (false-positive bound at any stopping time), power and the minimum detectable effect `mde` (absolute
    difference of rates) for the fixed-horizon comparison, τ of the mixture (default: `mde`), the fewest
    trials per arm before any decision, and the total trials after which the test stops and keeps the
    incumbent (default: twice the fixed-horizon total)."""

    alpha: float = 0.05
    power: float = 0.8
    mde: float = 0.1
    baseline_rate: float = 0.5
    tau: float | None = None
    min_samples: int = 20
    max_samples: int | None = None

    def __post_init__(self) -> None:
        checks = {"alpha": 0 < self.alpha < 1, "power": 0 < self.power < 1, "mde": 0 < self.mde < 1,
                  "baseline_rate": 0 < self.baseline_rate < 1, "tau": self.tau is None or self.tau > 0,
                  "min_samples": self.min_samples >= 1,
                  "max_samples": self.max_samples is None or self.max_samples >= 2 * self.min_samples}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"sequential settings: {name}={getattr(self, name)!r} is out of range")

    @property
    def mixture_tau(self) -> float:
        return self.tau if self.tau is not None else self.mde


@dataclass(frozen=True)
class SequentialResult:
    """One look at the data: the estimate, its variance, log Λ_n, the always-valid p-value, and the action."""

    action: Action
    reason: str
    delta: float
    variance: float
    log_lambda: float
    p_value: float
    trials: int
    incumbent_rate: float
    canary_rate: float


def msprt_log_lambda(delta: float, variance: float, tau: float, theta0: float = 0.0) -> float:
    """log Λ = ½ log(V / (V + τ²)) + τ² (Δ̂ − θ₀)² / (2 V (V + τ²))  (normal mixture, see the module doc)."""
    if variance <= 0 or tau <= 0:
        raise ValueError(f"mSPRT needs variance > 0 and tau > 0; got variance={variance}, tau={tau}")
    spread = variance + tau * tau
    return 0.5 * math.log(variance / spread) + tau * tau * (delta - theta0) ** 2 / (2.0 * variance * spread)


def difference_estimate(incumbent: ArmCounts, canary: ArmCounts) -> tuple[float, float]:
    """Δ̂ = p̂_B − p̂_A and its plug-in variance V = p̃_A(1 − p̃_A)/n_A + p̃_B(1 − p̃_B)/n_B (n ≥ 1 each)."""
    if incumbent.trials < 1 or canary.trials < 1:
        raise ValueError("difference_estimate needs at least one trial per arm")
    a, b = incumbent.smoothed_rate, canary.smoothed_rate
    variance = a * (1 - a) / incumbent.trials + b * (1 - b) / canary.trials
    return canary.rate - incumbent.rate, variance


def always_valid_p(previous_p: float, log_lambda: float) -> float:
    """p_n = min(p_{n−1}, 1/Λ_n): non-increasing, so a decision once reached is never withdrawn."""
    return min(previous_p, math.exp(-log_lambda) if log_lambda < 700 else 0.0)


def fixed_horizon_total(settings: SequentialSettings, canary_share: float = 0.5) -> int:
    """Total trials N of a one-look two-sided z-test with the same α, power and effect, when a share w of
    traffic goes to the canary (n_B = wN, n_A = (1 − w)N):

        N = (z_{1−α/2} + z_{power})² · ( p₀(1 − p₀)/(1 − w) + p₁(1 − p₁)/w ) / δ²,   p₁ = p₀ + δ
    """
    if not 0 < canary_share < 1:
        raise ValueError(f"canary_share must be in (0, 1); got {canary_share}")
    p0 = settings.baseline_rate
    p1 = min(max(p0 + settings.mde, 1e-6), 1 - 1e-6)
    z = _STANDARD_NORMAL.inv_cdf(1 - settings.alpha / 2) + _STANDARD_NORMAL.inv_cdf(settings.power)
    spread = p0 * (1 - p0) / (1 - canary_share) + p1 * (1 - p1) / canary_share
    return math.ceil(z * z * spread / settings.mde**2)


def sequential_decision(incumbent: ArmCounts, canary: ArmCounts, settings: SequentialSettings,
                        previous_p: float = 1.0) -> SequentialResult:
    """Promote when the canary is significantly better, roll back when significantly worse, keep the
    incumbent (rollback) once `max_samples` trials passed without a difference, else continue."""
    trials = incumbent.trials + canary.trials
    rates = {"incumbent_rate": incumbent.rate, "canary_rate": canary.rate, "trials": trials}
    if min(incumbent.trials, canary.trials) < settings.min_samples:
        return SequentialResult("continue", f"fewer than {settings.min_samples} trials in an arm", 0.0, 0.0, 0.0,
                                previous_p, **rates)
    delta, variance = difference_estimate(incumbent, canary)
    log_lambda = msprt_log_lambda(delta, variance, settings.mixture_tau)
    p_value = always_valid_p(previous_p, log_lambda)
    figures = {"delta": delta, "variance": variance, "log_lambda": log_lambda, "p_value": p_value, **rates}
    if p_value <= settings.alpha:
        if delta > 0:
            return SequentialResult("promote", f"canary better: p={p_value:.3g} ≤ α={settings.alpha}", **figures)
        return SequentialResult("rollback", f"canary worse: p={p_value:.3g} ≤ α={settings.alpha}", **figures)
    limit = settings.max_samples or 2 * fixed_horizon_total(settings)
    if trials >= limit:
        return SequentialResult("rollback", f"no significant improvement after {trials} ≥ {limit} trials",
                                **figures)
    return SequentialResult("continue", f"p={p_value:.3g} > α={settings.alpha}", **figures)


class CountedOutcomes:
    """Which feedback judgments the sequential test may count, so that no client can steer it:

        counted ⇔ the giver is authenticated
                  ∧ no outcome of this response was counted before      (one outcome per answer)
                  ∧ the giver has fewer than `per_user_cap` counted outcomes on this arm   (capped weight)

    Without the cap one prolific user's taste would be the test's verdict; with it each user weighs at most
    `per_user_cap` / n of an arm's n trials. The response ids remembered are bounded by `capacity` (older
    answers get no more feedback in practice: the routers forget them too)."""

    def __init__(self, per_user_cap: int, capacity: int = 100_000) -> None:
        if per_user_cap < 1 or capacity < 1:
            raise ValueError(f"CountedOutcomes needs per_user_cap ≥ 1 and capacity ≥ 1; got {per_user_cap}, "
                             f"{capacity}")
        self.per_user_cap, self.capacity = per_user_cap, capacity
        self._responses: OrderedDict[str, None] = OrderedDict()
        self._per_user: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, response_id: str, user: str, variant: str, authenticated: bool) -> bool:
        """Whether this outcome counts; a refusal is tallied by reason in `refused`."""
        reason = ("unauthenticated" if not authenticated else "repeat_response" if response_id in self._responses
                  else "user_cap" if self._per_user[(user, variant)] >= self.per_user_cap else None)
        if reason is not None:
            self.refused[reason] += 1
            return False
        self._responses[response_id] = None
        while len(self._responses) > self.capacity:
            self._responses.popitem(last=False)
        self._per_user[(user, variant)] += 1
        return True
