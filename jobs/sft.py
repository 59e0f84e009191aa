"""`rlhf-ray sft`: supervised fine-tuning of a local checkpoint on the world's reference responses (Ray Train)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from pydantic import Field

from actors.train_loops import sft_loop
from jobs.common import add_config_arguments, resolve_config
from jobs.training import ScalingSection, export_model, fit
from rlhf_ray.config import JobConfig
from rlhf_ray.inputs import SplitName
from rlhf_ray.inputs.world import WorldConfig, reference_examples
from rlhf_ray.lineage.jobs import directory_digest, lineage_for, register_input_checkpoint
from rlhf_ray.models import load_causal_lm, load_tokenizer, resolve_model_path
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.training.config import TrainSection
from rlhf_ray.training.steps import heldout_sft_loss

NAME = "sft"
HELP = "supervised fine-tuning on Ray Train (DDP; loss on response tokens) of any local HF checkpoint"


class SFTError(ValueError):
    """The job cannot start: no model to fine-tune."""


class SFTConfig(JobConfig):
    model_path: str | None = Field(None, description="local HF checkpoint directory to fine-tune")
    output_dir: str = "runs/sft"
    world: WorldConfig = WorldConfig()
    references_per_prompt: int = Field(2, ge=1, description="reference answers drawn per training prompt")
    train: TrainSection = TrainSection()
    scaling: ScalingSection = ScalingSection()
    resume_from: str | None = Field(None, description="a checkpoint directory of an earlier run to continue")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local HF checkpoint directory (sets model_path)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(SFTConfig, args, {"model": "model_path", "out": "output_dir"}))


def _examples(config: SFTConfig, split: SplitName, per_prompt: int) -> list[dict[str, str]]:
    """The world's reference answers of one split as {prompt, response} rows."""
    return [{"prompt": e["prompt"], "response": e["response"]}
            for e in reference_examples(config.world, config.seed, split, per_prompt)]


def train(config: SFTConfig) -> dict[str, Any]:
    import ray

    if not config.model_path:
        raise SFTError("model_path is not set: pass --model DIR (e.g. the output of `rlhf-ray init-model`)")
    started = time.perf_counter()
    base = resolve_model_path(config.model_path)
    heldout = _examples(config, "validation", 1)
    before = heldout_sft_loss(load_causal_lm(base), load_tokenizer(base), heldout, config.train.batch_size,
                              config.train.max_length)
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": str(base), "heldout": heldout}
    dataset = ray.data.from_items(_examples(config, "train", config.references_per_prompt))
    result = fit(sft_loop, loop_config, dataset, config, config.scaling, NAME, config.resume_from)
    checkpoint_dir = result.checkpoint.path
    model_dir = export_model(checkpoint_dir, os.path.join(config.output_dir, "model"))
    registry = lineage_for(config)
    parent = register_input_checkpoint(registry, str(base))
    metrics = {"heldout_loss_before": round(before, 4), "heldout_loss": round(result.metrics["heldout_loss"], 4),
               "train_loss": round(result.metrics["train_loss"], 4), "steps": result.metrics["step"]}
    artifact = registry.register("model", f"sft-seed-{config.seed}", directory_digest(model_dir),
                                 parents=(parent,), config=config.model_dump(mode="json", include={"train", "seed"}),
                                 metrics=metrics, uri=model_dir)
    return {"model_dir": model_dir, "sft_model_id": artifact.id, "checkpoint": checkpoint_dir, **metrics,
            "epochs": result.metrics["epoch"] + 1, "num_workers": config.scaling.num_workers,
            "timing/sft": round(time.perf_counter() - started, 2)}


def run(config: SFTConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
