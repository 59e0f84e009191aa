"""Policy weights as a transferable value: a CPU state dict, its size and its digest.

The learner hands the rollout workers one CPU copy of its weights (`cpu_state_dict`); `state_digest` hashes a
state dict so both sides can prove the weights match. How the copy travels is the runtime's business, chosen
by `rollout.weight_sync`:

- `object_store` (default, CPU included): one object-store put that every worker gets (`actors.transport`);
  in one process, the dict itself.
- `nccl` (vLLM on GPUs): a broadcast from learner rank 0 straight into the engines' device memory, in
  byte-bounded buckets, over a stateless group (`rlhf_ray.rollout.nccl_sync`).

Either way a vLLM engine takes the weights under HF names through its `load_weights`, which fuses them into
its own layout (qkv_proj, gate_up_proj); `engine_weights` turns what the learner publishes into exactly those
names, leaving out what the engine would skip anyway (a tied lm_head).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


def cpu_state_dict(model_or_state: torch.nn.Module | Mapping[str, Tensor]) -> StateDict:
    """Detached, contiguous CPU copies of a model's (or a mapping's) tensors, in name order.

    A DDP/DeepSpeed-style wrapper exposing the real model as `.module` is unwrapped first.
    """
    if isinstance(model_or_state, torch.nn.Module):
        module = getattr(model_or_state, "module", model_or_state)
        state: Mapping[str, Tensor] = module.state_dict()
    else:
        state = model_or_state
    return {name: state[name].detach().to("cpu").contiguous() for name in sorted(state)}


def check_state_dict(state: Any) -> Mapping[str, Tensor]:
    """`state` itself when it is a state dict (name → tensor): a worker fails here, naming the type it got,
    rather than deep inside a backend's `load_state_dict`."""
    if not isinstance(state, Mapping):
        raise TypeError(f"weights must be a state dict (name → tensor) or an ObjectRef to one; "
                        f"got {type(state).__name__}")
    return state


def state_dict_nbytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of tensor data in a state dict (a tensor listed under two names, e.g. tied weights, counts twice)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in sorted name order.

    Two state dicts have the same digest exactly when they hold the same names with bit-identical values of
    the same dtype and shape, so a worker's digest equal to the learner's proves the sync.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# Prefixes a wrapped model's state dict carries in front of the HF names: DDP/DeepSpeed's `.module` and peft's
# PeftModel; `cpu_state_dict` and `merged_state_dict` already strip them, a hand-built dict may not.
WRAPPER_PREFIXES = ("module.", "base_model.model.")
TIED_HEAD = "lm_head.weight"


def engine_weights(state: Mapping[str, Tensor], tie_word_embeddings: bool) -> StateDict:
    """The learner's published weights as an inference engine's `load_weights` takes them: HF names.

    Wrapper prefixes (`WRAPPER_PREFIXES`) are stripped; with tied embeddings `lm_head.weight` is dropped (it is
    `model.embed_tokens.weight` again: the engine skips it, so sending it would only double the embedding's
    bytes). Unmerged LoRA tensors (`lora_A`/`lora_B`, `.base_layer.`) fail naming one: the learner must
    publish merged weights (`merged_state_dict`), since the engine has no adapters to load them into.
    """
    out: StateDict = {}
    for name, tensor in state.items():
        plain = name
        for prefix in WRAPPER_PREFIXES:
            plain = plain.removeprefix(prefix)
        parts = plain.split(".")
        if "base_layer" in parts or any(part.startswith("lora_") for part in parts):
            raise ValueError(f"weight {name!r} is an unmerged LoRA tensor: publish merged weights "
                             "(rlhf_ray.models.lora.merged_state_dict), the engine has no adapters")
        if tie_word_embeddings and plain == TIED_HEAD:
            continue
        if plain in out:
            raise ValueError(f"weights {name!r} and another both map to {plain!r}")
        out[plain] = tensor
    return out


def tied_embeddings(model_or_config: Any) -> bool:
    """Whether the model's output head is its input embedding (`tie_word_embeddings` of its text config); a
    wrapper (DDP/DeepSpeed `.module`, peft) is looked through."""
    config = getattr(getattr(model_or_config, "module", model_or_config), "config", model_or_config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text, "tie_word_embeddings", False))
