"""KL divergence to the reference policy: per-token estimators and the coefficient controllers.

Notation (per response token t, sampled from the current policy π):
    log r_t = log π(y_t | ·) − log π_ref(y_t | ·)        the log-ratio of policy to reference
    KL(π ‖ π_ref) = E_π[log r]

Estimators of KL(π ‖ π_ref) from one sample (Schulman, "Approximating KL Divergence", 2020):
    k1 = log r                         unbiased, high variance, can be negative
    k2 = ½ (log r)²                    biased (low bias when π ≈ π_ref), always ≥ 0
    k3 = (r⁻¹ − 1) + log r             unbiased, always ≥ 0, low variance   (r⁻¹ = π_ref / π)

Coefficient controllers (Ziegler et al., "Fine-Tuning Language Models from Human Preferences", 2019) set the β
in the per-token reward r_t = −β · KL_t (+ score at the last token); see `rlhf_ray.algos.advantages`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

KLEstimatorFn = Callable[[Tensor], Tensor]
"""log r = log π − log π_ref, per token → per-token KL estimate (same shape)."""


def kl_k1(log_ratio: Tensor) -> Tensor:
    """k1 = log r = log π − log π_ref."""
    return log_ratio


def kl_k2(log_ratio: Tensor) -> Tensor:
    """k2 = ½ (log r)²."""
    return 0.5 * log_ratio.square()


def kl_k3(log_ratio: Tensor) -> Tensor:
    """k3 = (r⁻¹ − 1) + log r = exp(log π_ref − log π) − 1 − (log π_ref − log π)."""
    return torch.expm1(-log_ratio) + log_ratio


KL_ESTIMATORS: dict[str, KLEstimatorFn] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}
"""Registry of per-token KL estimators by `kind`; add an entry to add an estimator."""


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1", mask: Tensor | None = None) -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) for tokens sampled from π.

        log r_t = logprobs_t − ref_logprobs_t
        k1 = log r        k2 = ½ (log r)²        k3 = exp(−log r) − 1 + log r

    Args:
        logprobs: [B, L] log π of the sampled response tokens.
        ref_logprobs: [B, L] log π_ref of the same tokens.
        kind: a key of `KL_ESTIMATORS`.
        mask: optional [B, L] response mask; masked-out positions are set to 0 (selected away, so a −inf
            log-prob at a padding position cannot leak a nan or inf).

    Returns:
        [B, L] per-token KL estimates.
    """
    try:
        estimator = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown kind={kind!r}; valid: {sorted(KL_ESTIMATORS)}") from None
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"ref_logprobs must have the shape of logprobs {tuple(logprobs.shape)}; got {tuple(ref_logprobs.shape)}"
        )
    log_ratio = logprobs - ref_logprobs
    if mask is None:
        return estimator(log_ratio)
    keep = torch.broadcast_to(mask, log_ratio.shape) != 0
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    return torch.where(keep, estimator(torch.where(keep, log_ratio, zero)), zero)


# ---------------------------------------------------------------------------------------------------------------
# KL coefficient controllers
# ---------------------------------------------------------------------------------------------------------------


def _as_float(name: str, value: float | Tensor) -> float:
    out = float(value.detach().item()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite; got {name}={out!r}")
    return out


def _check_n_steps(n_steps: int) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int ≥ 0; got n_steps={n_steps!r}")


def _check_state(state: dict[str, Any], kind: str, keys: tuple[str, ...]) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"state is for a {state.get('kind')!r} controller, expected kind={kind!r}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"state is missing keys {missing}; expected {list(keys)}")


class FixedKLController:
    """Constant KL coefficient: β_{k+1} = β_k."""

    def __init__(self, value: float) -> None:
        value = _as_float("value", value)
        if value < 0:
            raise ValueError(f"value must be ≥ 0; got value={value!r}")
        self.value = value

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        """No change; returns the (unchanged) coefficient. Arguments are validated for symmetry with adaptive."""
        _as_float("current_kl", current_kl)
        _check_n_steps(n_steps)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(state, "fixed", ("value",))
        self.value = FixedKLController(state["value"]).value  # validated like the constructor

    def __repr__(self) -> str:
        return f"FixedKLController(value={self.value!r})"


class AdaptiveKLController:
    """Proportional controller steering the measured KL towards a target (Ziegler et al. 2019, §2.2).

        e_k      = clip(KL_k / KL_target − 1, −0.2, 0.2)
        β_{k+1}  = β_k · (1 + e_k · n_steps / horizon)

    β rises when the policy drifts further from the reference than the target, falls when it stays closer; one
    update moves it by at most ±20 % · n_steps / horizon. The factor is floored at 0 (reachable only when
    n_steps > 5 · horizon), so β never turns negative.

    Args:
        init_kl_coef: initial β ≥ 0.
        target: target KL per sequence (or per token, as long as `update` gets the same unit), > 0.
        horizon: number of samples (`n_steps` units) over which a full 20 % correction is spread, > 0.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        init_kl_coef = _as_float("init_kl_coef", init_kl_coef)
        target = _as_float("target", target)
        horizon = _as_float("horizon", horizon)
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be ≥ 0; got init_kl_coef={init_kl_coef!r}")
        if target <= 0:
            raise ValueError(f"target must be > 0; got target={target!r}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0; got horizon={horizon!r}")
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float | Tensor, n_steps: int) -> float:
        """β ← β · max(1 + clip(KL / target − 1, −0.2, 0.2) · n_steps / horizon, 0); returns the new β."""
        current_kl = _as_float("current_kl", current_kl)
        _check_n_steps(n_steps)
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= max(1.0 + proportional_error * n_steps / self.horizon, 0.0)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(state, "adaptive", ("value", "target", "horizon"))
        restored = AdaptiveKLController(state["value"], state["target"], state["horizon"])  # validated
        self.value, self.target, self.horizon = restored.value, restored.target, restored.horizon

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value!r}, target={self.target!r}, horizon={self.horizon!r})"
