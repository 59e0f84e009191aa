"""Advantage estimators for policy-gradient RLHF: GAE (PPO), GRPO, RLOO and REINFORCE++.

Shapes and notation:
    B samples (rows), L response positions; per-token tensors are [B, L] over the *response* tokens only.
    mask[b, t]      1 for a real response token, 0 for padding. Masked positions are not time steps: the
                    recursions skip them, so right padding, left padding and a padded row all give the same
                    numbers at the real tokens as the unpadded row; every output is 0 at masked positions.
    scores[b]       one outcome reward per sample (reward model score plus sequence-level penalties).
    r[b, t]         token-level reward, e.g. r_t = −β·KL_t + 1(t = last) · score   (`token_level_rewards`).
    V[b, t]         critic value of the state before response token t.
    Groups: rows [g·G, (g+1)·G) are the G samples of prompt g (`group_size` = G, B divisible by G).

Advantages and returns are regression / policy-gradient *targets*: the estimators compute them without
gradient (`torch.no_grad`), so no gradient can flow from the loss back through them.

References: Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(2016, GAE); Ziegler et al. (2019) and Ouyang et al. (2022) for the per-token KL reward; Shao et al.,
"DeepSeekMath" (2024, GRPO); Liu et al., "Understanding R1-Zero-Like Training" (2025, Dr. GRPO, no std
scaling); Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization" (2024, RLOO); Hu,
"REINFORCE++" (2025).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhf_ray.algos.logprobs import masked_mean


def _keep(mask: Tensor, shape: torch.Size) -> Tensor:
    return torch.broadcast_to(mask, shape) != 0


def _check_token_shapes(name: str, values: Tensor, mask: Tensor) -> None:
    if values.ndim != 2:
        raise ValueError(f"{name} must be [B, L]; got shape {tuple(values.shape)}")
    if mask.shape != values.shape:
        raise ValueError(f"mask must have the shape of {name} {tuple(values.shape)}; got {tuple(mask.shape)}")


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {name}={value!r}")


def _check_groups(rewards: Tensor, group_size: int, min_size: int = 1) -> None:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [B]; got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < min_size:
        raise ValueError(f"group_size must be an int ≥ {min_size}; got group_size={group_size!r}")
    if rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"batch size B={rewards.shape[0]} is not divisible by group_size={group_size}; "
            "rows [g·G, (g+1)·G) must be the G samples of one prompt"
        )


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise to zero mean and unit variance over the masked entries (all dims together).

        μ  = Σ m·x / Σ m,     σ² = Σ m·(x − μ)² / Σ m        (population variance, unbiased=False)
        out = (x − μ) / sqrt(σ² + eps)           shift_mean=True
        out = (x − μ) / sqrt(σ² + eps) + μ       shift_mean=False  (rescale only, keep the mean)
        out = 0                                  where m = 0

    Differentiable (no `no_grad` here). An all-false mask gives all zeros.
    """
    keep = _keep(mask, values.shape)
    mean = masked_mean(values, keep)
    centred = values - mean
    var = masked_mean(centred.square(), keep)
    whitened = centred * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(keep, whitened, torch.zeros((), dtype=whitened.dtype, device=whitened.device))


def broadcast_to_tokens(seq_advantages: Tensor, mask: Tensor) -> Tensor:
    """Give every response token of row b its sequence's advantage: out[b, t] = m[b, t] · A_b.  [B] → [B, L]."""
    if seq_advantages.ndim != 1 or mask.ndim != 2 or mask.shape[0] != seq_advantages.shape[0]:
        raise ValueError(
            f"seq_advantages must be [B] and mask [B, L] with the same B; got shapes "
            f"{tuple(seq_advantages.shape)} and {tuple(mask.shape)}"
        )
    expanded = seq_advantages.unsqueeze(-1).expand(mask.shape)
    return torch.where(mask != 0, expanded, torch.zeros((), dtype=expanded.dtype, device=expanded.device))


def token_level_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token reward with the KL penalty spread over the response and the score at its last token.

        r[b, t] = −β · KL[b, t] + 1(t = last_b) · score_b        for m[b, t] = 1
        r[b, t] = 0                                               for m[b, t] = 0
        last_b  = max{t : m[b, t] = 1}   (a row with no response token gets no score)

    Args:
        scores: [B] outcome reward per sample.
        kl: [B, L] per-token KL estimate (`kl_penalty`).
        mask: [B, L] response mask (any padding side).
        kl_coef: β ≥ 0.

    Returns:
        [B, L] token rewards (differentiable in `scores` and `kl`, though normally both are constants).
    """
    _check_token_shapes("kl", kl, mask)
    if scores.shape != kl.shape[:1]:
        raise ValueError(f"scores must be [B] = ({kl.shape[0]},); got shape {tuple(scores.shape)}")
    if not kl_coef >= 0:
        raise ValueError(f"kl_coef must be ≥ 0; got kl_coef={kl_coef!r}")
    keep = mask != 0
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    positions = torch.arange(kl.shape[1], device=kl.device)
    last = torch.where(keep, positions, -1).amax(dim=-1, keepdim=True)  # [B, 1]; −1 for an empty row
    is_last = keep & (positions == last)
    rewards = torch.where(keep, -kl_coef * kl, zero)
    return rewards + torch.where(is_last, scores.to(kl.dtype).unsqueeze(-1), zero)


def _reverse_scan(
    rewards: Tensor, values: Tensor | None, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Backward recursion over the real tokens of each row (masked positions are skipped, output 0 there).

        δ_t = r_t + γ V_next − V_t,   A_t = δ_t + γλ A_next,     V_next / A_next = those of the next real token
                                                                 (0 past the last real token)
    With `values is None` this is the discounted return-to-go G_t = r_t + γλ G_next (V ≡ 0).
    Returns (A, A + V).
    """
    keep = mask != 0
    zero_col = torch.zeros_like(rewards[:, 0])
    next_value, next_adv = zero_col, zero_col
    columns: list[Tensor] = []
    for t in reversed(range(rewards.shape[1])):
        m = keep[:, t]
        value_t = values[:, t] if values is not None else zero_col
        delta = rewards[:, t] + gamma * next_value - value_t
        adv = delta + gamma * lam * next_adv
        columns.append(torch.where(m, adv, zero_col))
        next_value = torch.where(m, value_t, next_value)
        next_adv = torch.where(m, adv, next_adv)
    advantages = torch.stack(columns[::-1], dim=1)
    returns = advantages if values is None else torch.where(keep, advantages + values, torch.zeros_like(advantages))
    return advantages, returns


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the real tokens of each row.

        δ_t = r_t + γ V_{t+1} − V_t            V_{t+1} = 0 past the last real token (the episode ends there)
        A_t = δ_t + γ λ A_{t+1}                A = 0 past the last real token
        R_t = A_t + V_t                        (the critic's target)

    t+1 means the next *real* token: masked positions are skipped and set to 0 in both outputs, so rows of
    different lengths (right or left padding) are handled. Computed without gradient.

    Args:
        rewards: [B, L] token rewards (`token_level_rewards`).
        values: [B, L] critic values V_t.
        mask: [B, L] response mask.
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1] (λ = 1: Monte-Carlo return − V; λ = 0: one-step TD error).

    Returns:
        (advantages, returns), both [B, L].
    """
    _check_token_shapes("rewards", rewards, mask)
    if values.shape != rewards.shape:
        raise ValueError(f"values must have the shape of rewards {tuple(rewards.shape)}; got {tuple(values.shape)}")
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    with torch.no_grad():
        return _reverse_scan(rewards, values, mask, gamma, lam)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Return-to-go over the real tokens of each row: G_t = r_t + γ G_{t+1}, G = 0 past the last real token.

    Masked positions are skipped and set to 0. Computed without gradient.  [B, L] → [B, L].
    """
    _check_token_shapes("rewards", rewards, mask)
    _check_unit_interval("gamma", gamma)
    with torch.no_grad():
        return _reverse_scan(rewards, None, mask, gamma, 1.0)[0]


# ---------------------------------------------------------------------------------------------------------------
# Outcome-level (critic-free) estimators
# ---------------------------------------------------------------------------------------------------------------

GRPO_SCALES = ("group", "batch", "none")
"""Valid `scale` values of `grpo_advantages`."""


def grpo_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024), one per sample.

        μ_g = mean of the G rewards of group g,   s_g = their std (Bessel-corrected, 0 when G = 1)
        scale="group":  A_i = (r_i − μ_g) / (s_g + eps)
        scale="batch":  A_i = (r_i − μ_g) / (s + eps),   s = std of all B rewards (Bessel-corrected)
        scale="none":   A_i =  r_i − μ_g                  (Dr. GRPO, Liu et al. 2025: no std scaling)

    A group whose G rewards are equal gets A = 0 in every mode. Computed without gradient.

    Args:
        rewards: [B] outcome rewards, rows [g·G, (g+1)·G) one group.
        group_size: G ≥ 1, dividing B.
        scale: one of `GRPO_SCALES`.
        eps: > 0 added to the std.

    Returns:
        [B] advantages (broadcast them with `broadcast_to_tokens`).
    """
    _check_groups(rewards, group_size)
    if scale not in GRPO_SCALES:
        raise ValueError(f"unknown scale={scale!r}; valid: {list(GRPO_SCALES)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got eps={eps!r}")
    with torch.no_grad():
        grouped = rewards.reshape(-1, group_size)
        centred = grouped - grouped.mean(dim=-1, keepdim=True)
        correction = 1 if group_size > 1 else 0
        if scale == "group":
            centred = centred / (grouped.std(dim=-1, keepdim=True, correction=correction) + eps)
        elif scale == "batch":
            centred = centred / (rewards.std(correction=1 if rewards.numel() > 1 else 0) + eps)
        return centred.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (RLOO, Ahmadian et al. 2024): baseline = mean reward of the group's other samples.

        A_i = r_i − (1/(G−1)) Σ_{j ≠ i in group} r_j  =  G/(G−1) · (r_i − μ_g)

    Computed without gradient.

    Args:
        rewards: [B] outcome rewards, rows [g·G, (g+1)·G) one group.
        group_size: G ≥ 2, dividing B.

    Returns:
        [B] advantages.
    """
    _check_groups(rewards, group_size, min_size=2)
    with torch.no_grad():
        grouped = rewards.reshape(-1, group_size)
        others_mean = (grouped.sum(dim=-1, keepdim=True) - grouped) / (group_size - 1)
        return (grouped - others_mean).reshape(-1)


def reinforce_pp_advantages(rewards_tokens: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """REINFORCE++ (Hu 2025): discounted return-to-go of the token rewards, whitened over the whole batch.

        G_t = r_t + γ G_{t+1}                    (r_t includes −β·KL_t; the score sits at the last token)
        A_t = (G_t − μ_G) / sqrt(σ_G² + 1e-8)    μ_G, σ_G over all real tokens of the batch (`masked_whiten`)

    Masked positions are skipped by the recursion and 0 in the output. Computed without gradient.

    Args:
        rewards_tokens: [B, L] token rewards (`token_level_rewards`).
        mask: [B, L] response mask.
        gamma: discount γ in [0, 1].

    Returns:
        [B, L] advantages.
    """
    returns = discounted_returns(rewards_tokens, mask, gamma)
    with torch.no_grad():
        return masked_whiten(returns, mask)


# ---------------------------------------------------------------------------------------------------------------
# Registry: one signature for every estimator
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvantageSettings:
    """Knobs of the advantage estimators (validated on construction).

    gamma: discount γ in [0, 1] (gae, reinforce_pp).
    lam: GAE λ in [0, 1] (gae).
    group_size: samples per prompt G ≥ 1 (grpo; rloo needs G ≥ 2).
    grpo_scale: one of `GRPO_SCALES` (grpo).
    whiten: whiten the token advantages over the batch after estimating them (gae, grpo, rloo);
        reinforce_pp always whitens (it is part of the method).
    """

    gamma: float = 1.0
    lam: float = 0.95
    group_size: int = 1
    grpo_scale: str = "group"
    whiten: bool = False

    def __post_init__(self) -> None:
        _check_unit_interval("gamma", self.gamma)
        _check_unit_interval("lam", self.lam)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be an int ≥ 1; got group_size={self.group_size!r}")
        if self.grpo_scale not in GRPO_SCALES:
            raise ValueError(f"unknown grpo_scale={self.grpo_scale!r}; valid: {list(GRPO_SCALES)}")


AdvantageEstimator = Callable[
    [Tensor, Tensor | None, Tensor | None, Tensor, AdvantageSettings], tuple[Tensor, Tensor | None]
]
"""(scores [B], token_rewards [B, L] | None, values [B, L] | None, mask [B, L], settings)
→ (advantages [B, L], returns [B, L] | None). Returns are the critic targets, None for critic-free methods."""


def _require(name: str, estimator: str, tensor: Tensor | None) -> Tensor:
    if tensor is None:
        raise ValueError(f"{name} is required by the {estimator!r} advantage estimator; got {name}=None")
    return tensor


def _maybe_whiten(advantages: Tensor, mask: Tensor, settings: AdvantageSettings) -> Tensor:
    if not settings.whiten:
        return advantages
    with torch.no_grad():
        return masked_whiten(advantages, mask)


def _gae_estimator(
    scores: Tensor, token_rewards: Tensor | None, values: Tensor | None, mask: Tensor, settings: AdvantageSettings
) -> tuple[Tensor, Tensor | None]:
    """GAE on the token rewards (score + in-reward KL) and the critic's values; returns are the critic targets."""
    rewards = _require("token_rewards", "gae", token_rewards)
    advantages, returns = gae(rewards, _require("values", "gae", values), mask, settings.gamma, settings.lam)
    return _maybe_whiten(advantages, mask, settings), returns


def _grpo_estimator(
    scores: Tensor, token_rewards: Tensor | None, values: Tensor | None, mask: Tensor, settings: AdvantageSettings
) -> tuple[Tensor, Tensor | None]:
    """GRPO on the outcome scores (the KL goes into the loss, not the reward); token_rewards/values unused."""
    seq = grpo_advantages(scores, settings.group_size, settings.grpo_scale)
    return _maybe_whiten(broadcast_to_tokens(seq, mask), mask, settings), None


def _rloo_estimator(
    scores: Tensor, token_rewards: Tensor | None, values: Tensor | None, mask: Tensor, settings: AdvantageSettings
) -> tuple[Tensor, Tensor | None]:
    """RLOO on the outcome scores (pass scores − β·Σ_t KL_t to put the KL in the reward); token_rewards unused."""
    seq = rloo_advantages(scores, settings.group_size)
    return _maybe_whiten(broadcast_to_tokens(seq, mask), mask, settings), None


def _reinforce_pp_estimator(
    scores: Tensor, token_rewards: Tensor | None, values: Tensor | None, mask: Tensor, settings: AdvantageSettings
) -> tuple[Tensor, Tensor | None]:
    """REINFORCE++ on the token rewards (score + in-reward KL); scores/values unused."""
    rewards = _require("token_rewards", "reinforce_pp", token_rewards)
    return reinforce_pp_advantages(rewards, mask, settings.gamma), None


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "gae": _gae_estimator,
    "grpo": _grpo_estimator,
    "rloo": _rloo_estimator,
    "reinforce_pp": _reinforce_pp_estimator,
}
"""Registry of advantage estimators by name, all with the `AdvantageEstimator` signature."""

_CRITIC_ESTIMATORS = frozenset({"gae"})


def _lookup(name: str) -> AdvantageEstimator:
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator name={name!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}") from None


def needs_critic(name: str) -> bool:
    """Whether the estimator `name` needs critic values (only "gae")."""
    _lookup(name)
    return name in _CRITIC_ESTIMATORS


def compute_advantages(
    name: str,
    scores: Tensor,
    token_rewards: Tensor | None,
    values: Tensor | None,
    mask: Tensor,
    settings: AdvantageSettings,
) -> tuple[Tensor, Tensor | None]:
    """Look up `ADVANTAGE_ESTIMATORS[name]` (ValueError naming the valid ones) and apply it.

    Returns (advantages [B, L], returns [B, L] or None when the estimator has no critic).
    """
    return _lookup(name)(scores, token_rewards, values, mask, settings)
