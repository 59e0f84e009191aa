"""Policy weights as a transferable value: a CPU state dict, its size and its digest.

The learner hands the rollout workers one CPU copy of its weights (`cpu_state_dict`); `state_digest` hashes a
state dict so both sides can prove the weights match. How the copy travels is the runtime's business: on Ray,
one object-store put that every worker gets (`actors.transport`); in one process, the dict itself.

On GPU clusters the alternative is an NCCL broadcast from the learner rank straight into the inference
engines' device memory (vLLM's `StatelessProcessGroup` + `PyNcclCommunicator` pattern); that path is not
implemented here — the object store path works everywhere, CPU included, and is what the rollout workers use.
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
