"""`rlhf-ray sft`: supervised fine-tuning of a local checkpoint on the world's reference responses (Ray Train)."""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field

from actors.train_loops import MODEL_DIR, heldout_sft_loss, sft_loop
from jobs.common import add_config_arguments, ensure_ray, lineage_for, resolve_config, sink_for
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.models import load_causal_lm, load_tokenizer, resolve_model_path
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.storage import StorageRoot, digest_files

NAME = "sft"
HELP = "supervised fine-tuning on Ray Train (DDP; loss on response tokens) of any local HF checkpoint"


class SFTError(ValueError):
    """The job cannot start: no model to fine-tune."""


class TrainSection(StrictModel):
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1, description="examples per worker per step")
    max_length: int = Field(128, ge=8)
    max_grad_norm: float = Field(1.0, gt=0)
    shuffle_buffer: int = Field(256, ge=1)


class ScalingSection(StrictModel):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False


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


def examples(world: World, split: str, per_prompt: int) -> list[dict[str, str]]:
    return [{"prompt": e.prompt, "response": e.response} for e in world.reference_responses(per_prompt, split)]


def _copy_model(source: str, target: str) -> str:
    """Copy the checkpoint's HF directory into place atomically (staged sibling, then rename)."""
    target_path = Path(target).absolute()
    staging = target_path.with_name(f".{target_path.name}.tmp-{uuid.uuid4().hex}")
    shutil.copytree(source, staging)
    if target_path.exists():
        shutil.rmtree(target_path)
    os.replace(staging, target_path)
    return str(target_path)


def train(config: SFTConfig) -> dict[str, Any]:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not config.model_path:
        raise SFTError("model_path is not set: pass --model DIR (e.g. the output of `rlhf-ray init-model`)")
    started = time.perf_counter()
    base = resolve_model_path(config.model_path)
    world = World(config.world, config.seed)
    heldout = examples(world, "heldout", 1)
    before = heldout_sft_loss(load_causal_lm(base), load_tokenizer(base), heldout, config.train.batch_size,
                              config.train.max_length)
    ensure_ray(config.ray)
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": str(base), "heldout": heldout,
                   "resume_from": os.path.abspath(config.resume_from) if config.resume_from else None}
    trainer = TorchTrainer(
        sft_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.scaling.num_workers, use_gpu=config.scaling.use_gpu,
                                     resources_per_worker={"CPU": config.scaling.cpus_per_worker}),
        run_config=RunConfig(name=f"sft-{uuid.uuid4().hex[:8]}",
                             storage_path=os.path.abspath(os.path.join(config.output_dir, "ray_train"))),
        datasets={"train": ray.data.from_items(examples(world, "train", config.references_per_prompt))},
    )
    result = trainer.fit()
    checkpoint_dir = result.checkpoint.path
    model_dir = _copy_model(os.path.join(checkpoint_dir, MODEL_DIR), os.path.join(config.output_dir, "model"))
    registry = lineage_for(config)
    files = StorageRoot.from_uri(str(base))
    parent = registry.register("checkpoint", str(base), digest_files(files, files.list_files()), uri=str(base))
    model_files = StorageRoot.from_uri(model_dir)
    model_digest = digest_files(model_files, model_files.list_files())
    metrics = {"heldout_loss_before": round(before, 4), "heldout_loss": round(result.metrics["heldout_loss"], 4),
               "train_loss": round(result.metrics["train_loss"], 4), "steps": result.metrics["step"]}
    artifact = registry.register("model", f"sft-seed-{config.seed}", model_digest,
                                 parents=(parent.id,), config=config.model_dump(mode="json", include={"train", "seed"}),
                                 metrics=metrics, uri=model_dir)
    return {"model_dir": model_dir, "sft_model_id": artifact.id, "checkpoint": checkpoint_dir, **metrics,
            "epochs": result.metrics["epoch"] + 1, "num_workers": config.scaling.num_workers,
            "timing/sft": round(time.perf_counter() - started, 2)}


def run(config: SFTConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
