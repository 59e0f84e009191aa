"""PPO's trained roles as Ray actors: the policy learner and the critic, each a group of N ranks placed by
`ActorGroup`. The training logic is the plain `rlhf_ray.roles.learner`; this layer adds only what needs Ray:
the node's IP for the group's rendezvous, and publishing the policy weights to the object store once."""

from __future__ import annotations

import ray

from actors.transport import publish_weights
from rlhf_ray.roles import learner
from rlhf_ray.roles.learner import free_port
from rlhf_ray.rollout.nccl_sync import SyncPlan, open_communicator, plan_for, send_buckets
from rlhf_ray.rollout.weights import StateDict, engine_weights, tied_embeddings


class _OnRayNode:
    """The rendezvous address of a rank that Ray placed on some node of the cluster."""

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the group's rendezvous: this node's IP and a free port."""
        return ray.util.get_node_ip_address(), free_port()


class PolicyLearner(_OnRayNode, learner.PolicyLearner):
    """`rlhf_ray.roles.learner.PolicyLearner` on a Ray node, publishing through the object store."""

    def publish(self) -> ray.ObjectRef | None:
        """The policy weights in the object store (one put; every rollout worker gets the same object): what the
        role publishes, so LoRA adapters arrive merged into plain weights. None from the ranks that only took part
        in a ZeRO-3 gather."""
        state = super().publish()
        return publish_weights(state) if state is not None else None

    # ---- rollout.weight_sync: nccl (driven by `actors.transport.BroadcastSync`) ----

    weight_sender: object | None = None
    weights_to_send: StateDict | None = None

    def open_weight_sender(self, host: str, port: int, world_size: int, backend: str = "nccl") -> None:
        """Join the broadcast group as its rank 0, on the device of the policy."""
        device = next(self.model.parameters()).device
        self.weight_sender = open_communicator(backend, host, port, 0, world_size, device)

    def prepare_broadcast(self, bucket_bytes: int, keep: bool = True) -> SyncPlan | None:
        """The role's weights (gathered under ZeRO-3, LoRA merged) under the engine's names; on the sending rank
        (`keep`) held for `send_prepared`, and the plan the workers need before the broadcast starts. Under ZeRO-3
        every rank takes part in the gather and only rank 0 keeps the result."""
        state = engine_weights(learner.PolicyLearner.publish(self), tied_embeddings(self.model))
        if not keep:
            return None
        self.weights_to_send = state
        return plan_for(state, bucket_bytes)

    def send_prepared(self, plan: SyncPlan) -> int:
        """Broadcast the prepared weights bucket by bucket (the workers receive meanwhile); returns the bytes."""
        state, self.weights_to_send = self.weights_to_send, None
        return send_buckets(self.weight_sender, plan, state)


class Critic(_OnRayNode, learner.Critic):
    """`rlhf_ray.roles.learner.Critic` on a Ray node."""
