"""Policy weight sync from the learner to the rollout workers through the Ray object store.

The pattern is one put, many gets:

    ref = publish_weights(learner_model)                 # one ray.put of a CPU state dict
    digests = ray.get(group.call("load_weights", ref))   # each worker gets the same object once

An `ObjectRef` passed as a top-level task argument is resolved by Ray before the method runs, so each
worker receives the whole state dict in one transfer (shared memory on the same node, one object push per
remote node): no per-parameter round trips. `state_digest` hashes a state dict so both sides can prove the
weights match.

On GPU clusters the alternative is an NCCL broadcast from the learner rank straight into the inference
engines' device memory (vLLM's `StatelessProcessGroup` + `PyNcclCommunicator` pattern); that path is not
implemented here — the object store path works everywhere, CPU included, and is what the rollout workers use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import ray
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


def publish_weights(model_or_state: torch.nn.Module | Mapping[str, Tensor]) -> ray.ObjectRef:
    """Put the policy's weights in the object store once; hand the ref to every worker's `load_weights`."""
    return ray.put(cpu_state_dict(model_or_state))


def resolve_weights(state_or_ref: Mapping[str, Tensor] | ray.ObjectRef) -> Mapping[str, Tensor]:
    """The state dict itself, fetching it when given an ObjectRef (a ref nested in a container arrives unresolved)."""
    if isinstance(state_or_ref, ray.ObjectRef):
        state_or_ref = ray.get(state_or_ref)
    if not isinstance(state_or_ref, Mapping):
        raise TypeError(f"weights must be a state dict (name → tensor) or an ObjectRef to one; "
                        f"got {type(state_or_ref).__name__}")
    return state_or_ref


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
