"""Policy and value losses of the PPO family (used by PPO, GRPO, RLOO and REINFORCE++ alike).

Notation (per response token t; tensors [B, L] over response positions, `mask` 1 for real tokens):
    log π_t, log π_old,t    log-probs of the sampled token under the policy being trained and the one that sampled
    ρ_t = exp(log π_t − log π_old,t)        the importance ratio
    A_t                     advantage (a constant: computed without gradient, see `rlhf_ray.algos.advantages`)
    V_t, V_old,t, R_t       critic value now, at sampling time, and its target (return)
Every loss is a masked mean over all real tokens of the batch (token-level averaging).

References: Schulman et al., "Proximal Policy Optimization Algorithms" (2017); Ye et al., "Mastering Complex
Control in MOBA Games with Deep Reinforcement Learning" (2020, dual clip); Schulman, "Approximating KL
Divergence" (2020, the k3 estimator used for approx_kl); Hilton, Cobbe and Schulman, "Batch size-invariance for
Policy Optimization" (2022, decoupled PPO), as AReaL (Fu et al. 2025) applies it to stale rollouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_ray.algos.logprobs import masked_mean


class PolicyLossOutput(NamedTuple):
    """Result of a policy loss. Everything but `loss` is a detached scalar for logging."""

    loss: Tensor
    """scalar, masked mean of the per-token loss (with gradient)"""
    clip_fraction: Tensor
    """share of real tokens whose gradient is cut by clipping (the clipped or the dual-clip branch was taken)"""
    approx_kl: Tensor
    """masked mean of k3 = (ρ − 1) − log ρ, an estimate of KL(π_old ‖ π) from the samples of π_old"""
    ratio_mean: Tensor
    """masked mean of ρ"""
    is_weight_mean: Tensor | None = None
    """decoupled PPO only: masked mean of the truncated behaviour weight w = min(π_prox / π_behav, C)"""
    is_capped_fraction: Tensor | None = None
    """decoupled PPO only: share of real tokens whose weight π_prox / π_behav exceeded C and was cut to C"""


PolicyLossFn = Callable[..., PolicyLossOutput]
"""(logprobs, old_logprobs, advantages, mask, clip_eps, dual_clip=None) → PolicyLossOutput."""


def _check_same_shape(reference_name: str, reference: Tensor, **others: Tensor) -> None:
    for name, tensor in others.items():
        if tensor.shape != reference.shape:
            raise ValueError(
                f"{name} must have the shape of {reference_name} {tuple(reference.shape)}; got {tuple(tensor.shape)}"
            )


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate loss (Schulman et al. 2017), optionally dual-clipped (Ye et al. 2020).

        ρ_t   = exp(log π_t − log π_old,t)
        ℓ_t   = −min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t)  =  max(−ρ_t A_t, −clip(ρ_t, 1 − ε, 1 + ε) A_t)
        dual clip c > 1, for A_t < 0:   ℓ_t = min(ℓ_t, −c A_t)     (caps the loss when ρ ≫ 1 on a bad token)
        L     = Σ m ℓ / Σ m

    Where the clipped (or dual-clip) branch is taken, ℓ_t is constant in log π_t, so those tokens get no gradient.

    Args:
        logprobs: [B, L] log π of the sampled tokens under the current policy (with gradient).
        old_logprobs: [B, L] log π_old at sampling time (no gradient needed).
        advantages: [B, L] advantages (constants).
        mask: [B, L] response mask.
        clip_eps: ε > 0.
        dual_clip: c > 1, or None for plain PPO.

    Returns:
        `PolicyLossOutput(loss, clip_fraction, approx_kl, ratio_mean)`.
    """
    _check_same_shape("logprobs", logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    _check_clip(clip_eps, dual_clip)

    keep = mask != 0
    per_token, gradient_cut, log_ratio = _clipped_surrogate(logprobs, old_logprobs, advantages, keep, clip_eps,
                                                            dual_clip)
    loss = masked_mean(per_token, keep)
    clip_fraction, approx_kl, ratio_mean = _ratio_figures(gradient_cut, log_ratio, keep)
    return PolicyLossOutput(loss, clip_fraction, approx_kl, ratio_mean)


def _check_clip(clip_eps: float, dual_clip: float | None) -> None:
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0; got clip_eps={clip_eps!r}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1 (or None to disable); got dual_clip={dual_clip!r}")


def _clipped_surrogate(
    logprobs: Tensor, anchor_logprobs: Tensor, advantages: Tensor, keep: Tensor, clip_eps: float,
    dual_clip: float | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token (dual-)clipped PPO loss ℓ_t of `ppo_policy_loss` with ρ taken against `anchor_logprobs`; returns
    (ℓ, where the gradient is cut, log ρ). Padding gets log ρ = 0 and A = 0, so no inf or nan reaches a sum."""
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(keep, logprobs - anchor_logprobs, zero)
    advantages = torch.where(keep, advantages, zero)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    gradient_cut = clipped > unclipped
    if dual_clip is not None:
        cap = -dual_clip * advantages
        dual_taken = (advantages < 0) & (per_token > cap)
        per_token = torch.where(dual_taken, cap, per_token)
        gradient_cut = gradient_cut | dual_taken
    return per_token, gradient_cut, log_ratio


def _ratio_figures(gradient_cut: Tensor, log_ratio: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(clip fraction, approx KL k3, mean ρ) over the real tokens, detached."""
    with torch.no_grad():
        log_ratio = log_ratio.detach()
        clip_fraction = masked_mean(gradient_cut.to(log_ratio.dtype), keep)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, keep)
        ratio_mean = masked_mean(torch.exp(log_ratio), keep)
    return clip_fraction, approx_kl, ratio_mean


def decoupled_ppo_loss(
    logprobs: Tensor,
    proximal_logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    is_cap: float,
    dual_clip: float | None = None,
) -> PolicyLossOutput:
    """Decoupled PPO (Hilton et al. 2022; AReaL's form for stale rollouts): the trust region is taken around the
    proximal policy (the learner's weights before this update), and each token is reweighted by a truncated
    importance ratio from the behaviour policy that sampled it (an older policy version) to the proximal one:

        r_t = exp(log π_t − log π_prox,t)                              ratio against the proximal policy
        w_t = min(exp(log π_prox,t − log π_behav,t), C)                truncated behaviour weight, no gradient
        ℓ_t = −w_t · min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t)
        dual clip c > 1, for A_t < 0:  ℓ_t = w_t · min(−min(r_t A_t, clip(r_t) A_t), −c A_t)
        L   = Σ m ℓ / Σ m

    With π_prox = π_behav every w_t = 1 (C > 1) and L is `ppo_policy_loss` exactly. The gradient reaches only
    log π; clip fraction and approx KL are measured against π_prox, as the clip is.

    Args:
        logprobs: [B, L] log π of the sampled tokens under the policy being trained (with gradient).
        proximal_logprobs: [B, L] log π_prox: the learner's recomputation before this update (no gradient).
        behaviour_logprobs: [B, L] log π_behav: what the rollout that sampled the tokens reported.
        advantages: [B, L] advantages (constants).
        mask: [B, L] response mask.
        clip_eps: ε > 0.
        is_cap: C > 1, the truncation of the behaviour weight.
        dual_clip: c > 1, or None.

    Returns:
        `PolicyLossOutput` with `is_weight_mean` (mean w) and `is_capped_fraction` (share of tokens with
        π_prox / π_behav > C) set.
    """
    _check_same_shape("logprobs", logprobs, proximal_logprobs=proximal_logprobs,
                      behaviour_logprobs=behaviour_logprobs, advantages=advantages, mask=mask)
    _check_clip(clip_eps, dual_clip)
    if not is_cap > 1:
        raise ValueError(f"is_cap must be > 1 (a cap of the weight π_prox/π_behav, which is 1 on fresh samples); "
                         f"got is_cap={is_cap!r}")

    keep = mask != 0
    per_token, gradient_cut, log_ratio = _clipped_surrogate(logprobs, proximal_logprobs.detach(), advantages, keep,
                                                            clip_eps, dual_clip)
    with torch.no_grad():
        zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
        log_weight = torch.where(keep, proximal_logprobs - behaviour_logprobs, zero)
        log_cap = torch.log(torch.tensor(float(is_cap), dtype=logprobs.dtype, device=logprobs.device))
        capped = log_weight > log_cap
        # min taken in log space, so a huge π_prox / π_behav cannot overflow to inf before the cap
        weight = torch.exp(torch.minimum(log_weight, log_cap))
    loss = masked_mean(weight * per_token, keep)
    clip_fraction, approx_kl, ratio_mean = _ratio_figures(gradient_cut, log_ratio, keep)
    with torch.no_grad():
        weight_mean = masked_mean(weight, keep)
        capped_fraction = masked_mean(capped.to(logprobs.dtype), keep)
    return PolicyLossOutput(loss, clip_fraction, approx_kl, ratio_mean, weight_mean, capped_fraction)


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "ppo": ppo_policy_loss,
}
"""Registry of policy losses by name, all with the `PolicyLossFn` signature (dual clip is a `ppo` parameter)."""


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float | None = None
) -> Tensor:
    """Clipped value loss (PPO2 / OpenAI baselines):

        V_clip = V_old + clip(V − V_old, −ε, ε)
        ℓ_t    = ½ · max((V_t − R_t)², (V_clip,t − R_t)²)        clip_eps = None:  ℓ_t = ½ (V_t − R_t)²
        L      = Σ m ℓ / Σ m

    Args:
        values: [B, L] current critic values (with gradient).
        old_values: [B, L] values at sampling time.
        returns: [B, L] targets R (e.g. from `gae`).
        mask: [B, L] response mask.
        clip_eps: ε > 0, or None for the unclipped squared error.

    Returns:
        scalar loss.
    """
    _check_same_shape("values", values, old_values=old_values, returns=returns, mask=mask)
    keep = mask != 0
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    error = torch.where(keep, values - returns, zero)
    per_token = error.square()
    if clip_eps is not None:
        if not clip_eps > 0:
            raise ValueError(f"clip_eps must be > 0 (or None to disable); got clip_eps={clip_eps!r}")
        clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped_error = torch.where(keep, clipped_values - returns, zero)
        per_token = torch.maximum(per_token, clipped_error.square())
    return 0.5 * masked_mean(per_token, keep)


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of each position's next-token distribution:

        H_t = −Σ_v p_v log p_v,     p = softmax(logits[b, t])

    A −inf logit (a vocabulary entry masked out) contributes 0·log 0 = 0, with a finite gradient. Low-precision
    logits are normalised in float32.  [B, L, V] → [B, L].
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [B, L, V]; got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    finite_logp = torch.where(torch.isneginf(logp), torch.zeros((), dtype=logp.dtype, device=logp.device), logp)
    return -(logp.exp() * finite_logp).sum(dim=-1)


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Masked mean entropy of the policy over response positions: Σ m H / Σ m with H = `token_entropy(logits)`.

    Args:
        logits: [B, L, V] logits at the response positions (logits[:, t] predicting response token t).
        mask: [B, L] response mask.

    Returns:
        scalar (differentiable, so it can serve as an entropy bonus).
    """
    if logits.ndim != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, L, V] and mask [B, L] = {tuple(logits.shape[:2])}; "
            f"got shapes {tuple(logits.shape)} and {tuple(mask.shape)}"
        )
    return masked_mean(token_entropy(logits), mask != 0)
