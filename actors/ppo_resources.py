"""The PPO job's resource demand: its actor groups as bundles, checked against a cluster before any actor starts.

One bundle group per placement the controller makes: rollout workers, learner ranks, critic ranks (GAE only),
the reward scorer and the reference model (and the judge, when there is one). With `rollout.colocate_with_learner`
rollout worker i shares learner rank i's bundle (one engine per learner GPU), so the two roles count once:

    learner+rollout 8 × {GPU: 0.6 + 0.4} = 8 GPU      instead of      rollout 8 × 1 + learner 8 × 1 = 16 GPU

The config's `cluster` section (the cluster it is written for) is checked when the config loads; the live
cluster is checked by the controller (`actors.ppo_controller`) once Ray is up (`live_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rlhf_ray.algos.advantages import needs_critic
from rlhf_ray.config.resources import CPU, GPU, BundleGroup, fit_problems, summary


class PPOSizing(Protocol):
    """What the arithmetic reads of a PPO config (`actors.ppo_config.PPOEngineConfig`): each section has
    `num_workers` (rollout, learner, critic), `num_cpus`, `num_gpus` and custom `resources`."""

    rollout: Any
    learner: Any
    critic: Any
    reward: Any
    advantage: Any
    cluster: Any
    reference_num_cpus: float
    reference_num_gpus: float
    judge_model_path: str | None
    judge_num_cpus: float


def _bundle(cpus: float, gpus: float, custom: Mapping[str, float] | None = None) -> dict[str, float]:
    return {key: value for key, value in {CPU: cpus, GPU: gpus, **(custom or {})}.items() if value > 0}


def _add(*bundles: Mapping[str, float]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def section_bundle(section: Any) -> dict[str, float]:
    """One actor's resources from a rollout/learner/critic section."""
    return _bundle(section.num_cpus, section.num_gpus, section.resources)


def colocation_reserve(config: PPOSizing) -> dict[str, float]:
    """What each learner bundle holds for the rollout worker placed in it (empty unless colocated)."""
    return section_bundle(config.rollout) if config.rollout.colocate_with_learner else {}


def _declared_groups(config: PPOSizing) -> list[BundleGroup]:
    """Every group the controller starts, including any configured with no resources at all."""
    rollout, learner = config.rollout, config.learner
    groups: list[BundleGroup] = []
    if rollout.colocate_with_learner:
        groups.append(BundleGroup("learner+rollout", learner.num_workers,
                                  _add(section_bundle(learner), section_bundle(rollout)), ("learner", "rollout")))
    else:
        groups.append(BundleGroup("rollout", rollout.num_workers, section_bundle(rollout), ("rollout",)))
        groups.append(BundleGroup("learner", learner.num_workers, section_bundle(learner), ("learner",)))
    if needs_critic(config.advantage.estimator):
        groups.append(BundleGroup("critic", config.critic.num_workers, section_bundle(config.critic), ("critic",)))
    groups.append(BundleGroup("reward", 1, _bundle(config.reward.num_cpus, config.reward.num_gpus), ("reward",)))
    groups.append(BundleGroup("reference", 1, _bundle(config.reference_num_cpus, config.reference_num_gpus),
                              ("reference",)))
    if config.judge_model_path:
        groups.append(BundleGroup("judge", 1, _bundle(config.judge_num_cpus, 0.0), ("judge",)))
    return groups


def ppo_groups(config: PPOSizing) -> list[BundleGroup]:
    """The groups that ask the cluster for something (a group with no resources needs no room)."""
    return [group for group in _declared_groups(config) if group.bundle]


def groups_without_resources(config: PPOSizing) -> list[str]:
    """Groups configured with neither CPUs, GPUs nor custom resources: they cannot hold a placement bundle."""
    return [group.name for group in _declared_groups(config) if not group.bundle]


def actor_bundle_layout(config: PPOSizing) -> tuple[list[dict[str, float]], dict[str, int]]:
    """The actors' bundles as one flat list, and the index of each group's first bundle, for a placement group
    reserved up front (a Ray Tune trial's)."""
    bundles: list[dict[str, float]] = []
    first: dict[str, int] = {}
    for group in ppo_groups(config):
        first[group.name] = len(bundles)
        bundles += [dict(group.bundle) for _ in range(group.count)]
    return bundles, first


def config_problems(config: PPOSizing) -> list[str]:
    """Resource problems visible in the config alone: colocation shape, and the declared cluster's fit."""
    problems: list[str] = []
    rollout, learner = config.rollout, config.learner
    if rollout.colocate_with_learner and rollout.num_workers != learner.num_workers:
        problems.append(f"rollout.colocate_with_learner puts one rollout worker in each learner rank's bundle: "
                        f"rollout.num_workers={rollout.num_workers} must equal learner.num_workers="
                        f"{learner.num_workers}")
    if problems or config.cluster is None:
        return problems
    found = fit_problems(ppo_groups(config), config.cluster.node_list())
    return [f"the actors do not fit cluster.nodes: {'; '.join(found)}"] if found else []


def live_problems(config: PPOSizing, nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """The demand against the nodes Ray reports now (`ray.nodes()` resources of the alive nodes)."""
    return fit_problems(ppo_groups(config), nodes)


def demand_summary(config: PPOSizing) -> dict[str, object]:
    return summary(ppo_groups(config))
