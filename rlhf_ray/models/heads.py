"""A causal LM split into its body (→ final hidden states) and its output head, for chunked log-probs.

`causal_lm_token_logprobs_entropy` runs the model as usual (through any DDP, DeepSpeed or peft wrapper, so their
hooks, gradient all-reduce and adapters all apply) but asks it for the logits of the last position only
(`logits_to_keep=1`). A forward hook on the decoder takes its `last_hidden_state` (after the final norm), and
`rlhf_ray.algos.chunked.chunked_token_logprobs` turns that and the head's weight into token log-probs and
entropies, `token_budget` tokens at a time, so the [B, T, V] logits are never formed.

The chunked path reproduces `logits = lm_head(last_hidden_state)` and nothing else. It is taken only where that
is the model's whole computation. Otherwise the helper falls back to the model's full logits, with a warning
naming the reason:

- the architecture is not one whose forward was checked to be exactly that (`CHUNKABLE_MODEL_TYPES`; e.g.
  Gemma 2's `final_logit_softcapping`, Cohere's `logit_scale` and Granite's `logits_scaling` post-process the
  logits);
- the head is not a plain `torch.nn.Linear`: LoRA on the head (`target_modules` naming `lm_head`; peft's
  "all-linear" leaves the output layer out) or `modules_to_save` replace it by a peft wrapper whose effective
  weight is not `head.weight`;
- the head's weight is partitioned by DeepSpeed ZeRO-3 (outside the head's own forward it is an empty
  placeholder).
"""

from __future__ import annotations

import inspect
import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from rlhf_ray.algos.chunked import chunked_token_logprobs
from rlhf_ray.algos.logprobs import token_logprobs
from rlhf_ray.algos.policy_loss import token_entropy

# Tokens whose logits may exist at once, where a config does not say: 2048 × 128k vocabulary × 4 bytes ≈ 1 GB per
# float32 buffer on a large model; a tiny CI model's whole minibatch fits in one chunk.
DEFAULT_TOKEN_BUDGET = 2048

# Causal LMs whose forward (transformers 5.x) is `logits = lm_head(decoder(...).last_hidden_state)` exactly.
CHUNKABLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt_neox"})


class ChunkingUnsupportedError(ValueError):
    """The model's logits are not `head(last_hidden_state)` as the chunked path computes them."""


class OutputHead(NamedTuple):
    """The two halves of a causal LM: `decoder` returns `last_hidden_state` [B, T, H]; `head` maps it to logits."""

    decoder: torch.nn.Module
    head: torch.nn.Linear


def unwrap_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The HF causal LM inside DDP / DeepSpeed (`.module`) and peft (`get_base_model()`) wrappers."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
        else:
            return model


def split_output_head(model: torch.nn.Module) -> OutputHead:
    """`OutputHead` of a (possibly wrapped) causal LM; `ChunkingUnsupportedError` saying why where the chunked
    path would not reproduce the model's logits (see the module docstring)."""
    causal_lm = unwrap_causal_lm(model)
    model_type = getattr(getattr(causal_lm, "config", None), "model_type", None)
    if model_type not in CHUNKABLE_MODEL_TYPES:
        raise ChunkingUnsupportedError(f"model_type {model_type!r} is not one whose logits are exactly "
                                       f"lm_head(last_hidden_state); chunked for {sorted(CHUNKABLE_MODEL_TYPES)}")
    if "logits_to_keep" not in inspect.signature(causal_lm.forward).parameters:
        raise ChunkingUnsupportedError(f"{type(causal_lm).__name__}.forward takes no logits_to_keep")
    head = causal_lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise ChunkingUnsupportedError(f"the output head is a {type(head).__name__} (LoRA or modules_to_save on "
                                       "the head), not a plain Linear whose weight is the effective one")
    if hasattr(head.weight, "ds_id"):
        raise ChunkingUnsupportedError("the output head's weight is partitioned by DeepSpeed ZeRO-3")
    return OutputHead(causal_lm.get_decoder(), head)


def causal_lm_token_logprobs_entropy(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                                     position_ids: Tensor, token_budget: int | None,
                                     with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """A causal LM's own next-token log-probs (and entropies) on its input, `token_budget` tokens' logits at a
    time:

        logp[b, t] = log p(input_ids[b, t+1] | input_ids[b, ≤t]),    H[b, t] = entropy of p(· | input_ids[b, ≤t])

    both [B, T−1] float32, aligned as `token_logprobs` (mask with `attention_mask[:, 1:]` or a response mask's
    `[:, 1:]`). `token_budget=None`, or a model the chunked path does not reproduce (module docstring), computes
    the full logits once instead (`token_logprobs`, `token_entropy`): the same values within rounding. Gradients
    flow to the model either way.
    """
    if token_budget is not None:
        try:
            split = split_output_head(model)
        except ChunkingUnsupportedError as reason:
            warnings.warn(f"log-probs from full logits (token_budget={token_budget} not applied): {reason}",
                          stacklevel=2)
        else:
            captured: list[Tensor] = []

            def keep_hidden(module: torch.nn.Module, args: object, output: object) -> None:
                captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

            handle = split.decoder.register_forward_hook(keep_hidden)
            try:  # through the wrapper, so DDP / DeepSpeed / peft behave as in a plain forward
                model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      logits_to_keep=1)
            finally:
                handle.remove()
            if len(captured) != 1:
                raise RuntimeError(f"the decoder ran {len(captured)} times in one forward pass; expected once")
            return chunked_token_logprobs(captured[0], split.head.weight, input_ids, token_budget,
                                          bias=split.head.bias, with_entropy=with_entropy)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return token_logprobs(logits, input_ids), token_entropy(logits[:, :-1]) if with_entropy else None
