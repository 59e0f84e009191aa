"""The rollout worker as a Ray actor: `ActorGroup(RolloutWorker, ...)` makes it one with `ray.remote` and a
placement group. The generation logic is the plain `rlhf_ray.roles.rollout.RolloutWorker`; this layer adds
taking the weights as an object-store ref from `actors.transport.publish_weights`, and, for
`rollout.weight_sync: nccl`, joining learner rank 0's broadcast group (`actors.transport.BroadcastSync`)."""

from __future__ import annotations

from collections.abc import Mapping

import ray
from torch import Tensor

from actors.transport import resolve_weights
from rlhf_ray.roles import rollout
from rlhf_ray.rollout.nccl_sync import WEIGHT_SYNC_FIELD, SyncPlan


class RolloutWorker(rollout.RolloutWorker):
    """`rlhf_ray.roles.rollout.RolloutWorker`, taking a ref to the learner's weights as well as the dict."""

    def load_weights(self, state_or_ref: Mapping[str, Tensor] | ray.ObjectRef, version: int | None = None,
                     verify: bool = True) -> str:
        """Apply the learner's weights (a state dict, or a ref to one from `publish_weights`), the policy `version`
        if given; returns the digest, or with `verify=False` the version marker (see the role's `load_weights`).

        A ref passed directly as the call's argument is resolved by Ray before this runs; one nested in a
        container is fetched here.
        """
        return super().load_weights(resolve_weights(state_or_ref), version, verify)

    def _broadcast_backend(self) -> object:
        if not hasattr(self.backend, "receive_weights"):
            raise RuntimeError(f"{WEIGHT_SYNC_FIELD}='nccl' needs a backend that receives broadcasts (vllm); this "
                               f"worker runs {self.backend_name!r}")
        return self.backend

    def engine_world_size(self) -> int:
        """Members this worker's engine brings to the broadcast group (one per tensor/pipeline-parallel rank)."""
        return self._broadcast_backend().engine_world_size()  # type: ignore[attr-defined]

    def init_weight_sync(self, host: str, port: int, rank_offset: int, world_size: int,
                         backend: str = "nccl") -> list[int]:
        """Join learner rank 0's broadcast group (blocks until every member has joined); the ranks taken."""
        if backend != "nccl":
            raise ValueError(f"vLLM engine workers join over nccl; got {backend!r}")
        return self._broadcast_backend().init_weight_sync(host, port, rank_offset, world_size)  # type: ignore[attr-defined]

    def receive_weights(self, plan: SyncPlan) -> str:
        """Take one broadcast sync (the learner sends meanwhile); returns the digest of what the engine holds."""
        self._broadcast_backend().receive_weights(plan)  # type: ignore[attr-defined]
        self.weights_version += 1
        return self.backend.state_digest()
