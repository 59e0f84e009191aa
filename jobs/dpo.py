"""`rlhf-ray dpo`: direct preference optimisation (DPO, IPO or hinge) of a policy on curated pairs (Ray Train),
an offline alternative to PPO; evaluated by implicit-reward accuracy on held-out truth pairs (simulation)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Literal

from pydantic import Field

from actors.runtime import ensure_ray
from actors.train_loops import dpo_loop
from jobs.common import add_config_arguments, resolve_config
from jobs.train_rm import HeldoutPairsSettings, heldout_pairs, locate_pairs
from jobs.training import ScalingSection, export_model, fit, lineage_definition, preference_lineage, read_pairs
from rlhf_ray.annotation.pairs import PREFERENCE
from rlhf_ray.config import JobConfig
from rlhf_ray.lineage.jobs import directory_digest
from rlhf_ray.models import ModelOptions, prepare_checkpoint
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.training.config import TrainSection

NAME = "dpo"
HELP = "DPO / IPO / hinge preference optimisation of a policy on curated pairs, on Ray Train"


class DPOError(ValueError):
    """The job cannot start: no policy or no pairs."""


class DPOTrainSection(TrainSection):
    lr: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, le=0.5)
    use_pair_weights: bool = True


class DPOConfig(HeldoutPairsSettings, JobConfig):
    model_path: str | None = Field(None, description="policy to optimise (an SFT model); also the frozen reference")
    reference_path: str | None = Field(None, description="reference model (default: model_path)")
    model: ModelOptions = ModelOptions()
    pairs: str | None = Field(None, description="output_dir of `rlhf-ray curate`, or a folder of pair Parquet files")
    output_dir: str = "runs/dpo"
    heldout_pairs_per_prompt: int = Field(4, ge=1, description="truth-labelled pairs per held-out world prompt")
    train: DPOTrainSection = DPOTrainSection()
    scaling: ScalingSection = ScalingSection()
    resume_from: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="policy checkpoint directory (sets model_path)")
    parser.add_argument("--pairs", help="curate output or pairs folder (sets pairs)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    parser.add_argument("--eval-pairs", help="held-out pairs file in an import format (sets eval_pairs)")
    parser.add_argument("--eval-format", help="its format, as `rlhf-ray import --format` (sets eval_format)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(DPOConfig, args, {"model": "model_path", "pairs": "pairs", "out": "output_dir",
                                                "eval_pairs": "eval_pairs", "eval_format": "eval_format"}))


def train_dpo(config: DPOConfig) -> dict[str, Any]:

    if not config.model_path or not config.pairs:
        raise DPOError("dpo needs --model DIR (the policy, e.g. an SFT model) and --pairs DIR (curate output)")
    started = time.perf_counter()
    policy = prepare_checkpoint(config.model_path, config.model.chat_template, config.output_dir)
    reference = policy if config.reference_path is None else prepare_checkpoint(
        config.reference_path, config.model.chat_template, os.path.join(config.output_dir, "reference"))
    pairs_dir, curate_report = locate_pairs(config.pairs)
    ensure_ray(config.ray)
    dataset = read_pairs(pairs_dir, [PREFERENCE])
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": policy,
                   "reference_path": reference,
                   "heldout": heldout_pairs(config, config.seed)}
    result = fit(dpo_loop, loop_config, dataset, config, config.scaling, NAME, config.resume_from)
    model_dir = export_model(result.checkpoint.path, os.path.join(config.output_dir, "policy"))
    registry, parents = preference_lineage(config, curate_report, policy)
    metrics = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("heldout_", "train_"))}
    artifact = registry.register("policy", f"dpo-{config.train.loss_type}-seed-{config.seed}",
                                 directory_digest(model_dir), parents=parents,
                                 config=lineage_definition(config, ("eval_pairs",)), metrics=metrics,
                                 uri=model_dir)
    return {"policy_dir": model_dir, "policy_id": artifact.id, "checkpoint": result.checkpoint.path,
            "steps": result.metrics["step"], "epochs": result.metrics["epoch"] + 1, **metrics,
            "loss_type": config.train.loss_type, "timing/dpo": round(time.perf_counter() - started, 2)}


def run(config: DPOConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train_dpo(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
