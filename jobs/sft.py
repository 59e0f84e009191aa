"""`rlhf-ray sft`: supervised fine-tuning of a local checkpoint (Ray Train) on the world's reference responses or
on the user's conversations (`--data FILE`: OpenAI `messages` or prompt/response rows, JSONL or Parquet)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from actors.train_loops import sft_loop
from jobs.common import add_config_arguments, resolve_config
from jobs.training import ScalingSection, export_model, fit, lineage_definition
from rlhf_ray.config import JobConfig
from rlhf_ray.inputs import SplitName
from rlhf_ray.inputs.world import WorldConfig, reference_examples
from rlhf_ray.lineage.jobs import directory_digest, lineage_for, register_input_checkpoint
from rlhf_ray.models import ModelOptions, load_causal_lm, load_tokenizer, prepare_checkpoint, resolve_model_path
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.training.config import TrainSection
from rlhf_ray.training.sft_data import SFTData, hold_out, read_sft_file
from rlhf_ray.training.steps import heldout_sft_loss

NAME = "sft"
HELP = "supervised fine-tuning on Ray Train (DDP; loss on response tokens) of any local HF checkpoint"


class SFTError(ValueError):
    """The job cannot start: no model to fine-tune."""


class SFTConfig(JobConfig):
    model_path: str | None = Field(None, description="local HF checkpoint directory to fine-tune")
    model: ModelOptions = ModelOptions()
    output_dir: str = "runs/sft"
    data: str | None = Field(None, description="the user's SFT file (JSONL or Parquet: OpenAI `messages` or "
                                               "prompt/response rows) instead of the world's references")
    eval_data: str | None = Field(None, description="validation file in the same format (default: hold out "
                                                    "eval_fraction of `data`)")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="share of `data` held out for validation")
    world: WorldConfig = WorldConfig()
    references_per_prompt: int = Field(2, ge=1, description="reference answers drawn per training prompt")
    train: TrainSection = TrainSection()
    scaling: ScalingSection = ScalingSection()
    resume_from: str | None = Field(None, description="a checkpoint directory of an earlier run to continue")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local HF checkpoint directory (sets model_path)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    parser.add_argument("--data", help="SFT file, JSONL or Parquet, OpenAI `messages` or prompt/response rows "
                                       "(sets data)")
    parser.add_argument("--eval-data", dest="eval_data", help="validation file in the same format (sets eval_data)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(SFTConfig, args, {"model": "model_path", "out": "output_dir", "data": "data",
                                                "eval_data": "eval_data"}))


def _examples(config: SFTConfig, split: SplitName, per_prompt: int) -> list[dict[str, str]]:
    """The world's reference answers of one split as {prompt, response} rows."""
    return [{"prompt": e["prompt"], "response": e["response"]}
            for e in reference_examples(config.world, config.seed, split, per_prompt)]


def _report_bad_rows(name: str, data: SFTData, output_dir: str) -> None:
    """Each skipped row on stderr (line and reason, never its text) and in `<output_dir>/bad_rows-<name>.jsonl`."""
    if not data.bad:
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"bad_rows-{name}.jsonl"), "w", encoding="utf-8") as stream:
        for bad in data.bad:
            print(f"sft: {name} line {bad.line} skipped: {bad.reason}", file=sys.stderr)
            stream.write(json.dumps({"line": bad.line, "reason": bad.reason}) + "\n")


def _user_examples(config: SFTConfig, path: str) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, Any]]:
    """(train rows, held-out rows, data figures) from the file `path` and `eval_data` (or a held-out share)."""
    data = read_sft_file(path)
    _report_bad_rows(Path(path).stem, data, config.output_dir)
    figures = {"data_rows": data.input_rows, "bad_rows": len(data.bad)}
    if config.eval_data:
        evaluation = read_sft_file(config.eval_data)
        _report_bad_rows(Path(config.eval_data).stem, evaluation, config.output_dir)
        figures.update(eval_data_rows=evaluation.input_rows, eval_bad_rows=len(evaluation.bad))
        rows, heldout = data.rows, evaluation.rows
        if not heldout:
            raise SFTError(f"eval_data {config.eval_data!r} has no usable row ({len(evaluation.bad)} bad)")
    else:
        rows, heldout = hold_out(data.rows, config.eval_fraction, config.seed)
    if not rows:
        raise SFTError(f"data {config.data!r} has no usable row to train on ({len(data.bad)} bad)")
    return rows, heldout, {**figures, "train_rows": len(rows), "heldout_rows": len(heldout)}


def train(config: SFTConfig) -> dict[str, Any]:
    import ray

    if not config.model_path:
        raise SFTError("model_path is not set: pass --model DIR (e.g. the output of `rlhf-ray init-model`)")
    started = time.perf_counter()
    given = resolve_model_path(config.model_path)
    base = prepare_checkpoint(given, config.model.chat_template, config.output_dir)
    if config.data:
        rows, heldout, data_figures = _user_examples(config, config.data)
    else:
        rows, data_figures = _examples(config, "train", config.references_per_prompt), {}
        heldout = _examples(config, "validation", 1)
    before = heldout_sft_loss(load_causal_lm(base), load_tokenizer(base), heldout, config.train.batch_size,
                              config.train.max_length)
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": base, "heldout": heldout}
    dataset = ray.data.from_items(rows)
    result = fit(sft_loop, loop_config, dataset, config, config.scaling, NAME, config.resume_from)
    checkpoint_dir = result.checkpoint.path
    model_dir = export_model(checkpoint_dir, os.path.join(config.output_dir, "model"))
    registry = lineage_for(config)
    parent = register_input_checkpoint(registry, str(given))
    metrics = {"heldout_loss_before": round(before, 4), "heldout_loss": round(result.metrics["heldout_loss"], 4),
               "train_loss": round(result.metrics["train_loss"], 4), "steps": result.metrics["step"], **data_figures}
    definition = lineage_definition(config, ("data", "eval_data"))
    artifact = registry.register("model", f"sft-seed-{config.seed}", directory_digest(model_dir),
                                 parents=(parent,), config=definition, metrics=metrics, uri=model_dir)
    return {"model_dir": model_dir, "sft_model_id": artifact.id, "checkpoint": checkpoint_dir, **metrics,
            "epochs": result.metrics["epoch"] + 1, "num_workers": config.scaling.num_workers,
            "timing/sft": round(time.perf_counter() - started, 2)}


def run(config: SFTConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
