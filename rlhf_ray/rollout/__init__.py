"""Rollout side of PPO: samples and their token batch, generation backends (HF, vLLM), weight sync."""

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
from rlhf_ray.rollout.weights import (
    cpu_state_dict,
    publish_weights,
    resolve_weights,
    state_dict_nbytes,
    state_digest,
)

__all__ = [
    "BACKENDS",
    "GenerationBackend",
    "GenerationParams",
    "HFBackend",
    "Sample",
    "VLLMBackend",
    "cpu_state_dict",
    "make_backend",
    "pack_samples",
    "publish_weights",
    "resolve_weights",
    "response_token_view",
    "state_dict_nbytes",
    "state_digest",
    "stop_token_ids",
]
