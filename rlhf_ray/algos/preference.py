"""Pairwise preference losses: Bradley–Terry reward modelling and the DPO family.

Notation (per pair i of a batch):
    r_c, r_r          reward-model scores of the chosen and rejected response
    π_c, π_r          policy log-probabilities log π(y_c | x), log π(y_r | x) (summed over response tokens)
    ref_c, ref_r      the same under the frozen reference model
    h = (π_c − ref_c) − (π_r − ref_r)     the DPO log-ratio margin
    w                 non-negative per-pair weight (e.g. annotator confidence); reductions are Σ w·ℓ / Σ w

References: Bradley & Terry (1952); Ouyang et al. (2022) for the RM loss; Rafailov et al., "Direct Preference
Optimization" (2023); Mitchell, "A note on DPO with noisy preferences" (2023, conservative DPO / label
smoothing); Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences"
(2023, IPO); Zhao et al., "SLiC-HF" (2023, hinge).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _weighted_mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    """Σ_i w_i ℓ_i / Σ_i w_i (plain mean when `weights is None`); 0 for an empty batch or all-zero weights."""
    if weights is None:
        return losses.sum() / max(losses.numel(), 1)
    w = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)
    w = torch.broadcast_to(w, losses.shape)
    return (w * losses).sum() / w.sum().clamp(min=torch.finfo(losses.dtype).tiny)


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    margin: Tensor | float | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Bradley–Terry negative log-likelihood of the preferences, optionally with a margin (Llama 2 style).

        ℓ_i = −log σ(r_c,i − r_r,i − m_i) = log(1 + exp(−(r_c,i − r_r,i − m_i)))
        L   = Σ_i w_i ℓ_i / Σ_i w_i

    Computed with `logsigmoid`, stable for large |r_c − r_r|.

    Args:
        chosen_rewards, rejected_rewards: [B] scalar rewards.
        margin: scalar or [B] required gap m (e.g. larger for "much better" labels); None means 0.
        weights: [B] non-negative per-pair weights; None means all 1.

    Returns:
        scalar loss.
    """
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return _weighted_mean(-F.logsigmoid(diff), weights)


def preference_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Share of pairs ranked correctly, a tie counting half.

        acc = (1/B) Σ_i [ 1(r_c,i > r_r,i) + ½ · 1(r_c,i = r_r,i) ]

    Returns a float scalar (0 for an empty batch); no gradient.
    """
    with torch.no_grad():
        score = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
        return _weighted_mean(score, None)


# ---------------------------------------------------------------------------------------------------------------
# DPO family: each loss maps the log-ratio margin h to a per-pair loss ℓ(h).
# ---------------------------------------------------------------------------------------------------------------

DPOLossFn = Callable[[Tensor, float, float], Tensor]
"""(h, beta, label_smoothing) → per-pair loss [B]."""


def dpo_sigmoid_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al. 2023), with conservative label smoothing ε (Mitchell 2023):

        ℓ(h) = −(1 − ε) · log σ(β h) − ε · log σ(−β h)

    ε is the assumed probability that a preference label is flipped; ε = 0 is plain DPO, ε = ½ makes ℓ even in h.
    """
    logits = beta * h
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _no_smoothing(name: str, label_smoothing: float) -> None:
    if label_smoothing != 0.0:
        raise ValueError(
            f"label_smoothing={label_smoothing!r} is only defined for loss_type='sigmoid', not {name!r}"
        )


def dpo_ipo_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """IPO (Azar et al. 2023): regress the log-ratio margin onto a finite target instead of pushing it to ∞.

        ℓ(h) = (h − 1/(2β))²          minimum 0 at h = 1/(2β); β here is IPO's τ
    """
    _no_smoothing("ipo", label_smoothing)
    return (h - 1.0 / (2.0 * beta)) ** 2


def dpo_hinge_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """Hinge / SLiC (Zhao et al. 2023) on the DPO margin:

        ℓ(h) = max(0, 1 − β h)          zero once β h ≥ 1
    """
    _no_smoothing("hinge", label_smoothing)
    return torch.relu(1.0 - beta * h)


DPO_LOSSES: dict[str, DPOLossFn] = {
    "sigmoid": dpo_sigmoid_loss,
    "ipo": dpo_ipo_loss,
    "hinge": dpo_hinge_loss,
}
"""Registry of DPO-family losses by `loss_type` name; add an entry to add a loss."""


class DPOOutput(NamedTuple):
    """Result of `dpo_loss`. The reward tensors are [B] and detached (for logging, not for gradients)."""

    loss: Tensor
    """scalar, weighted mean of the per-pair loss"""
    chosen_rewards: Tensor
    """β (π_c − ref_c), the implicit reward of the chosen response"""
    rejected_rewards: Tensor
    """β (π_r − ref_r)"""
    margins: Tensor
    """chosen_rewards − rejected_rewards = β h"""


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    weights: Tensor | None = None,
) -> DPOOutput:
    """Direct preference optimisation loss over a batch of pairs.

        h   = (π_c − ref_c) − (π_r − ref_r)
        ℓ_i = DPO_LOSSES[loss_type](h_i, β, ε)     sigmoid: −(1−ε) log σ(βh) − ε log σ(−βh)
                                                   ipo:     (h − 1/(2β))²
                                                   hinge:   max(0, 1 − βh)
        L   = Σ_i w_i ℓ_i / Σ_i w_i
        implicit rewards: β (π_c − ref_c), β (π_r − ref_r)   (detached)

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] sequence log-probs under the policy (with gradient).
        ref_chosen_logps, ref_rejected_logps: [B] sequence log-probs under the reference (no gradient needed).
        beta: > 0, strength of the implicit KL regulariser (IPO's τ for "ipo").
        loss_type: a key of `DPO_LOSSES`.
        label_smoothing: ε in [0, ½], conservative DPO; only for "sigmoid".
        weights: [B] non-negative per-pair weights; None means all 1.
    """
    try:
        loss_fn = DPO_LOSSES[loss_type]
    except KeyError:
        raise ValueError(f"unknown loss_type={loss_type!r}; valid: {sorted(DPO_LOSSES)}") from None
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got beta={beta!r}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5]; got label_smoothing={label_smoothing!r}")

    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratio - rejected_logratio
    loss = _weighted_mean(loss_fn(h, beta, label_smoothing), weights)

    chosen_rewards = (beta * chosen_logratio).detach()
    rejected_rewards = (beta * rejected_logratio).detach()
    return DPOOutput(loss, chosen_rewards, rejected_rewards, chosen_rewards - rejected_rewards)
