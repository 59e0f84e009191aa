"""A group of identical Ray actors placed by one placement group: one bundle per actor, gang-scheduled.

    group = ActorGroup(RolloutWorker, count=2, num_cpus=0.25, init_args=(model_dir,), max_restarts=1)
    refs = group.call("load_weights", weights_ref)                  # same arguments to every actor
    refs = group.call_sharded("generate", [(p0, i0, 4, params), (p1, i1, 4, params)])   # one shard each
    group.shutdown()

Resources are named settings (`num_cpus`, `num_gpus` per actor), never magic fractions in code; fractional
CPUs pack several light actors onto one core. The placement group is reserved all at once or not at all:
a request that cannot fit fails with `PlacementError` naming the bundles and the cluster's resources
instead of hanging.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementError(RuntimeError):
    """The actor group's bundles cannot be placed on this cluster."""


class ActorGroup:
    """`count` actors of `cls`, actor i pinned to bundle i = {"CPU": num_cpus, "GPU": num_gpus}.

    Args:
        cls: a plain class (made an actor here with `ray.remote`) or an existing `ray.remote` actor class.
        count: number of actors (≥ 1).
        num_cpus, num_gpus: resources per actor; fractions allowed.
        strategy: placement-group strategy, one of `STRATEGIES` (PACK fills nodes, SPREAD spreads them).
        max_restarts: how often Ray restarts a dead actor (its constructor runs again: state resets).
        max_task_retries: how often a call interrupted by an actor failure is retried on the restarted actor.
        name_prefix: actors are named `{prefix}-{i}` in the current namespace when given.
        init_args, init_kwargs: constructor arguments, the same for every actor.
        ready_timeout_s: how long to wait for the placement group before `PlacementError`.
        runtime_env: optional Ray runtime env for the actors (e.g. env vars).
        within: `(placement_group, first_bundle)` to use bundles `first_bundle .. first_bundle+count-1` of a group
            reserved elsewhere (e.g. a Ray Tune trial's) instead of reserving a new one; it is not released here.
        resources: custom Ray resources per actor, e.g. `{"rollout_node": 0.01}`: the group lands only on nodes
            started with that resource (`ray start --resources`), so a config picks the nodes of each role.
        reserve: extra resources held in every bundle for actors of another group placed there later with
            `within` (colocation, e.g. a rollout engine sharing each learner rank's GPU).
    """

    def __init__(self, cls: type, count: int, num_cpus: float = 1.0, num_gpus: float = 0.0, strategy: str = "PACK",
                 max_restarts: int = 0, max_task_retries: int = 0, name_prefix: str | None = None,
                 init_args: Sequence[Any] = (), init_kwargs: Mapping[str, Any] | None = None,
                 ready_timeout_s: float = 60.0, runtime_env: Mapping[str, Any] | None = None,
                 within: tuple[PlacementGroup, int] | None = None, resources: Mapping[str, float] | None = None,
                 reserve: Mapping[str, float] | None = None) -> None:
        if count < 1:
            raise ValueError(f"count must be ≥ 1; got {count}")
        if num_cpus < 0 or num_gpus < 0:
            raise ValueError(f"num_cpus and num_gpus must be ≥ 0; got num_cpus={num_cpus}, num_gpus={num_gpus}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown placement strategy {strategy!r}; expected one of {list(STRATEGIES)}")
        if max_restarts < -1 or max_task_retries < -1:
            raise ValueError(f"max_restarts and max_task_retries must be ≥ -1 (-1 = forever); "
                             f"got {max_restarts} and {max_task_retries}")
        bundle = {key: float(value) for key, value in (("CPU", num_cpus), ("GPU", num_gpus)) if value > 0}
        bundle.update({key: float(value) for key, value in (resources or {}).items() if value > 0})
        if not bundle:
            raise ValueError("an actor needs some resources: num_cpus and num_gpus are both 0")
        self.count, self.bundle, self.strategy = count, bundle, strategy
        self.name_prefix = name_prefix
        if within is not None:
            self.placement_group, first = within
            self._owns_placement_group = False
            _check_bundles_fit(self.placement_group, first, count, bundle)
        else:
            extra = dict(reserve or {})
            held = {key: bundle.get(key, 0.0) + float(extra.get(key, 0.0)) for key in {*bundle, *extra}}
            self.placement_group, first = self._reserve(held, count, strategy, name_prefix, ready_timeout_s), 0
            self._owns_placement_group = True

        remote_cls = cls if hasattr(cls, "remote") else ray.remote(cls)
        self.actors: list[ray.actor.ActorHandle] = []
        for index in range(count):
            options: dict[str, Any] = {
                "num_cpus": num_cpus,
                "num_gpus": num_gpus,
                "max_restarts": max_restarts,
                "max_task_retries": max_task_retries,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self.placement_group, placement_group_bundle_index=first + index),
            }
            if name_prefix:
                options["name"] = f"{name_prefix}-{index}"
            if runtime_env:
                options["runtime_env"] = dict(runtime_env)
            if resources:
                options["resources"] = dict(resources)
            self.actors.append(remote_cls.options(**options).remote(*init_args, **dict(init_kwargs or {})))

    @staticmethod
    def _reserve(bundle: dict[str, float], count: int, strategy: str, name_prefix: str | None,
                 ready_timeout_s: float) -> PlacementGroup:
        _check_feasible(bundle, count, strategy)
        pg_name = f"{name_prefix or 'actor-group'}-{uuid.uuid4().hex[:8]}"
        group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy, name=pg_name)
        try:
            ray.get(group.ready(), timeout=ready_timeout_s)
        except GetTimeoutError:
            remove_placement_group(group)
            raise PlacementError(
                f"could not reserve {count} bundle(s) of {bundle} (strategy {strategy}) within {ready_timeout_s}s; "
                f"available now: {_round(ray.available_resources())}, cluster total: "
                f"{_round(ray.cluster_resources())}. Lower num_cpus/num_gpus or count, or free resources."
            ) from None
        return group

    def __len__(self) -> int:
        return len(self.actors)

    def __enter__(self) -> ActorGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call `method` on every actor with the same arguments (an ObjectRef argument is fetched once per node)."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def call_sharded(self, method: str, shards: Sequence[tuple[Any, ...]]) -> list[ray.ObjectRef]:
        """Call `method` on actor i with positional arguments `shards[i]`; one shard per actor."""
        if len(shards) != len(self.actors):
            raise ValueError(f"call_sharded needs one shard per actor: {len(self.actors)} actors, {len(shards)} shards")
        return [getattr(actor, method).remote(*shard) for actor, shard in zip(self.actors, shards, strict=True)]

    def ready(self, timeout_s: float | None = None) -> list[Any]:
        """Wait until every actor's constructor has finished; returns the actors' `ready()` answers if they have one."""
        method = "ready" if all(hasattr(actor, "ready") for actor in self.actors) else "__ray_ready__"
        return ray.get(self.call(method), timeout=timeout_s)

    def shutdown(self) -> None:
        """Kill the actors (no restart) and release the placement group. Safe to call twice."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.placement_group is not None and self._owns_placement_group:
            remove_placement_group(self.placement_group)
        self.placement_group = None  # type: ignore[assignment]


def _round(resources: Mapping[str, float]) -> dict[str, float]:
    return {key: round(value, 3) for key, value in resources.items() if key in ("CPU", "GPU", "memory")}


def _check_feasible(bundle: Mapping[str, float], count: int, strategy: str) -> None:
    """Fail at once when no amount of waiting can place the group on the current nodes."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if not nodes:
        return
    need = {key: value * count for key, value in bundle.items()}
    fits_one = [all(node.get(key, 0.0) >= value for key, value in bundle.items()) for node in nodes]
    total = {key: sum(node.get(key, 0.0) for node in nodes) for key in bundle}
    problem = None
    if not any(fits_one):
        problem = f"no node has {dict(bundle)} for one bundle"
    elif any(total[key] < value for key, value in need.items()):
        problem = f"the {count} bundles need {need} in all"
    elif strategy == "STRICT_PACK" and not any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        problem = f"STRICT_PACK needs {need} on one node"
    elif strategy == "STRICT_SPREAD" and sum(fits_one) < count:
        problem = f"STRICT_SPREAD needs {count} nodes that each fit {dict(bundle)}; {sum(fits_one)} do"
    if problem:
        largest = [_round(node) for node in nodes]
        raise PlacementError(f"cannot place {count} actor(s) with {dict(bundle)} each (strategy {strategy}): "
                             f"{problem}; nodes have {largest}. Lower num_cpus/num_gpus or count, or add nodes.")


def _check_bundles_fit(group: PlacementGroup, first: int, count: int, bundle: Mapping[str, float]) -> None:
    """Bundles borrowed from another placement group must exist and hold what each actor asks for."""
    specs = group.bundle_specs
    if first < 0 or first + count > len(specs):
        raise PlacementError(f"bundles {first}..{first + count - 1} requested, but the placement group has "
                             f"{len(specs)} bundle(s): {specs}")
    for index in range(first, first + count):
        short = {k: v for k, v in bundle.items() if specs[index].get(k, 0.0) + 1e-9 < v}
        if short:
            raise PlacementError(f"bundle {index} of the placement group is {specs[index]}; an actor needs "
                                 f"{dict(bundle)} (short of {short})")
