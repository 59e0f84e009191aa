"""`rlhf-ray loop`: the main job, chaining every stage that exists into one auditable run.

Stages: simulate feedback shards → ingest them (validate, mask, pseudonymize, version) → curate (annotation
QA, consensus, preference pairs) → build the offline tokenizer + model → SFT it → train a reward model on
the SFT backbone → DPO from the SFT model (also the frozen reference). Each runs through its job's own code
path and config, under the loop's output dir and one lineage root; `stages` picks a consistent subset.
Later stages (PPO, gate, canary) join here as their jobs land.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, get_args

from pydantic import Field, field_validator

from jobs import curate, dpo, ingest, init_model, sft, simulate, train_rm
from jobs.common import add_config_arguments, resolve_config, sink_for
from jobs.training import ScalingSection, TrainSection
from rlhf_ray.config import JobConfig, LineageConfig, StrictModel
from rlhf_ray.sim import ShardConfig, WorldConfig

NAME = "loop"
HELP = ("run the RLHF loop end to end, with lineage: simulate → ingest → curate → init-model → sft → train-rm → dpo "
        "(`stages` picks a subset)")

StageName = Literal["simulate", "ingest", "curate", "init-model", "sft", "train-rm", "dpo"]
STAGES: tuple[str, ...] = get_args(StageName)
# The stages whose outputs a stage reads; each must be listed whenever the stage is.
REQUIRES: dict[str, tuple[str, ...]] = {
    "ingest": ("simulate",),        # the feedback shards
    "curate": ("ingest",),          # the dataset version (and simulate's gold items)
    "init-model": ("ingest",),      # the dataset is the model's lineage parent
    "sft": ("init-model",),         # the model to fine-tune
    "train-rm": ("sft", "curate"),  # the SFT backbone and the preference pairs
    "dpo": ("sft", "curate"),       # the SFT policy (also the reference) and the pairs
}


class SFTStage(StrictModel):
    """The `sft` job's settings in the loop; its model comes from init-model."""

    references_per_prompt: int = sft.SFTConfig.model_fields["references_per_prompt"]
    train: TrainSection = TrainSection()
    scaling: ScalingSection = ScalingSection()


class RewardModelStage(StrictModel):
    """The `train-rm` job's settings in the loop; its backbone is the SFT model, its pairs curate's."""

    heldout_pairs_per_prompt: int = train_rm.TrainRMConfig.model_fields["heldout_pairs_per_prompt"]
    train: train_rm.RewardTrainSection = train_rm.RewardTrainSection()
    scaling: ScalingSection = ScalingSection()


class DPOStage(StrictModel):
    """The `dpo` job's settings in the loop; it starts from the SFT model, which is also its reference."""

    heldout_pairs_per_prompt: int = dpo.DPOConfig.model_fields["heldout_pairs_per_prompt"]
    train: dpo.DPOTrainSection = dpo.DPOTrainSection()
    scaling: ScalingSection = ScalingSection()


class LoopConfig(JobConfig):
    output_dir: str = "runs/quickstart"
    stages: list[StageName] = Field(list(STAGES), min_length=1,
                                    description="stages to run (in pipeline order); each one's inputs must be listed")
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
    sft: SFTStage = SFTStage()
    reward_model: RewardModelStage = RewardModelStage()
    dpo: DPOStage = DPOStage()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved by each shard-writing task")

    @field_validator("stages")
    @classmethod
    def _inputs_are_listed(cls, value: list[str]) -> list[str]:
        """Every listed stage's input stages are listed too; the result is in pipeline order, once each."""
        listed = set(value)
        for stage in STAGES:
            missing = [needed for needed in REQUIRES.get(stage, ()) if stage in listed and needed not in listed]
            if missing:
                raise ValueError(f"stage {stage!r} needs stage(s) {missing} (its input), which are not listed; "
                                 f"add them or drop {stage!r}")
        return [stage for stage in STAGES if stage in listed]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(LoopConfig, args))


class Stages(NamedTuple):
    simulate: simulate.SimulateConfig
    ingest: ingest.IngestConfig
    curate: curate.CurateConfig
    model: init_model.InitModelConfig
    sft: sft.SFTConfig
    reward_model: train_rm.TrainRMConfig
    dpo: dpo.DPOConfig


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
    model = init_model.InitModelConfig(output_dir=out, out=f"{out}/model", model=config.model, world=config.world,
                                       **common)
    sft_model = f"{out}/sft/model"  # where `sft` exports its model
    curated = f"{out}/curated"
    return Stages(
        simulate.SimulateConfig(output_dir=f"{out}/feedback", world=config.world, shards=config.shards,
                                task_cpus=config.task_cpus, **common),
        ingest.IngestConfig(input=f"{out}/feedback/shards", output_dir=f"{out}/dataset", pii=config.pii,
                            pseudonyms=pseudonyms, residency=config.residency, task_cpus=config.task_cpus,
                            **common),
        curate.CurateConfig(input=f"{out}/dataset", gold=f"{out}/feedback/gold/gold_items.jsonl",
                            output_dir=curated, consensus=config.consensus, adjudication=config.adjudication,
                            health=config.health, pairs=config.pairs, active=config.active, **common),
        model,
        sft.SFTConfig(model_path=model.model_dir, output_dir=f"{out}/sft", world=config.world,
                      **config.sft.model_dump(), **common),
        train_rm.TrainRMConfig(model_path=sft_model, pairs=curated, output_dir=f"{out}/reward_model",
                               world=config.world, **config.reward_model.model_dump(), **common),
        dpo.DPOConfig(model_path=sft_model, reference_path=sft_model, pairs=curated, output_dir=f"{out}/dpo",
                      world=config.world, **config.dpo.model_dump(), **common),
    )


Figures = dict[str, Any]


class Stage(NamedTuple):
    """How the loop runs one stage: where it writes, its job's entry, and how its figures are named in the
    summary (`prefix` on every key except those starting with one of `keep`, so the stages never collide)."""

    where: Callable[[Stages], str]
    run: Callable[[Stages, dict[str, Figures]], Figures]
    prefix: str = ""
    keep: tuple[str, ...] = ()


RUNNERS: dict[str, Stage] = {
    "simulate": Stage(lambda s: s.simulate.output_dir, lambda s, done: simulate.generate(s.simulate)),
    "ingest": Stage(lambda s: s.ingest.output_dir, lambda s, done: ingest.ingest(s.ingest)),
    "curate": Stage(lambda s: s.curate.output_dir, lambda s, done: curate.run_curate(s.curate)),
    "init-model": Stage(lambda s: s.model.model_dir,
                        lambda s, done: init_model.build(s.model, parents=(done["ingest"]["dataset_id"],))),
    "sft": Stage(lambda s: s.sft.output_dir, lambda s, done: sft.train(s.sft), "sft_", ("sft_", "timing/")),
    "train-rm": Stage(lambda s: s.reward_model.output_dir,
                      lambda s, done: train_rm.train_reward_model(s.reward_model), "rm_", ("reward_model_", "timing/")),
    "dpo": Stage(lambda s: s.dpo.output_dir, lambda s, done: dpo.train_dpo(s.dpo), "dpo_", ("timing/",)),
}


# The summary keys of the artifacts the stages register, in pipeline order.
ARTIFACT_KEYS = ("shards_id", "dataset_id", "pairs_id", "model_id", "sft_model_id", "reward_model_id", "dpo_policy_id")


def summary_figures(stage: Stage, figures: Figures) -> Figures:
    return {key if key.startswith(stage.keep) else stage.prefix + key: value for key, value in figures.items()}


def _announce(step: int, total: int, name: str, where: str) -> None:
    print(f"[loop] stage {step}/{total} {name} → {where}", file=sys.stderr)


def run(config: LoopConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    stages = stage_configs(config)
    done: dict[str, Figures] = {}
    summary: Figures = {"stages": list(config.stages)}
    for step, name in enumerate(config.stages, start=1):
        stage = RUNNERS[name]
        _announce(step, len(config.stages), name, stage.where(stages))
        done[name] = stage.run(stages, done)
        figures = summary_figures(stage, done[name])
        sink.log({k: v for k, v in figures.items() if not isinstance(v, list | dict)}, step=step, source=name)
        summary.update(figures)
    lineage_root = stages.model.lineage.root
    newest = next(summary[key] for key in reversed(ARTIFACT_KEYS) if key in summary)
    print(f"[loop] done; trace it with: rlhf-ray lineage {newest} --root {lineage_root}", file=sys.stderr)
    where = {"output_dir": config.output_dir, "lineage_root": lineage_root}
    return sink.close({**summary, **where})
