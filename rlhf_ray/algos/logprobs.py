"""Token log-probabilities and masked reductions for causal language models.

Alignment convention used everywhere in `rlhf_ray.algos` (HF causal-LM layout):

- `input_ids[b, t]` is token t of sequence b; `logits[b, t]` is the model's prediction for token t+1.
- `token_logprobs(logits, labels)[b, t] = log p(labels[b, t+1] | labels[b, ≤t])`, shape [B, T−1].
- masks are [B, T], aligned with the *input ids*: `mask[b, t]` says whether token t counts. Token t's
  log-prob lives at column t−1 of `token_logprobs`, so the mask that goes with it is `mask[:, 1:]`.
  Token 0 has no prediction (nothing conditions it) and never contributes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token log-likelihood of the next token.

        out[b, t] = log softmax(logits[b, t])[labels[b, t+1]]
                  = logits[b, t, y] − log Σ_v exp(logits[b, t, v]),   y = labels[b, t+1],   t = 0 … T−2

    Computed with one `log_softmax` over [B, T−1, V] (stable: max-subtracted logsumexp) and a gather; no
    other [B, T, V] float tensor is made. Low-precision logits (fp16/bf16) are normalised in float32 inside
    the kernel, so the result is float32 (float64 stays float64).

    Args:
        logits: [B, T, V] unnormalised scores, `logits[:, t]` predicting token t+1.
        labels: [B, T] integer token ids, valid indices into V everywhere (mask padding out afterwards,
            do not encode it as −100 here).

    Returns:
        [B, T−1] log-probabilities of `labels[:, 1:]`.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [B, T, V]; got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B, T] = {tuple(logits.shape[:2])}; got shape {tuple(labels.shape)}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits[:, :-1], dim=-1, dtype=dtype)  # [B, T−1, V], the only big allocation
    return logp.gather(-1, labels[:, 1:].unsqueeze(-1).long()).squeeze(-1)


def masked_sum(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = -1) -> Tensor:
    """Σ_i mask_i · values_i along `dim` (all dims when `dim is None`).

    `mask` is bool or 0/1 and broadcasts to `values`. Masked-out entries are *selected away*, not multiplied
    by zero, so a −inf or nan there cannot leak into the sum. An all-false mask gives 0.
    """
    keep = torch.broadcast_to(mask, values.shape) != 0
    selected = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Σ_i mask_i · values_i / max(Σ_i mask_i, 1) along `dim` (all dims when `dim is None`).

    An empty mask gives 0 (never nan): the numerator is 0 and the count is clamped to 1.
    """
    keep = torch.broadcast_to(mask, values.shape) != 0
    count = keep.sum() if dim is None else keep.sum(dim=dim)
    return masked_sum(values, keep, dim=dim) / count.clamp(min=1).to(values.dtype)


def sequence_logprob(logits: Tensor, labels: Tensor, response_mask: Tensor) -> Tensor:
    """Log-probability of each sequence's response: log π(y | x) = Σ_t m[b, t] · log p(labels[b, t] | labels[b, <t]).

    Alignment: `response_mask` is [B, T] aligned with `labels` (the input ids); `response_mask[b, t]` is true
    when token t is a response token (not prompt, not padding). The log-prob of token t comes from
    `logits[:, t−1]`, i.e. column t−1 of `token_logprobs`, so the sum uses `response_mask[:, 1:]`;
    `response_mask[:, 0]` is ignored (token 0 has no prediction).

    Returns:
        [B] summed log-probabilities (0 for a row with no response tokens).
    """
    if response_mask.shape != labels.shape:
        raise ValueError(
            f"response_mask must have the shape of labels {tuple(labels.shape)}; got {tuple(response_mask.shape)}"
        )
    return masked_sum(token_logprobs(logits, labels), response_mask[:, 1:], dim=-1)


def response_mask_from_lengths(prompt_lengths: Tensor, attention_mask: Tensor) -> Tensor:
    """Mark the response tokens of prompt+response sequences, whatever the padding side.

        rank[b, t] = (Σ_{s ≤ t} a[b, s]) − 1        (index of token t among the real tokens of row b)
        mask[b, t] = a[b, t] ∧ rank[b, t] ≥ prompt_lengths[b]

    so the first `prompt_lengths[b]` real tokens are the prompt and every later real token is response;
    left padding, right padding (or both) are excluded by `a = attention_mask`.

    Args:
        prompt_lengths: [B] number of (non-padding) prompt tokens per row.
        attention_mask: [B, T] 1/true for real tokens, 0/false for padding.

    Returns:
        [B, T] bool response mask, aligned with the input ids (feed it to `sequence_logprob`).
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [B, T]; got shape {tuple(attention_mask.shape)}")
    prompt_lengths = torch.as_tensor(prompt_lengths, device=attention_mask.device)
    if prompt_lengths.shape != attention_mask.shape[:1]:
        raise ValueError(
            f"prompt_lengths must be [B] = ({attention_mask.shape[0]},); got shape {tuple(prompt_lengths.shape)}"
        )
    real = attention_mask != 0
    rank = real.long().cumsum(dim=-1) - 1
    return real & (rank >= prompt_lengths.long().unsqueeze(-1))


def logprob_parity(rollout_logprobs: Tensor, learner_logprobs: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the log-probs a rollout backend reported for the tokens it sampled are from the learner's
    recomputation of the same tokens (same weights, same temperature):

        Δ_t  = |log π_rollout,t − log π_learner,t|        over real tokens (m_t = 1)
        mean = Σ m Δ / Σ m,     max = max_{m_t = 1} Δ_t   (both 0 when no token is real)

    At numerical noise for the same weights in the same precision; a larger gap means the backend samples from
    another distribution than the learner trains (stale weights, a different dtype or kernel, a temperature not
    applied the same way), which biases the PPO ratio.

    Args:
        rollout_logprobs: [B, L] log-probs reported by the rollout.
        learner_logprobs: [B, L] the learner's log-probs of the same tokens.
        mask: [B, L] 1/true for real tokens.

    Returns:
        {"mean": float, "max": float}.
    """
    if rollout_logprobs.shape != learner_logprobs.shape or mask.shape != learner_logprobs.shape:
        raise ValueError(f"rollout_logprobs, learner_logprobs and mask must have one shape; got "
                         f"{tuple(rollout_logprobs.shape)}, {tuple(learner_logprobs.shape)} and {tuple(mask.shape)}")
    keep = mask != 0
    gap = torch.where(keep, (rollout_logprobs.double() - learner_logprobs.double()).abs(),
                      torch.zeros((), dtype=torch.float64, device=keep.device))
    return {"mean": float(masked_mean(gap, keep)), "max": float(gap.max()) if gap.numel() else 0.0}
