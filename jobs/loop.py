"""`rlhf-ray loop`: the main job, chaining every stage that exists into one auditable run.

Stages today: simulate feedback shards → ingest them (validate, mask, pseudonymize, version) → curate
(annotation QA, consensus, preference pairs) → build the offline tokenizer + model. Later stages
(reward model, PPO, gate, canary) join here as their jobs land, each through its job's own code path.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple

from pydantic import Field

from jobs import curate, ingest, init_model, simulate
from jobs.common import add_config_arguments, resolve_config, sink_for
from rlhf_ray.config import JobConfig, LineageConfig
from rlhf_ray.sim import ShardConfig, WorldConfig

NAME = "loop"
HELP = "run the RLHF loop end to end (today: simulate → ingest → curate → build the tiny model), with lineage"


class LoopConfig(JobConfig):
    output_dir: str = "runs/quickstart"
    world: WorldConfig = WorldConfig()
    shards: ShardConfig = ShardConfig()
    model: init_model.ModelSection = init_model.ModelSection()
    pii: ingest.PiiSection = ingest.PiiSection()
    pseudonyms: ingest.PseudonymSection = ingest.PseudonymSection()
    residency: ingest.ResidencySection = ingest.ResidencySection()
    consensus: curate.ConsensusSection = curate.ConsensusSection()
    adjudication: curate.AdjudicationSection = curate.AdjudicationSection()
    health: curate.HealthSection = curate.HealthSection()
    pairs: curate.PairsSection = curate.PairsSection()
    active: curate.ActiveSection = curate.ActiveSection()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved by each shard-writing task")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(LoopConfig, args))


STAGES = 4


class Stages(NamedTuple):
    simulate: simulate.SimulateConfig
    ingest: ingest.IngestConfig
    curate: curate.CurateConfig
    model: init_model.InitModelConfig


def stage_configs(config: LoopConfig) -> Stages:
    """Each stage gets its job's own config, under the loop's output dir and one shared lineage root."""
    out = config.output_dir.rstrip("/")
    common = {
        "seed": config.seed,
        "ray": config.ray,
        "wandb": config.wandb.model_copy(update={"mode": "disabled"}),
        "lineage": LineageConfig(root=config.lineage.root or f"{out}/lineage"),
    }
    pseudonyms = config.pseudonyms
    if pseudonyms.key_file is None:
        pseudonyms = pseudonyms.model_copy(update={"key_file": f"{out}/secrets/pseudonym.key"})
    return Stages(
        simulate.SimulateConfig(output_dir=f"{out}/feedback", world=config.world, shards=config.shards,
                                task_cpus=config.task_cpus, **common),
        ingest.IngestConfig(input=f"{out}/feedback/shards", output_dir=f"{out}/dataset", pii=config.pii,
                            pseudonyms=pseudonyms, residency=config.residency, task_cpus=config.task_cpus,
                            **common),
        curate.CurateConfig(input=f"{out}/dataset", gold=f"{out}/feedback/gold/gold_items.jsonl",
                            output_dir=f"{out}/curated", consensus=config.consensus, adjudication=config.adjudication,
                            health=config.health, pairs=config.pairs, active=config.active, **common),
        init_model.InitModelConfig(output_dir=out, out=f"{out}/model", model=config.model, world=config.world,
                                   **common),
    )


def _announce(step: int, name: str, where: str) -> None:
    print(f"[loop] stage {step}/{STAGES} {name} → {where}", file=sys.stderr)


def run(config: LoopConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    stages = stage_configs(config)
    _announce(1, "simulate", stages.simulate.output_dir)
    feedback = simulate.generate(stages.simulate)
    sink.log(feedback, step=1)
    _announce(2, "ingest", stages.ingest.output_dir)
    dataset = ingest.ingest(stages.ingest)
    sink.log({k: v for k, v in dataset.items() if not isinstance(v, list | dict)}, step=2)
    _announce(3, "curate", stages.curate.output_dir)
    curated = curate.run_curate(stages.curate)
    sink.log({k: v for k, v in curated.items() if not isinstance(v, list | dict)}, step=3)
    _announce(4, "init-model", stages.model.model_dir)
    model = init_model.build(stages.model, parents=(dataset["dataset_id"],))
    sink.log(model, step=4)
    lineage_root = stages.model.lineage.root
    print(f"[loop] done; trace it with: rlhf-ray lineage {model['model_id']} --root {lineage_root}", file=sys.stderr)
    where = {"output_dir": config.output_dir, "lineage_root": lineage_root}
    return sink.close({**feedback, **dataset, **curated, **model, **where})
