"""Supervised fine-tuning objective: next-token negative log-likelihood on response tokens only."""

from __future__ import annotations

from torch import Tensor

from rlhf_ray.algos.logprobs import masked_mean, token_logprobs


def sft_loss(logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
    """Mean NLL of the response tokens, prompt and padding excluded.

        L = − Σ_{b,t≥1} m[b,t] · log p_θ(x[b,t] | x[b,<t]) / Σ_{b,t≥1} m[b,t]

    `response_mask[b, t]` marks response tokens of `input_ids`; the log-prob of token t comes from the logits
    at position t − 1, hence the shift.
    """
    return -masked_mean(token_logprobs(logits, input_ids), response_mask[:, 1:])
