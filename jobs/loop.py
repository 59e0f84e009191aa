"""`rlhf-ray loop`: the main job, chaining every stage that exists into one auditable run.

Stages today: simulate feedback shards → build the offline tokenizer + model. Later stages (ingest,
curate, reward model, PPO, gate, canary) join here as their jobs land, each through its job's own
code path.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import Field

from jobs import init_model, simulate
from jobs.common import add_config_arguments, resolve_config, sink_for
from rlhf_ray.config import JobConfig, LineageConfig
from rlhf_ray.sim import ShardConfig, WorldConfig

NAME = "loop"
HELP = "run the RLHF loop end to end (today: simulate feedback → build the tiny model), with lineage"


class LoopConfig(JobConfig):
    output_dir: str = "runs/quickstart"
    world: WorldConfig = WorldConfig()
    shards: ShardConfig = ShardConfig()
    model: init_model.ModelSection = init_model.ModelSection()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved by each shard-writing task")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(LoopConfig, args))


def _stage_configs(config: LoopConfig) -> tuple[simulate.SimulateConfig, init_model.InitModelConfig]:
    """Each stage gets its job's own config, under the loop's output dir and one shared lineage root."""
    out = config.output_dir.rstrip("/")
    common = {
        "seed": config.seed,
        "ray": config.ray,
        "wandb": config.wandb.model_copy(update={"mode": "disabled"}),
        "lineage": LineageConfig(root=config.lineage.root or f"{out}/lineage"),
        "world": config.world,
    }
    return (
        simulate.SimulateConfig(output_dir=f"{out}/feedback", shards=config.shards, task_cpus=config.task_cpus,
                                **common),
        init_model.InitModelConfig(output_dir=out, out=f"{out}/model", model=config.model, **common),
    )


def run(config: LoopConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    simulate_config, model_config = _stage_configs(config)
    print(f"[loop] stage 1/2 simulate → {simulate_config.output_dir}", file=sys.stderr)
    feedback = simulate.generate(simulate_config)
    sink.log(feedback, step=1)
    print(f"[loop] stage 2/2 init-model → {model_config.model_dir}", file=sys.stderr)
    model = init_model.build(model_config, parents=(feedback["shards_id"],))
    sink.log(model, step=2)
    lineage_root = model_config.lineage.root
    print(f"[loop] done; trace it with: rlhf-ray lineage {model['model_id']} --root {lineage_root}", file=sys.stderr)
    return sink.close({**feedback, **model, "output_dir": config.output_dir, "lineage_root": lineage_root})
