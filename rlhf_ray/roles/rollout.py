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

UNVERIFIED = "unverified:"  # starts what an unhashed load returns; no hex digest does


def unverified_marker(policy_version: int) -> str:
    """What `RolloutWorker.load_weights(verify=False)` returns: the policy version the worker now holds, prefixed
    with `UNVERIFIED` so it never equals a digest."""
    return f"{UNVERIFIED}{policy_version}"


def verify_due(syncs_sent: int, every: int) -> bool:
    """Whether the next weight sync to a worker group hashes what the workers loaded: the group's first
    (`syncs_sent` = 0, also after the group was rebuilt) and then every `every`-th, i.e. syncs_sent mod every = 0."""
    if every < 1:
        raise ValueError(f"rollout.verify_weights_every={every}; expected an integer ≥ 1")
    return syncs_sent % every == 0


class RolloutWorker:
    """Generates samples with the current policy weights and takes new weights from the learner.

    `seed` seeds the process's torch RNG at start, so calls with `params.seed=None` are reproducible for the
    worker's lifetime; calls with an explicit `params.seed` depend on nothing else. `weights_version` counts
    the syncs applied since the actor (re)started — 0 means the checkpoint's own weights, e.g. after a restart.
    `policy_version` names the policy the weights are (the learner's update count): `model_path`'s at start, then
    whatever the caller tags a `load_weights` with; every `generate` reports it, so a pipelined caller knows
    which policy produced each sample.
    """

    def __init__(self, model_path: str | os.PathLike[str], backend: str = "hf",
                 backend_kwargs: Mapping[str, Any] | None = None, seed: int = 0, policy_version: int = 0) -> None:
        torch.manual_seed(seed)
        self.seed = seed
        self.backend_name = backend
        self.backend: GenerationBackend = make_backend(backend, model_path, **dict(backend_kwargs or {}))
        self.weights_version = 0
        self.policy_version = policy_version

    def ready(self) -> dict[str, Any]:
        return {"backend": self.backend_name, "seed": self.seed, "weights_version": self.weights_version,
                "pid": os.getpid()}

    def generate(self, prompts: list[str], prompt_ids: list[str], num_samples: int,
                 params: GenerationParams | Mapping[str, Any]) -> dict[str, Any]:
        """Samples plus what the job's `timing/generate` and throughput metrics need.

        Returns: {"samples": list[Sample], "seconds": wall time, "tokens": response tokens generated,
        "weights_version": syncs applied since the actor started, "policy_version": the policy that produced them}.
        """
        if not isinstance(params, GenerationParams):
            params = GenerationParams(**params)
        start = time.perf_counter()
        samples = self.backend.generate(list(prompts), list(prompt_ids), num_samples, params)
        seconds = time.perf_counter() - start
        return {"samples": samples, "seconds": seconds, "tokens": sum(len(s.response_ids) for s in samples),
                "weights_version": self.weights_version, "policy_version": self.policy_version,
                "params": asdict(params)}

    def load_weights(self, state: Mapping[str, Tensor], version: int | None = None, verify: bool = True) -> str:
        """Apply the learner's weights (a state dict, e.g. from `PolicyLearner.publish`), the policy `version`
        if given.

        Returns the digest of the weights the backend now holds, which the caller compares with the learner's or
        the other workers' to prove the sync; with `verify=False` only `unverified_marker(policy_version)`: the
        sha256 reads every weight and costs more than the copy, so a caller takes it on a sample of syncs. A
        worker's first load since it (re)started is hashed regardless: only the digest proves a fresh engine took
        the weights.
        """
        self.backend.load_state_dict(check_state_dict(state))
        self.weights_version += 1
        if version is not None:
            self.policy_version = int(version)
        if verify or self.weights_version == 1:
            return self.backend.state_digest()
        return unverified_marker(self.policy_version)

    def weights_digest(self) -> str:
        return self.backend.state_digest()
