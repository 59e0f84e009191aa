"""The synthetic production world: prompts, people, a hidden true utility, and feedback shards.

A pure function of its seed, so RLHF's effects can be measured against ground truth.
"""

from rlhf_ray.sim.config import PopulationConfig, SegmentMix, ShardConfig, SignalMix, UtilityRanges, WorldConfig
from rlhf_ray.sim.leakage import leakage_figures, leakage_report
from rlhf_ray.sim.prompts import PromptSpec
from rlhf_ray.sim.shards import ShardResult, ShardSpec, plan_judge_shards, plan_shards, write_shard
from rlhf_ray.sim.utility import HiddenUtility, UtilityBreakdown, UtilityWeights, true_utility
from rlhf_ray.sim.world import ReferenceExample, World

__all__ = [
    "HiddenUtility",
    "PopulationConfig",
    "PromptSpec",
    "ReferenceExample",
    "SegmentMix",
    "ShardConfig",
    "ShardResult",
    "ShardSpec",
    "SignalMix",
    "UtilityBreakdown",
    "UtilityRanges",
    "UtilityWeights",
    "World",
    "WorldConfig",
    "leakage_figures",
    "leakage_report",
    "plan_judge_shards",
    "plan_shards",
    "true_utility",
    "write_shard",
]
