"""PPO's trained roles as Ray actors: the policy learner and the critic, each a group of N ranks placed by
`ActorGroup`. The training logic is the plain `rlhf_ray.roles.learner`; this layer adds only what needs Ray:
the node's IP for the group's rendezvous, and publishing the policy weights to the object store once."""

from __future__ import annotations

import ray

from actors.transport import publish_weights
from rlhf_ray.roles import learner
from rlhf_ray.roles.learner import free_port


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


class Critic(_OnRayNode, learner.Critic):
    """`rlhf_ray.roles.learner.Critic` on a Ray node."""
