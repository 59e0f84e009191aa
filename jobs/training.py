"""What the Ray Train jobs (sft, train-rm, dpo) share: the optimisation and scaling settings, the trainer
run, exporting the final model and recording it in lineage."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from pydantic import Field

from actors.runtime import ensure_ray
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.lineage.jobs import lineage_for, register_input_checkpoint
from rlhf_ray.models import ModelOptions
from rlhf_ray.storage import swap_in_directory
from rlhf_ray.training.checkpoint import MODEL_DIR

# Ray Train's controller polls its workers every 2 s by default, so each stage waits up to a poll more to start
# and to finish: 16.2 s against 13.0 s at 0.5 s for a no-op 2-worker fit here (`benchmarks/train_overhead.py`).
# Ray Train hands the variable from the driver to its controller; a user's own setting wins.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_SECONDS = "0.5"


class ScalingSection(StrictModel):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False


def fit(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], dataset: Any, config: JobConfig,
        scaling: ScalingSection, name: str, resume_from: str | None) -> Any:
    """Run `loop` on a TorchTrainer; checkpoints go under `<output_dir>/ray_train/<name>-<id>`. The job's
    `model.lora` (if any) reaches the loop as `lora`."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(config.ray)
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_SECONDS)
    options = getattr(config, "model", None)
    lora = options.lora.model_dump() if isinstance(options, ModelOptions) and options.lora else None
    trainer = TorchTrainer(
        loop,
        train_loop_config={**loop_config, "use_gpu": scaling.use_gpu, "lora": lora,
                           "resume_from": os.path.abspath(resume_from) if resume_from else None},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=RunConfig(name=f"{name}-{uuid.uuid4().hex[:8]}",
                             storage_path=os.path.abspath(os.path.join(config.output_dir, "ray_train"))),
        datasets={"train": dataset if _cpus_left_for_data(scaling) else dataset.materialize()},
    )
    return trainer.fit()


def _cpus_left_for_data(scaling: ScalingSection) -> bool:
    """Whether Ray Data tasks can still run once the workers hold their CPUs. When the workers take every CPU
    (e.g. 2 workers × 1 CPU on a 2-core laptop) a streamed read would wait forever, so the dataset is read
    into the object store before training starts instead."""
    import ray

    return ray.cluster_resources().get("CPU", 0.0) - scaling.num_workers * scaling.cpus_per_worker >= 1.0


def export_model(checkpoint_dir: str, target: str) -> str:
    """Copy the checkpoint's model directory into place atomically (staged sibling, then rename). It is plain HF
    weights and the tokenizer; a LoRA run's adapters are already merged into it (`save_checkpoint`)."""
    target_path = Path(target).absolute()
    staging = target_path.with_name(f".{target_path.name}.tmp-{uuid.uuid4().hex}")
    shutil.copytree(os.path.join(checkpoint_dir, MODEL_DIR), staging)
    swap_in_directory(staging, target_path)
    return str(target_path)


PAIR_COLUMNS = ["prompt", "chosen", "rejected", "weight", "objective"]


def read_pairs(pairs_dir: str, objectives: Collection[str]) -> Any:
    """The curated pairs of the given objectives as a Ray Dataset, with just the columns the trainers read."""
    import ray
    from ray.data.expressions import col

    dataset = ray.data.read_parquet(pairs_dir).select_columns(PAIR_COLUMNS)
    return dataset.filter(expr=col("objective").is_in(sorted(objectives)))


def preference_lineage(config: JobConfig, curate_report: dict[str, Any], model_path: str) -> tuple[Any, tuple]:
    """The registry the pairs were recorded in, and the parents of a model trained on them: the starting
    checkpoint, plus the pairs artifact when that registry knows it."""
    registry = lineage_for(config, curate_report.get("lineage_root"))
    parents = [register_input_checkpoint(registry, model_path)]
    if curate_report.get("pairs_id") and registry.has(curate_report["pairs_id"]):
        parents.append(curate_report["pairs_id"])
    return registry, tuple(parents)


def lineage_definition(config: JobConfig, optional: Collection[str] = ()) -> dict[str, Any]:
    """What a training artifact's lineage record says it was trained with: `train` and `seed`, plus each of
    `optional` (and `model`: chat template, LoRA) that differs from its default — so a run without them keeps the
    artifact id it always had, and one with them says so."""
    fields = {name for name in ("model", *optional)
              if getattr(config, name) != type(config).model_fields[name].get_default(call_default_factory=True)}
    return config.model_dump(mode="json", include={"train", "seed", *fields})
