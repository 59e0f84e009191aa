"""The rollout worker as a Ray actor: `ActorGroup(RolloutWorker, ...)` makes it one with `ray.remote` and a
placement group. The generation logic is the plain `rlhf_ray.roles.rollout.RolloutWorker`; this layer adds
only taking the weights as an object-store ref from `actors.transport.publish_weights`."""

from __future__ import annotations

from collections.abc import Mapping

import ray
from torch import Tensor

from actors.transport import resolve_weights
from rlhf_ray.roles import rollout


class RolloutWorker(rollout.RolloutWorker):
    """`rlhf_ray.roles.rollout.RolloutWorker`, taking a ref to the learner's weights as well as the dict."""

    def load_weights(self, state_or_ref: Mapping[str, Tensor] | ray.ObjectRef) -> str:
        """Apply the learner's weights (a state dict, or a ref to one from `publish_weights`); returns the digest.

        A ref passed directly as the call's argument is resolved by Ray before this runs; one nested in a
        container is fetched here.
        """
        return super().load_weights(resolve_weights(state_or_ref))
