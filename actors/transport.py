"""Policy weight sync from the learner to the rollout workers through the Ray object store.

The pattern is one put, many gets:

    ref = publish_weights(learner_model)                 # one ray.put of a CPU state dict
    digests = ray.get(group.call("load_weights", ref))   # each worker gets the same object once

An `ObjectRef` passed as a top-level task argument is resolved by Ray before the method runs, so each
worker receives the whole state dict in one transfer (shared memory on the same node, one object push per
remote node): no per-parameter round trips. `rlhf_ray.rollout.weights.state_digest` hashes a state dict so
both sides can prove the weights match.
"""

from __future__ import annotations

from collections.abc import Mapping

import ray
import torch
from torch import Tensor

from rlhf_ray.rollout.weights import check_state_dict, cpu_state_dict


def publish_weights(model_or_state: torch.nn.Module | Mapping[str, Tensor]) -> ray.ObjectRef:
    """Put the policy's weights in the object store once; hand the ref to every worker's `load_weights`."""
    return ray.put(cpu_state_dict(model_or_state))


def resolve_weights(state_or_ref: Mapping[str, Tensor] | ray.ObjectRef) -> Mapping[str, Tensor]:
    """The state dict itself, fetching it when given an ObjectRef (a ref nested in a container arrives unresolved)."""
    if isinstance(state_or_ref, ray.ObjectRef):
        state_or_ref = ray.get(state_or_ref)
    return check_state_dict(state_or_ref)
