"""`rlhf-ray train-rm`: a Bradley–Terry reward model on curated preference pairs (Ray Train), evaluated on
held-out pairs against the world's hidden truth (simulation only): accuracy, calibration, length bias.

`role: judge` trains a judge instead of a reward: the same model on the judge set's pairs (annotator labels on
validation prompts), registered in lineage as a `judge-model`; it judges sweeps and gates, never trains a policy."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from actors.runtime import ensure_ray
from actors.train_loops import reward_model_loop
from jobs.common import add_config_arguments, resolve_config
from jobs.training import ScalingSection, export_model, fit, preference_lineage, read_pairs
from rlhf_ray.annotation.pairs import PREFERENCE
from rlhf_ray.config import JobConfig
from rlhf_ray.contracts import RUBRIC_CRITERIA
from rlhf_ray.inputs.world import WorldConfig, truth_pairs
from rlhf_ray.lineage.jobs import directory_digest
from rlhf_ray.models import resolve_model_path
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.training.config import TrainSection
from rlhf_ray.training.reward_model import CONFIG_FILE, DEFAULT_OBJECTIVES, check_objective_weights

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


class TrainRMConfig(JobConfig):
    model_path: str | None = Field(None, description="local HF checkpoint for the backbone (an SFT model is typical)")
    pairs: str | None = Field(None, description="output_dir of `rlhf-ray curate`, or a folder of pair Parquet files")
    output_dir: str = "runs/rm"
    world: WorldConfig = WorldConfig()
    heldout_pairs_per_prompt: int = Field(6, ge=1, description="truth-labelled pairs per held-out prompt")
    train: RewardTrainSection = RewardTrainSection()
    scaling: ScalingSection = ScalingSection()
    resume_from: str | None = None
    role: Literal["reward", "judge"] = Field("reward", description="reward: the policy's reward model; judge: a "
                                             "judge of policies (sweeps, gates), trained on the judge set")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="backbone checkpoint directory (sets model_path)")
    parser.add_argument("--pairs", help="curate output or pairs folder (sets pairs)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(TrainRMConfig, args, {"model": "model_path", "pairs": "pairs", "out": "output_dir"}))


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
    base = str(resolve_model_path(config.model_path))
    pairs_dir, curate_report = locate_pairs(config.pairs)
    heldout = truth_pairs(config.world, config.seed, config.heldout_pairs_per_prompt, "validation")
    ensure_ray(config.ray)
    dataset = read_pairs(pairs_dir, config.train.objectives)
    loop_config = {**config.train.model_dump(), "seed": config.seed, "model_path": base, "heldout": heldout}
    result = fit(reward_model_loop, loop_config, dataset, config, config.scaling, NAME, config.resume_from)
    model_dir = export_model(result.checkpoint.path, os.path.join(config.output_dir, "reward_model"))
    _store_normalization(model_dir, result.metrics)
    registry, parents = preference_lineage(config, curate_report, base)
    evaluation = {k.removeprefix("heldout_"): v for k, v in result.metrics.items() if k.startswith("heldout_")}
    settings = config.model_dump(mode="json", include={"train", "seed"})
    kind, name = ("judge-model", "judge") if config.role == "judge" else ("reward-model", "rm")
    artifact = registry.register(kind, f"{name}-seed-{config.seed}", directory_digest(model_dir),
                                 parents=parents, config=settings, metrics=evaluation, uri=model_dir)
    Path(config.output_dir, "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True))
    return {"reward_model_dir": model_dir, "reward_model_id": artifact.id, "checkpoint": result.checkpoint.path,
            "steps": result.metrics["step"], "epochs": result.metrics["epoch"] + 1,
            "train_accuracy": round(result.metrics["train_accuracy"], 4),
            "train_pairs_per_s": round(result.metrics["train_pairs_per_s"], 1),
            **{f"heldout_{k}": v for k, v in evaluation.items()}, "num_workers": config.scaling.num_workers,
            "timing/train_rm": round(time.perf_counter() - started, 2)}


def _store_normalization(model_dir: str, metrics: dict[str, Any]) -> None:
    """Save μ, σ of held-out rewards with the model so r̂ = (r − μ)/σ is comparable across versions."""
    path = Path(model_dir) / CONFIG_FILE
    settings = json.loads(path.read_text())
    settings.update(mean=metrics["heldout_reward_mean"], std=max(1e-6, metrics["heldout_reward_std"]))
    path.write_text(json.dumps(settings, indent=2))


def run(config: TrainRMConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = train_reward_model(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
