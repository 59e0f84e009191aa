"""`rlhf-ray init-model`: an offline tokenizer + small model (Llama, Qwen2 or GPT-NeoX; native, ChatML or Llama-3
chat format) built from the world's corpus or from the user's `--corpus` files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.inputs.world import WorldConfig, corpus
from rlhf_ray.lineage.jobs import lineage_for
from rlhf_ray.models import init_model
from rlhf_ray.models.corpus import read_corpus
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "init-model"
HELP = ("train a tokenizer offline on the world's corpus (or --corpus files) and save a tiny/small "
        "Llama/Qwen2/GPT-NeoX model (no downloads)")


class ModelSection(StrictModel):
    size: Literal["tiny", "small"] = Field("tiny", description="tiny ≈ 1M parameters, small ≈ 10–30M")
    corpus_samples_per_prompt: int = Field(3, ge=1, description="answers per prompt in the tokenizer corpus")
    architecture: Literal["llama", "qwen2", "gpt_neox"] = Field("llama", description="HF model class to build")
    chat_format: Literal["native", "chatml", "llama3"] = Field(
        "native", description="special tokens and chat template: native (<|user|>…<|end|>), chatml, llama3")
    pad_token: bool = Field(True, description="false: the tokenizer has no pad token (as Qwen2 and Llama 3 ship)")
    corpus: list[str] = Field(default_factory=list, description="tokenizer corpus files (JSONL, Parquet or text) "
                                                                "instead of the world's corpus")


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
    parser.add_argument("--arch", choices=["llama", "qwen2", "gpt_neox"], help="model class (sets model.architecture)")
    parser.add_argument("--chat-format", choices=["native", "chatml", "llama3"],
                        help="special tokens and chat template (sets model.chat_format)")
    parser.add_argument("--no-pad-token", action="store_const", const=False,
                        help="save the tokenizer without a pad token (sets model.pad_token=false)")
    parser.add_argument("--corpus", nargs="+", metavar="FILE",
                        help="JSONL (prompt/response/messages/text), Parquet or text files to train the tokenizer "
                             "on instead of the world's corpus (sets model.corpus)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.corpus:  # as a JSON list, so the override parses as one list whatever the file names hold
        args.corpus = json.dumps(args.corpus)
    config = resolve_config(InitModelConfig, args, {
        "out": "out", "size": "model.size", "seed": "seed", "arch": "model.architecture",
        "chat_format": "model.chat_format", "no_pad_token": "model.pad_token", "corpus": "model.corpus"})
    return run(config)


def build(config: InitModelConfig, parents: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train the tokenizer, build and save the model, register it in lineage; returns its figures."""
    started = time.perf_counter()
    section = config.model
    if section.corpus:
        text = read_corpus(section.corpus)
        source = {"corpus": [str(Path(p).absolute()) for p in section.corpus]}
    else:
        text = corpus(config.world, config.seed, section.corpus_samples_per_prompt)
        source = {"world": config.world.model_dump(mode="json"),
                  "corpus_samples_per_prompt": section.corpus_samples_per_prompt}
    card = init_model(text, config.model_dir, section.size, config.seed, section.architecture, section.chat_format,
                      section.pad_token)
    files = StorageRoot.from_uri(config.model_dir)
    definition = {"seed": config.seed, "size": section.size, "architecture": section.architecture,
                  "chat_format": section.chat_format, "pad_token": section.pad_token, **source}
    metrics = {"num_parameters": card.num_parameters, "vocab_size": card.vocab_size}
    artifact = lineage_for(config).register(
        "model", f"{section.size}-{section.architecture}-seed-{config.seed}", digest_files(files, files.list_files()),
        parents=parents, config=definition, metrics=metrics, uri=str(card.path),
    )
    return {"model_dir": str(card.path), "model_id": artifact.id, "architecture": section.architecture,
            "chat_format": section.chat_format, **metrics,
            "timing/init_model": round(time.perf_counter() - started, 2)}


def run(config: InitModelConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = build(config)
    sink.log(figures)
    return sink.close(figures)
