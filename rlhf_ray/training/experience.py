"""One PPO iteration's experience: from sampled sequences and the scorers' outputs to per-token advantages.

All per-token tensors are [B, L] over the response tokens (left-aligned, `mask` marks real ones), built from
the [B, T−1] token log-probs/values with `response_token_view`. Where the KL term goes depends on the
estimator (`KL_PLACEMENT`):

- `reward` (PPO/GAE, REINFORCE++): r_t = −β·KL_t, plus the sequence score at the last token (Ziegler et al.);
- `score` (RLOO): the sequence score becomes s − β·Σ_t KL_t (Ahmadian et al.);
- `loss` (GRPO): advantages come from the raw scores and β·KL(π‖π_ref) (k3) is added to the policy loss
  (Shao et al.).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlhf_ray.algos.advantages import AdvantageSettings, compute_advantages, token_level_rewards
from rlhf_ray.algos.kl import kl_penalty
from rlhf_ray.algos.logprobs import masked_mean, masked_sum
from rlhf_ray.rollout.batch import response_token_view

KL_PLACEMENT: dict[str, str] = {"gae": "reward", "reinforce_pp": "reward", "rloo": "score", "grpo": "loss"}


def build_experience(sequences: dict[str, Tensor], old_token_logprobs: Tensor, ref_token_logprobs: Tensor,
                     token_values: Tensor | None, scores: Tensor, estimator: str, settings: AdvantageSettings,
                     kl_coef: float, kl_kind: str) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The tensors the learner and critic train on, and the iteration's KL / advantage statistics.

    Args:
        sequences: `pack_samples` output (input_ids, attention_mask, response_mask [B, T]).
        old_token_logprobs, ref_token_logprobs, token_values: [B, T−1] from the policy, reference and critic.
        scores: [B] sequence rewards (RM − rule penalties).
    """
    if estimator not in KL_PLACEMENT:
        raise ValueError(f"unknown advantage estimator {estimator!r}; expected one of {sorted(KL_PLACEMENT)}")
    response = sequences["response_mask"]
    old, mask = response_token_view(old_token_logprobs, response)
    ref, _ = response_token_view(ref_token_logprobs, response)
    kl = kl_penalty(old, ref, kl_kind, mask)
    sequence_kl = masked_sum(kl, mask, dim=-1)
    placement = KL_PLACEMENT[estimator]
    token_rewards = token_level_rewards(scores, kl, mask, kl_coef if placement == "reward" else 0.0)
    effective_scores = scores - kl_coef * sequence_kl if placement == "score" else scores
    values = response_token_view(token_values, response)[0] if token_values is not None else None
    advantages, returns = compute_advantages(estimator, effective_scores, token_rewards, values, mask, settings)
    experience = {key: sequences[key] for key in ("input_ids", "attention_mask", "response_mask")}
    experience.update(old_logprobs=old, ref_logprobs=ref, advantages=advantages)
    stats: dict[str, Any] = {"kl": float(sequence_kl.mean()), "kl_per_token": float(masked_mean(kl, mask)),
                             "advantage_mean": float(masked_mean(advantages, mask))}
    if values is not None and returns is not None:
        experience.update(old_values=values, returns=returns)
        stats["return_mean"] = float(masked_mean(returns, mask))
    return experience, stats


def shard_rows(experience: dict[str, Tensor], shards: int) -> list[dict[str, Tensor]]:
    """Split every tensor along the batch dimension into `shards` contiguous, near-equal parts."""
    parts = [torch.tensor_split(value, shards) for value in experience.values()]
    return [dict(zip(experience, pieces, strict=True)) for pieces in zip(*parts, strict=True)]
