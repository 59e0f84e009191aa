"""`rlhf-ray train-rm`: a Bradley–Terry reward model on curated preference pairs (Ray Train), evaluated on
held-out pairs: the user's own (`--eval-pairs FILE --eval-format F`, any `rlhf-ray import` format; their labels are
the truth) or, in simulation, pairs ordered by the world's hidden utility: accuracy, calibration, length bias.
The reward normalisation r̂ = (r − μ)/σ stored with the model takes μ, σ from the training pairs.

`role: judge` trains a judge instead of a reward: the same model on the judge set's pairs (annotator labels on
validation prompts), registered in lineage as a `judge-model`; it judges sweeps and gates, never trains a policy."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from actors.runtime import ensure_ray
from actors.train_loops import reward_model_loop
from jobs.common import add_config_arguments, resolve_config
from jobs.training import ScalingSection, export_model, fit, lineage_definition, preference_lineage, read_pairs
from rlhf_ray.annotation.pairs import PREFERENCE
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.contracts import RUBRIC_CRITERIA
from rlhf_ray.inputs.formats import ImportFormatError, preference_pairs, read_import
from rlhf_ray.inputs.world import WorldConfig, truth_pairs
from rlhf_ray.lineage.jobs import directory_digest
from rlhf_ray.models import ModelOptions, load_tokenizer, prepare_checkpoint
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.training.config import TrainSection
from rlhf_ray.training.reward_model import CONFIG_FILE, DEFAULT_OBJECTIVES, RewardModel, check_objective_weights
from rlhf_ray.training.steps import evaluate_reward_model

NAME = "train-rm"
HELP = "train a Bradley–Terry reward model on preference pairs (Ray Train); held-out accuracy, ECE, length bias"


class RewardModelError(ValueError):
    """The job cannot start: no model or no pairs."""


OBJECTIVES = (PREFERENCE, *RUBRIC_CRITERIA)


class RewardTrainSection(TrainSection):
    lr: float = Field(5e-4, gt=0)
    use_pair_weights: bool = Field(True, description="weight each pair's loss by its consensus confidence")
    objectives: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_OBJECTIVES),
        description=f"reward heads and their weights in r = Σ w_k r_k; names from {', '.join(OBJECTIVES)}")

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; expected names from {list(OBJECTIVES)}")
        return check_objective_weights(value)


class HeldoutPairsSettings(StrictModel):
    """What a preference trainer (train-rm, dpo) is measured on: the user's held-out pairs (a file in an `rlhf-ray
    import` format; their labels are the truth) or, in simulation, the world's truth pairs on validation prompts."""

    world: WorldConfig = WorldConfig()
    heldout_pairs_per_prompt: int = Field(6, ge=1, description="truth-labelled pairs per held-out world prompt")
    eval_pairs: str | None = Field(None, description="held-out pairs of the user's (a file in an `rlhf-ray import` "
                                   "format): the model is measured on them instead of the world's truth pairs")
    eval_format: str | None = Field(None, description="format of eval_pairs (openai-preference, trl-preference, ...)")
    eval_field_map: dict[str, str] = Field(default_factory=dict, description="field map of eval_pairs (as --map)")


class TrainRMConfig(HeldoutPairsSettings, JobConfig):
    model_path: str | None = Field(None, description="local HF checkpoint for the backbone (an SFT model is typical)")
    model: ModelOptions = ModelOptions()
    pairs: str | None = Field(None, description="output_dir of `rlhf-ray curate`, or a folder of pair Parquet files")
    output_dir: str = "runs/rm"
    normalization_pairs: int = Field(256, ge=1, description="training pairs (a seeded sample) whose rewards give "
                                     "the stored normalisation μ, σ")
    train: RewardTrainSection = RewardTrainSection()
    scaling: ScalingSection = ScalingSection()
    resume_from: str | None = None
    role: Literal["reward", "judge"] = Field("reward", description="reward: the policy's reward model; judge: a "
                                             "judge of policies (sweeps, gates), trained on the judge set")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="backbone checkpoint directory (sets model_path)")
    parser.add_argument("--pairs", help="curate output or pairs folder (sets pairs)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    parser.add_argument("--eval-pairs", help="held-out pairs file in an import format (sets eval_pairs)")
    parser.add_argument("--eval-format", help="its format, as `rlhf-ray import --format` (sets eval_format)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(TrainRMConfig, args, {"model": "model_path", "pairs": "pairs", "out": "output_dir",
                                                    "eval_pairs": "eval_pairs", "eval_format": "eval_format"}))


def heldout_pairs(config: HeldoutPairsSettings, seed: int) -> list[dict[str, Any]]:
    """The pairs the RM is measured on, with `chosen_utility`/`rejected_utility`: the user's pairs (label = truth:
    1 for the chosen answer, 0 for the rejected, so length bias is measured within each side), else the world's."""
    if config.eval_pairs is None:
        return truth_pairs(config.world, seed, config.heldout_pairs_per_prompt, "validation")
    if not config.eval_format:
        raise RewardModelError("--eval-pairs needs --eval-format F (an `rlhf-ray import` format)")
    try:
        result = read_import(config.eval_format, config.eval_pairs, config.eval_field_map)
    except ImportFormatError as error:
        raise RewardModelError(f"eval_pairs: {error}") from None
    pairs = [{**pair, "chosen_utility": 1.0, "rejected_utility": 0.0} for pair in preference_pairs(result.rows)]
    if not pairs:
        raise RewardModelError(f"eval_pairs {config.eval_pairs!r} holds no usable pair "
                               f"({len(result.quarantine)} of {result.input_rows} records refused)")
    return pairs


def locate_pairs(path: str) -> tuple[str, dict[str, Any]]:
    """A curate output dir (its agreement.json names the pairs version) or a folder of pair files."""
    report_file = Path(path) / "agreement.json"
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        return str(Path(path) / "pairs" / report["pairs_version"]), report
    if not any(Path(path).glob("*.parquet")):
        raise RewardModelError(f"pairs {path!r} is neither a curate output (agreement.json) nor a folder of Parquet")
    return path, {}


def train_reward_model(config: TrainRMConfig) -> dict[str, Any]:

    if not config.model_path or not config.pairs:
        raise RewardModelError("train-rm needs --model DIR (backbone checkpoint) and --pairs DIR (curate output)")
    started = time.perf_counter()
    base = prepare_checkpoint(config.model_path, config.model.chat_template, config.output_dir)
    pairs_dir, curate_report = locate_pairs(config.pairs)
    heldout = heldout_pairs(config, config.seed)
    ensure_ray(config.ray)
    dataset = read_pairs(pairs_dir, config.train.objectives)
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": base, "heldout": heldout}
    result = fit(reward_model_loop, loop_config, dataset, config, config.scaling, NAME, config.resume_from)
    model_dir = export_model(result.checkpoint.path, os.path.join(config.output_dir, "reward_model"))
    normalization = _store_normalization(model_dir, _training_sample(pairs_dir, config), config)
    registry, parents = preference_lineage(config, curate_report, base)
    evaluation = {k.removeprefix("heldout_"): v for k, v in result.metrics.items() if k.startswith("heldout_")}
    settings = lineage_definition(config, ("eval_pairs",))
    kind, name = ("judge-model", "judge") if config.role == "judge" else ("reward-model", "rm")
    artifact = registry.register(kind, f"{name}-seed-{config.seed}", directory_digest(model_dir),
                                 parents=parents, config=settings, metrics=evaluation, uri=model_dir)
    Path(config.output_dir, "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True))
    return {"reward_model_dir": model_dir, "reward_model_id": artifact.id, "checkpoint": result.checkpoint.path,
            "steps": result.metrics["step"], "epochs": result.metrics["epoch"] + 1,
            "train_accuracy": round(result.metrics["train_accuracy"], 4),
            "train_pairs_per_s": round(result.metrics["train_pairs_per_s"], 1),
            **{f"heldout_{k}": v for k, v in evaluation.items()}, "num_workers": config.scaling.num_workers,
            "heldout_source": "eval_pairs" if config.eval_pairs else "world", **normalization,
            "timing/train_rm": round(time.perf_counter() - started, 2)}


def _training_sample(pairs_dir: str, config: TrainRMConfig) -> list[dict[str, Any]]:
    """A seeded sample of `normalization_pairs` training pairs of the trained objectives."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(pairs_dir, format="parquet").to_table(columns=["prompt", "chosen", "rejected", "objective"])
    table = table.filter(pc.is_in(table.column("objective"), value_set=pa.array(sorted(config.train.objectives))))
    picked = np.random.default_rng(config.seed).permutation(table.num_rows)[: config.normalization_pairs]
    return [{**row, "chosen_utility": 1.0, "rejected_utility": 0.0} for row in table.take(np.sort(picked)).to_pylist()]


def _store_normalization(model_dir: str, sample: list[dict[str, Any]], config: TrainRMConfig) -> dict[str, float]:
    """Save μ, σ of the trained model's rewards on training answers (chosen and rejected alike) with the model, so
    r̂ = (r − μ)/σ is comparable across versions without any held-out or world data."""
    model = RewardModel.load(model_dir).eval()
    report = evaluate_reward_model(model, load_tokenizer(model_dir), sample, config.train.batch_size,
                                   config.train.max_length)
    path = Path(model_dir) / CONFIG_FILE
    settings = json.loads(path.read_text())
    settings.update(mean=report["reward_mean"], std=max(1e-6, report["reward_std"]))
    path.write_text(json.dumps(settings, indent=2))
    return {"normalization_mean": settings["mean"], "normalization_std": settings["std"],
            "normalization_pairs": len(sample)}


def run(config: TrainRMConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train_reward_model(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
