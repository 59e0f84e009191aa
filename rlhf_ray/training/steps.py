"""The per-batch losses and held-out evaluations of SFT, reward-model and DPO training.

Plain functions of a model, its tokenizer and a batch of rows (columns as lists or numpy arrays), so the same
step runs inside a Ray Train worker (`actors.train_loops`, which adds the data shard, the epoch loop, metrics
and checkpoints) or in one process without Ray. The maths is in `rlhf_ray.algos`; here it is applied to
encoded chat rows.

A model passed in may be wrapped for data parallelism (DDP: the real model is `.module`); the loss functions
call the wrapper, so gradients are all-reduced, while the evaluations call the real model. Encoded batches go to
the device of the model's parameters (`model_device`), so a model on a GPU gets GPU inputs; figures come back as
Python floats or CPU tensors. Mixed precision is the caller's: it wraps a loss in `placement.autocast`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlhf_ray.algos.logprobs import sequence_logprob
from rlhf_ray.algos.preference import bradley_terry_loss, dpo_loss, preference_accuracy
from rlhf_ray.algos.sft import sft_loss
from rlhf_ray.evaluation.reward_model import reward_model_report
from rlhf_ray.models.placement import model_device, to_device
from rlhf_ray.training.encoding import batch_conversations, conversation_of, encode_chat, encode_conversations

BatchLoss = tuple[Tensor, dict[str, float]]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP-style wrapper (`.module`), else the model itself: what saves and evaluates."""
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------------------ SFT


def sft_batch_loss(model: torch.nn.Module, tokenizer: Any, batch: Mapping[str, Any], max_length: int) -> BatchLoss:
    """Mean response-token NLL (`sft_loss`) of a batch of (prompt, response) or `messages` rows (loss on every
    assistant turn); no extra figures."""
    encoded = to_device(encode_conversations(tokenizer, batch_conversations(batch), max_length), model_device(model))
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    return sft_loss(logits, encoded["input_ids"], encoded["response_mask"]), {}


def heldout_sft_loss(model: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]], batch_size: int,
                     max_length: int) -> float:
    """Token-weighted mean response NLL over the held-out examples (the same on every worker)."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            chunk = examples[first : first + batch_size]
            batch = to_device(encode_conversations(tokenizer, [conversation_of(e) for e in chunk], max_length),
                              model_device(model))
            logits = unwrap_model(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            count = int(batch["response_mask"][:, 1:].sum())
            total += float(sft_loss(logits, batch["input_ids"], batch["response_mask"])) * count
            tokens += count
    model.train()
    return total / max(1, tokens)


# ------------------------------------------------------------------------------------------ reward model


def pair_rewards(model: torch.nn.Module, tokenizer: Any, prompts: list[str], chosen: list[str], rejected: list[str],
                 max_length: int, per_objective: bool = False) -> tuple[Tensor, Tensor]:
    """Rewards of chosen and rejected answers ([B], or [B, K] per objective) from one pass over 2B sequences."""
    encoded = to_device(encode_chat(tokenizer, prompts + prompts, chosen + rejected, max_length), model_device(model))
    # a reward head under autocast answers in bf16/fp16; the losses and reports take float32
    rewards = model(encoded["input_ids"], encoded["attention_mask"], per_objective=per_objective).float()
    return rewards[: len(prompts)], rewards[len(prompts) :]


def reward_model_batch_loss(model: torch.nn.Module, tokenizer: Any, batch: Mapping[str, Any],
                            heads: Mapping[str, int], max_length: int, use_pair_weights: bool) -> BatchLoss:
    """Bradley–Terry loss of a batch of (prompt, chosen, rejected, objective, weight) rows, each pair training
    the head of its own objective (`heads`: objective name → head index):

        r_c = r_chosen[b, k_b],   r_r = r_rejected[b, k_b],   L = bradley_terry_loss(r_c, r_r, w if weighted)

    Extra figure: `train_accuracy`, the fraction of pairs ranked correctly.
    """
    per_chosen, per_rejected = pair_rewards(model, tokenizer, list(batch["prompt"]), list(batch["chosen"]),
                                            list(batch["rejected"]), max_length, per_objective=True)
    rows = torch.arange(len(batch["prompt"]), device=per_chosen.device)
    head_index = torch.as_tensor([heads[name] for name in batch["objective"]], device=per_chosen.device)
    rc, rr = per_chosen[rows, head_index], per_rejected[rows, head_index]
    weights = torch.as_tensor(batch["weight"], dtype=rc.dtype, device=rc.device) if use_pair_weights else None
    return bradley_terry_loss(rc, rr, weights=weights), {"train_accuracy": float(preference_accuracy(rc, rr))}


def evaluate_reward_model(model: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]], batch_size: int,
                          max_length: int) -> dict[str, Any]:
    """The held-out report (accuracy vs truth, calibration, verbosity diagnostics) of the current weights."""
    reward_model = unwrap_model(model)
    reward_model.eval()
    chosen, rejected = [], []
    with torch.no_grad():
        for first in range(0, len(pairs), batch_size):
            chunk = pairs[first : first + batch_size]
            rc, rr = pair_rewards(reward_model, tokenizer, [p["prompt"] for p in chunk],
                                  [p["chosen"] for p in chunk], [p["rejected"] for p in chunk], max_length,
                                  per_objective=True)
            chosen.append(rc.cpu())
            rejected.append(rr.cpu())
    reward_model.train()
    per_chosen, per_rejected = torch.cat(chosen), torch.cat(rejected)
    words = np.array([[len(p["chosen"].split()), len(p["rejected"].split())] for p in pairs], dtype=float)
    utilities = np.array([[p["chosen_utility"], p["rejected_utility"]] for p in pairs])
    report = reward_model_report(reward_model.combine(per_chosen).numpy(), reward_model.combine(per_rejected).numpy(),
                                 words[:, 0], words[:, 1], utilities[:, 0], utilities[:, 1])
    if len(reward_model.objectives) > 1:
        for k, objective in enumerate(reward_model.objectives):
            report[f"accuracy/{objective}"] = float(preference_accuracy(per_chosen[:, k], per_rejected[:, k]))
    return report


# ------------------------------------------------------------------------------------------ DPO


def pair_logprobs(model: torch.nn.Module, tokenizer: Any, prompts: list[str], chosen: list[str], rejected: list[str],
                  max_length: int) -> tuple[Tensor, Tensor]:
    """Σ log π(response | prompt) of chosen and rejected answers, from one forward pass over 2B sequences."""
    encoded = to_device(encode_chat(tokenizer, prompts + prompts, chosen + rejected, max_length), model_device(model))
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    logps = sequence_logprob(logits, encoded["input_ids"], encoded["response_mask"])
    return logps[: len(prompts)], logps[len(prompts) :]


def dpo_batch_loss(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any, batch: Mapping[str, Any], *,
                   beta: float, loss_type: str, label_smoothing: float, use_pair_weights: bool,
                   max_length: int) -> BatchLoss:
    """`dpo_loss` (DPO/IPO/hinge, see `rlhf_ray.algos.preference`) of a batch of (prompt, chosen, rejected,
    weight) rows against the frozen `reference`, whose log-probs build no graph.

    Extra figure: `train_reward_accuracy`, the fraction of pairs whose implicit-reward margin is positive.
    """
    args = (list(batch["prompt"]), list(batch["chosen"]), list(batch["rejected"]))
    policy_chosen, policy_rejected = pair_logprobs(policy, tokenizer, *args, max_length)
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logprobs(reference, tokenizer, *args, max_length)
    weights = torch.as_tensor(batch["weight"], dtype=policy_chosen.dtype, device=policy_chosen.device)
    output = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing,
                      weights=weights if use_pair_weights else None)
    return output.loss, {"train_reward_accuracy": float((output.margins > 0).float().mean())}


def evaluate_dpo(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]],
                 beta: float, batch_size: int, max_length: int) -> dict[str, float]:
    """Implicit-reward accuracy on held-out truth pairs: does β·(log π − log π_ref) rank them correctly?"""
    policy.eval()
    margins = []
    with torch.no_grad():
        for first in range(0, len(pairs), batch_size):
            chunk = pairs[first : first + batch_size]
            args = ([p["prompt"] for p in chunk], [p["chosen"] for p in chunk], [p["rejected"] for p in chunk])
            pc, pr = pair_logprobs(unwrap_model(policy), tokenizer, *args, max_length)
            rc, rr = pair_logprobs(reference, tokenizer, *args, max_length)
            margins.append(beta * ((pc - rc) - (pr - rr)))
    policy.train()
    margin = torch.cat(margins)
    return {"reward_accuracy": float((margin > 0).float().mean()), "reward_margin": float(margin.mean())}
