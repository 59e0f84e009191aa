"""Rollout samples and the padded token batch every PPO stage (reward, reference, critic, learner) consumes.

Alignment follows `rlhf_ray.algos.logprobs` and `rlhf_ray.training.encoding.encode_chat`: masks are [B, T]
aligned with the input ids, and token t's per-token value (log-prob, KL, value estimate) sits at column t−1
of a [B, T−1] tensor. `response_token_view` gathers those response entries into a compact, left-aligned
[B, L] block (L = longest response) for per-token advantages and losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sample:
    """One generated response.

    `prompt_ids` are the rendered chat prompt's tokens (no padding); `response_ids` the generated tokens,
    ending with the end-of-turn (or eos) token when `finished` — so the policy is trained to stop — and
    cut at the length cap when not.
    """

    prompt_id: str
    prompt: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool
    # log p(response_ids[k] | prompt, response_ids[:k]) at the sampling temperature, when the backend was asked
    response_logprobs: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def pack_samples(samples: Sequence[Sample], pad_token_id: int) -> dict[str, Tensor]:
    """Right-padded [B, T] batch of prompt + response tokens.

    Returns:
        input_ids: [B, T] long, `prompt_ids + response_ids` then `pad_token_id`.
        attention_mask: [B, T] long, 1 on real tokens.
        response_mask: [B, T] long, 1 on response tokens (aligned with input ids, as in `encode_chat`).
        prompt_lengths, response_lengths: [B] long.
    """
    if not samples:
        raise ValueError("pack_samples needs at least one sample; got an empty list")
    for sample in samples:
        if not sample.prompt_ids:
            raise ValueError(f"sample {sample.prompt_id!r} has empty prompt_ids; a response needs a prompt before it")
    width = max(s.num_tokens for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    response = torch.zeros((batch, width), dtype=torch.long)
    for b, sample in enumerate(samples):
        p, r = len(sample.prompt_ids), len(sample.response_ids)
        input_ids[b, : p + r] = torch.tensor(sample.prompt_ids + sample.response_ids, dtype=torch.long)
        attention[b, : p + r] = 1
        response[b, p : p + r] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": response,
        "prompt_lengths": torch.tensor([len(s.prompt_ids) for s in samples], dtype=torch.long),
        "response_lengths": torch.tensor([len(s.response_ids) for s in samples], dtype=torch.long),
    }


def response_token_view(token_values: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The response tokens' entries of a per-token tensor, left-aligned and zero-padded.

        m = response_mask[:, 1:]                       (token t's value is at column t−1)
        k[b, t] = Σ_{s ≤ t} m[b, s] − 1                 (index of token t+1 among row b's response tokens)
        values[b, k[b, t]] = token_values[b, t]   where m[b, t]

    Works for any padding side. Differentiable with respect to `token_values`.

    Args:
        token_values: [B, T−1] per-token values (e.g. `token_logprobs(logits, input_ids)`).
        response_mask: [B, T] 0/1 or bool, aligned with the input ids.

    Returns:
        values [B, L] (zero where `mask` is 0) and mask [B, L] bool; L = the longest response (0 when no row
        has a response token).
    """
    if response_mask.ndim != 2 or token_values.ndim != 2:
        raise ValueError(f"token_values must be [B, T−1] and response_mask [B, T]; got shapes "
                         f"{tuple(token_values.shape)} and {tuple(response_mask.shape)}")
    batch, width = response_mask.shape
    if token_values.shape != (batch, width - 1):
        raise ValueError(f"token_values must be [B, T−1] = ({batch}, {width - 1}) for response_mask "
                         f"{tuple(response_mask.shape)}; got {tuple(token_values.shape)}")
    keep = response_mask[:, 1:] != 0
    rank = keep.long().cumsum(dim=-1) - 1
    lengths = keep.sum(dim=-1)
    longest = int(lengths.max().item()) if batch else 0
    rows, cols = keep.nonzero(as_tuple=True)
    values = torch.zeros((batch, longest), dtype=token_values.dtype, device=token_values.device)
    values = values.index_put((rows, rank[rows, cols]), token_values[rows, cols])
    positions = torch.arange(longest, device=response_mask.device)
    mask = positions.unsqueeze(0) < lengths.unsqueeze(-1)
    return values, mask


def rollout_token_logprobs(samples: Sequence[Sample], sequences: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The log-probs the rollout reported for its sampled tokens, laid out as the learner's token log-probs are:
    [B, T−1], token t's value at column t−1 (so response token k of row b, at input position p_b + k, sits at
    column p_b + k − 1), zero elsewhere; `sequences` is `pack_samples`' output for `samples`."""
    width = sequences["input_ids"].shape[1]
    out = torch.zeros((len(samples), width - 1), dtype=torch.float32)
    for b, sample in enumerate(samples):
        if sample.response_logprobs is None or len(sample.response_logprobs) != len(sample.response_ids):
            raise ValueError(f"sample {sample.prompt_id!r}: the rollout reported "
                             f"{None if sample.response_logprobs is None else len(sample.response_logprobs)} "
                             f"log-probs for {len(sample.response_ids)} response tokens; expected one per token")
        start = len(sample.prompt_ids) - 1
        out[b, start : start + len(sample.response_ids)] = torch.tensor(sample.response_logprobs)
    return out


def stale_rows(versions: Sequence[int], iteration: int, max_staleness: int) -> list[int]:
    """Rows whose policy version is more than `max_staleness` updates behind the learner at `iteration`
    (staleness = iteration − version)."""
    return [row for row, version in enumerate(versions) if iteration - version > max_staleness]
