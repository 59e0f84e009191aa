"""The rollout worker: one generation backend, fed prompts and policy weights by the PPO job.

A plain class that generates in the calling process, Ray or not; `actors.rollout.RolloutWorker` adds taking
the weights as an object-store ref, and `ActorGroup(RolloutWorker, ...)` makes that an actor with `ray.remote`
and a placement group.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from rlhf_ray.rollout.backends import GenerationBackend, GenerationParams, make_backend
from rlhf_ray.rollout.weights import check_state_dict


class RolloutWorker:
    """Generates samples with the current policy weights and takes new weights from the learner.

    `seed` seeds the process's torch RNG at start, so calls with `params.seed=None` are reproducible for the
    worker's lifetime; calls with an explicit `params.seed` depend on nothing else. `weights_version` counts
    the syncs applied since the actor (re)started — 0 means the checkpoint's own weights, e.g. after a restart.
    """

    def __init__(self, model_path: str | os.PathLike[str], backend: str = "hf",
                 backend_kwargs: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.seed = seed
        self.backend_name = backend
        self.backend: GenerationBackend = make_backend(backend, model_path, **dict(backend_kwargs or {}))
        self.weights_version = 0

    def ready(self) -> dict[str, Any]:
        return {"backend": self.backend_name, "seed": self.seed, "weights_version": self.weights_version,
                "pid": os.getpid()}

    def generate(self, prompts: list[str], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams | Mapping[str, Any]) -> dict[str, Any]:
        """Samples plus what the job's `timing/generate` and throughput metrics need.

        Returns: {"samples": list[Sample], "seconds": wall time, "tokens": response tokens generated,
        "weights_version": the policy version that produced them}.
        """
        if not isinstance(params, GenerationParams):
            params = GenerationParams(**params)
        start = time.perf_counter()
        samples = self.backend.generate(list(prompts), list(prompt_ids), num_samples, params)
        seconds = time.perf_counter() - start
        return {"samples": samples, "seconds": seconds, "tokens": sum(len(s.response_ids) for s in samples),
                "weights_version": self.weights_version, "params": asdict(params)}

    def load_weights(self, state: Mapping[str, Tensor]) -> str:
        """Apply the learner's weights (a state dict, e.g. from `PolicyLearner.publish`); returns the digest,
        which the caller compares with the learner's to prove the sync."""
        self.backend.load_state_dict(check_state_dict(state))
        self.weights_version += 1
        return self.backend.state_digest()

    def weights_digest(self) -> str:
        return self.backend.state_digest()
