"""PPO's frozen scorers for Ray: the reward scorer and the reference model.

They need nothing from Ray beyond `ray.remote(num_cpus=..., num_gpus=...)(Cls)`, which the job applies, so
the actors are the plain classes of `rlhf_ray.roles.scoring`, named here where the runtime's roles live.
"""

from rlhf_ray.roles.scoring import ReferenceModel, RewardScorer

__all__ = ["ReferenceModel", "RewardScorer"]
