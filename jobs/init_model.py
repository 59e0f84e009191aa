"""`rlhf-ray init-model`: an offline tokenizer + small Llama model built from the world's corpus."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.inputs.world import WorldConfig, corpus
from rlhf_ray.lineage.jobs import lineage_for
from rlhf_ray.models import init_model
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "init-model"
HELP = "train a tokenizer offline on the world's corpus and save a tiny/small Llama model (no downloads)"


class ModelSection(StrictModel):
    size: Literal["tiny", "small"] = Field("tiny", description="tiny ≈ 1M parameters, small ≈ 10–30M")
    corpus_samples_per_prompt: int = Field(3, ge=1, description="answers per prompt in the tokenizer corpus")


class InitModelConfig(JobConfig):
    output_dir: str = "runs/init-model"
    out: str | None = Field(None, description="model directory (default: <output_dir>/model)")
    model: ModelSection = ModelSection()
    world: WorldConfig = WorldConfig()

    @property
    def model_dir(self) -> str:
        return self.out or str(Path(self.output_dir) / "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="directory to write the HF checkpoint to (sets out)")
    parser.add_argument("--size", choices=["tiny", "small"], help="model size preset (sets model.size)")
    parser.add_argument("--seed", type=int, help="seed of the world and of the weights (sets seed)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = resolve_config(InitModelConfig, args, {"out": "out", "size": "model.size", "seed": "seed"})
    return run(config)


def build(config: InitModelConfig, parents: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train the tokenizer, build and save the model, register it in lineage; returns its figures."""
    started = time.perf_counter()
    text = corpus(config.world, config.seed, config.model.corpus_samples_per_prompt)
    card = init_model(text, config.model_dir, config.model.size, config.seed)
    files = StorageRoot.from_uri(config.model_dir)
    definition = {"seed": config.seed, "size": config.model.size, "world": config.world.model_dump(mode="json"),
                  "corpus_samples_per_prompt": config.model.corpus_samples_per_prompt}
    metrics = {"num_parameters": card.num_parameters, "vocab_size": card.vocab_size}
    artifact = lineage_for(config).register(
        "model", f"{config.model.size}-llama-seed-{config.seed}", digest_files(files, files.list_files()),
        parents=parents, config=definition, metrics=metrics, uri=str(card.path),
    )
    return {"model_dir": str(card.path), "model_id": artifact.id, **metrics,
            "timing/init_model": round(time.perf_counter() - started, 2)}


def run(config: InitModelConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = build(config)
    sink.log(figures)
    return sink.close(figures)
