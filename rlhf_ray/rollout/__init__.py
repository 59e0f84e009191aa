"""Rollout side of PPO: samples and their token batch, generation backends (HF, vLLM), the policy weights as a
CPU state dict with a digest.

The Ray transport of the weights (object-store put and get) is `actors.transport`.
"""

from rlhf_ray.rollout.backends import (
    BACKENDS,
    GenerationBackend,
    GenerationParams,
    HFBackend,
    VLLMBackend,
    make_backend,
    stop_token_ids,
)
from rlhf_ray.rollout.batch import Sample, pack_samples, response_token_view
from rlhf_ray.rollout.weights import check_state_dict, cpu_state_dict, state_dict_nbytes, state_digest

__all__ = [
    "BACKENDS",
    "GenerationBackend",
    "GenerationParams",
    "HFBackend",
    "Sample",
    "VLLMBackend",
    "check_state_dict",
    "cpu_state_dict",
    "make_backend",
    "pack_samples",
    "response_token_view",
    "state_dict_nbytes",
    "state_digest",
    "stop_token_ids",
]
