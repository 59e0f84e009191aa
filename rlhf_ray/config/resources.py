"""Resource arithmetic: do a job's actor groups fit a cluster? Pure Python, checked before any actor starts.

A job asks for groups of identical bundles (one bundle per actor, or per actor set sharing a bundle when
roles are colocated); a cluster is a list of nodes, each a mapping of Ray resources (`CPU`, `GPU`, custom
labels such as `rollout_node`). The check answers with readable problems, never a silent hang:

    groups = [BundleGroup("rollout", 2, {"GPU": 1.0}), BundleGroup("learner", 4, {"GPU": 1.0})]
    problems = fit_problems(groups, [{"CPU": 96, "GPU": 8}])            # [] — 2 + 4 ≤ 8 GPUs

Ray hands out a GPU share below 1 from a single device and larger requests as whole devices, so GPUs are
packed per device: three bundles of 0.6 GPU do not fit two GPUs even though 1.8 ≤ 2. Placement is checked by
first-fit decreasing over the nodes, the way a scheduler fills them; totals are checked first, so the usual
failure reads as arithmetic ("rollout 2 × 1 + learner 8 × 1 = 10 GPU; the cluster has 8").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from rlhf_ray.config.common import StrictModel

CPU, GPU = "CPU", "GPU"
_EPS = 1e-9
# Ray resources every node reports that no job asks for by name.
_BOOKKEEPING_PREFIXES = ("node:", "accelerator_type:")
_BOOKKEEPING = ("memory", "object_store_memory")


@dataclass(frozen=True)
class BundleGroup:
    """`count` bundles of `bundle` resources, e.g. one per rollout worker; `roles` names what shares each
    bundle (one role unless colocated, e.g. ("learner", "rollout × 2"))."""

    name: str
    count: int
    bundle: Mapping[str, float]
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"{self.name}: count must be ≥ 1; got {self.count}")
        for key, value in self.bundle.items():
            if value < 0:
                raise ValueError(f"{self.name}: resource {key} must be ≥ 0; got {value}")

    @property
    def demand(self) -> dict[str, float]:
        return {key: value * self.count for key, value in self.bundle.items() if value > 0}


def quantity_problems(name: str, bundle: Mapping[str, float]) -> list[str]:
    """What Ray would refuse in one bundle: a GPU amount above 1 that is not whole (Ray gives either a share of
    one device or whole devices)."""
    gpus = bundle.get(GPU, 0.0)
    if gpus > 1 and not math.isclose(gpus, round(gpus)):
        return [f"{name}: {gpus:g} GPU per bundle — Ray grants a share of one GPU (< 1) or whole GPUs, not {gpus:g}"]
    return []


def total_demand(groups: Sequence[BundleGroup]) -> dict[str, float]:
    total: dict[str, float] = {}
    for group in groups:
        for key, value in group.demand.items():
            total[key] = total.get(key, 0.0) + value
    return total


def node_resources(nodes: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """Nodes as the resources a job can ask for (drops Ray's per-node bookkeeping keys)."""
    return [{key: float(value) for key, value in node.items()
             if key not in _BOOKKEEPING and not key.startswith(_BOOKKEEPING_PREFIXES)} for node in nodes]


def cluster_total(nodes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for node in node_resources(nodes):
        for key, value in node.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def explain(groups: Sequence[BundleGroup], resource: str) -> str:
    """`rollout 2 × 1 + learner 4 × 1 = 6` for one resource."""
    terms = [f"{group.name} {group.count} × {_fmt(group.bundle[resource])}" for group in groups
             if group.bundle.get(resource, 0.0) > 0]
    return f"{' + '.join(terms)} = {_fmt(total_demand(groups).get(resource, 0.0))}"


def total_problems(groups: Sequence[BundleGroup], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Per resource: the groups' sum against the cluster's sum."""
    have = cluster_total(nodes)
    return [f"{resource}: {explain(groups, resource)} needed; the cluster has {_fmt(have.get(resource, 0.0))}"
            for resource, need in sorted(total_demand(groups).items()) if need > have.get(resource, 0.0) + _EPS]


class _Node:
    """A node's free resources while bundles are placed; GPUs as per-device free shares."""

    def __init__(self, resources: Mapping[str, float]) -> None:
        self.free = {key: value for key, value in resources.items() if key != GPU}
        gpus = resources.get(GPU, 0.0)
        self.devices = [1.0] * int(gpus + _EPS) + ([gpus % 1] if gpus % 1 > _EPS else [])

    def take(self, bundle: Mapping[str, float]) -> bool:
        if any(self.free.get(key, 0.0) + _EPS < value for key, value in bundle.items() if key != GPU and value > 0):
            return False
        gpus = bundle.get(GPU, 0.0)
        if gpus >= 1 - _EPS:  # whole devices
            whole = [i for i, free in enumerate(self.devices) if free >= 1 - _EPS][: round(gpus)]
            if len(whole) < round(gpus):
                return False
            for i in whole:
                self.devices[i] = 0.0
        elif gpus > 0:  # a share of one device: the fullest device that still fits (best fit)
            fitting = [i for i, free in enumerate(self.devices) if free + _EPS >= gpus]
            if not fitting:
                return False
            best = min(fitting, key=lambda i: self.devices[i])
            self.devices[best] -= gpus
        for key, value in bundle.items():
            if key != GPU:
                self.free[key] = self.free.get(key, 0.0) - value
        return True


def placement_problems(groups: Sequence[BundleGroup], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Place every bundle, largest first, on the first node where it fits; name the first bundle that cannot."""
    usable = node_resources(nodes)
    for group in groups:
        if not any(_Node(node).take(group.bundle) for node in usable):
            return [f"{group.name}: no node can hold one bundle {_bundle_text(group.bundle)}; "
                    f"nodes: {', '.join(_bundle_text(node) for node in usable) or 'none'}"]
    state = [_Node(node) for node in usable]
    items = sorted(((group, index) for group in groups for index in range(group.count)),
                   key=lambda item: (item[0].bundle.get(GPU, 0.0), item[0].bundle.get(CPU, 0.0)), reverse=True)
    for group, index in items:
        if not any(node.take(group.bundle) for node in state):
            return [f"{group.name}: bundle {index + 1} of {group.count} {_bundle_text(group.bundle)} does not fit "
                    f"next to the bundles placed before it (GPU shares below 1 cannot be split across devices)"]
    return []


def fit_problems(groups: Sequence[BundleGroup], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """Everything that stops `groups` from being placed on `nodes`; empty when they fit."""
    problems = [problem for group in groups for problem in quantity_problems(group.name, group.bundle)]
    if problems:
        return problems
    return total_problems(groups, nodes) or placement_problems(groups, nodes)


def _bundle_text(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{key}: {_fmt(value)}" for key, value in sorted(bundle.items()) if value > 0) + "}"


def summary(groups: Sequence[BundleGroup]) -> dict[str, object]:
    """A JSON-friendly view of the demand: per group bundle and count, and the totals."""
    return {"groups": [{"name": g.name, "count": g.count, "bundle": dict(g.bundle), "roles": list(g.roles)}
                       for g in groups],
            "total": {key: round(value, 4) for key, value in sorted(total_demand(groups).items())}}


# ---- the cluster a config is sized for --------------------------------------------------------------------------
class NodeGroupSection(StrictModel):
    """`count` identical nodes, as `ray start` would announce them."""

    count: int = Field(1, ge=1, description="nodes of this shape")
    cpus: float = Field(..., ge=0, description="Ray CPUs per node (--num-cpus)")
    gpus: int = Field(0, ge=0, description="GPUs per node (--num-gpus)")
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources per node (--resources)")

    def as_resources(self) -> dict[str, float]:
        return {CPU: self.cpus, **({GPU: float(self.gpus)} if self.gpus else {}), **self.resources}


class ClusterSection(StrictModel):
    """The cluster a config is written for; its resource arithmetic is checked when the config loads, so a GPU
    config can be checked on a laptop. At run time the live cluster is checked again before any actor starts."""

    nodes: list[NodeGroupSection] = Field(..., min_length=1, description="node shapes, e.g. a CPU head and GPU workers")

    def node_list(self) -> list[dict[str, float]]:
        return [group.as_resources() for group in self.nodes for _ in range(group.count)]
