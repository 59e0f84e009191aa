"""`rlhf-ray drift`: has the feedback (or the reward model) moved? Reference vs current, with alerts.

Compares two committed dataset versions (ingest outputs; only the columns it needs are read, with pyarrow: a
few small columns, where Ray Data's start-up would cost more than the read):

    prompt_length, prompt_topic, prompt_segment, prompt_tokens    the prompt distribution (PSI; KS on length)
    signal_mix                                                    rows per signal type
    label_pairwise_choice, label_thumbs                           label balance (largest share shift)

and, given two reward models, `reward_probe`: their rewards on a fixed probe set (the world's held-out prompts
with reference answers, a pure function of the seed), PSI, KS and the mean shift in reference σ. Alert
thresholds are config (`thresholds`, `rlhf_ray.evaluation.drift.DriftThresholds`). Writes
`<output_dir>/drift.json` and logs a `drift` event on the current dataset's lineage record.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.algos.penalties import RulePenaltySettings
from rlhf_ray.config import JobConfig
from rlhf_ray.contracts import SignalType
from rlhf_ray.dataplane.versions import curated_folder, read_manifest, resolve_version
from rlhf_ray.evaluation.drift import (
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    categorical_drift,
    label_counts,
    numeric_drift,
)
from rlhf_ray.inputs.world import WorldConfig, reference_examples
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.models import load_tokenizer, resolve_model_path
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry import StageTimer
from rlhf_ray.telemetry.sink import sink_for

NAME = "drift"
HELP = "drift between two dataset versions (prompts, signal mix, label balance) and two reward models (probe set)"
DRIFT_FILE = "drift.json"
PROMPT_COLUMNS = ["prompt", "topic", "segment"]
LABEL_COLUMNS = {SignalType.PAIRWISE.value: ["choice"], SignalType.RATING.value: ["scale", "scores"]}
SIDES = ("reference", "current")


class DriftError(ValueError):
    """The job cannot run: no datasets and no reward models to compare."""


class DriftConfig(JobConfig):
    reference: str | None = Field(None, description="dataset root (ingest output) of the reference period")
    reference_version: str | None = Field(None, description="its version (default: LATEST)")
    current: str | None = Field(None, description="dataset root of the current period (default: the reference root)")
    current_version: str | None = Field(None, description="its version (default: LATEST)")
    tokenizer_path: str | None = Field(None, description="model directory whose tokenizer makes the prompt-token "
                                       "histogram; null: lower-case words")
    top_tokens: int = Field(50, ge=1, description="tokens binned individually (the reference's most frequent); "
                            "the rest pool as one bin")
    reference_rm: str | None = Field(None, description="reward model of the reference (probe-set reward drift)")
    current_rm: str | None = Field(None, description="reward model to compare with it")
    probe_per_prompt: int = Field(2, ge=1, description="reference answers per held-out prompt in the probe set")
    rm_num_cpus: float = Field(0.25, ge=0)
    world: WorldConfig = WorldConfig()
    output_dir: str = "runs/drift"
    thresholds: DriftThresholds = DriftThresholds()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", help="reference dataset root (sets reference)")
    parser.add_argument("--current", help="current dataset root (sets current)")
    parser.add_argument("--reference-rm", dest="reference_rm", help="reference reward model (sets reference_rm)")
    parser.add_argument("--current-rm", dest="current_rm", help="current reward model (sets current_rm)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"reference": "reference", "current": "current", "reference_rm": "reference_rm",
             "current_rm": "current_rm", "out": "output_dir"}
    return run(resolve_config(DriftConfig, args, flags))


def _read(root: StorageRoot, version: str) -> dict[str, pa.Table]:
    """Per signal type, the prompt columns (and the label columns of pairwise and rating rows)."""
    tables = {}
    for signal_type in SignalType:
        files = root.list_files(curated_folder(version, signal_type.value), suffixes=(".parquet",))
        if files:
            columns = PROMPT_COLUMNS + LABEL_COLUMNS.get(signal_type.value, [])
            tables[signal_type.value] = pa.concat_tables(pq.read_table(f, columns=columns, filesystem=root.fs)
                                                         for f in files)
    return tables


def _tokens(prompts: list[str], tokenizer: Any) -> list[str]:
    if tokenizer is None:
        return [word for prompt in prompts for word in prompt.lower().split()]
    return [str(token) for prompt in prompts for token in tokenizer(prompt, add_special_tokens=False)["input_ids"]]


def _labels(tables: dict[str, pa.Table]) -> dict[str, Counter[str]]:
    labels = {"label_pairwise_choice": Counter(tables[SignalType.PAIRWISE.value].column("choice").to_pylist())
              if SignalType.PAIRWISE.value in tables else Counter()}
    thumbs: Counter[str] = Counter()
    if SignalType.RATING.value in tables:
        rating = tables[SignalType.RATING.value]
        for scale, scores in zip(rating.column("scale").to_pylist(), rating.column("scores").to_pylist(), strict=True):
            if scale == "thumbs":
                thumbs.update("up" if s["score"] >= 0.5 else "down" for s in scores)
    labels["label_thumbs"] = thumbs
    return labels


def dataset_drift(reference: dict[str, pa.Table], current: dict[str, pa.Table], config: DriftConfig,
                  tokenizer: Any) -> list[FeatureDrift]:
    """The prompt, signal-mix and label-balance features of the module docstring."""
    t = config.thresholds
    prompts = {side: pa.concat_tables([tbl.select(PROMPT_COLUMNS) for tbl in tables.values()])
               for side, tables in zip(SIDES, (reference, current), strict=True)}
    text = {side: prompts[side].column("prompt").to_pylist() for side in SIDES}
    features = [numeric_drift("prompt_length", *[[len(p.split()) for p in text[s]] for s in SIDES], t)]
    for column in ("topic", "segment"):
        counts = [label_counts(prompts[s].column(column).fill_null("unknown").to_pylist()) for s in SIDES]
        features.append(categorical_drift(f"prompt_{column}", *counts, t))
    tokens = {side: _tokens(text[side], tokenizer) for side in SIDES}
    top = [token for token, _ in Counter(tokens["reference"]).most_common(config.top_tokens)]
    features.append(categorical_drift("prompt_tokens", *[label_counts(tokens[s], top) for s in SIDES], t))
    mix = [Counter({name: table.num_rows for name, table in tables.items()}) for tables in (reference, current)]
    features.append(categorical_drift("signal_mix", *mix, t))
    labels = [_labels(tables) for tables in (reference, current)]
    for name in labels[0]:
        if labels[0][name] and labels[1][name]:
            features.append(categorical_drift(name, labels[0][name], labels[1][name], t, balance=True))
    return features


def probe_rewards(config: DriftConfig) -> dict[str, list[float]]:
    """Both reward models' normalised rewards on the probe set, one scorer actor each, in parallel."""
    import ray

    from actors.scoring import RewardScorer

    probe = reference_examples(config.world, config.seed, "validation", config.probe_per_prompt)
    if not probe:
        raise DriftError("the world has no held-out prompts for the probe set (world.validation_fraction is 0)")
    off = RulePenaltySettings(verbosity_coef=0.0, canned_coef=0.0, repetition_coef=0.0)
    scorers = {side: ray.remote(RewardScorer).options(num_cpus=config.rm_num_cpus).remote(
        str(resolve_model_path(path)), off) for side, path in zip(SIDES, (config.reference_rm, config.current_rm),
                                                                   strict=True)}
    try:
        scores = ray.get([scorers[side].score.remote([e["prompt"] for e in probe], [e["response"] for e in probe])
                          for side in SIDES])
    finally:
        for scorer in scorers.values():
            ray.kill(scorer)
    return {side: score["rm"] for side, score in zip(SIDES, scores, strict=True)}


def _datasets(config: DriftConfig) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, pa.Table]]]:
    roots = {"reference": config.reference, "current": config.current or config.reference}
    versions = {"reference": config.reference_version, "current": config.current_version}
    where, tables = {}, {}
    for side in SIDES:
        root = StorageRoot.from_uri(roots[side])
        version = resolve_version(root, versions[side])
        manifest = read_manifest(root, version)
        where[side] = {"root": roots[side], "version": version, "dataset_id": manifest.get("dataset_id"),
                       "lineage_root": manifest.get("lineage_root")}
        tables[side] = _read(root, version)
    return where, tables


def detect(config: DriftConfig, sink: Any = None) -> dict[str, Any]:
    """Compute every feature the inputs allow; write drift.json, the lineage event, and log the figures."""
    if not config.reference and not (config.reference_rm and config.current_rm):
        raise DriftError("drift needs --reference DATASET_ROOT (and --current, or versions of one root) and/or "
                         "--reference-rm DIR --current-rm DIR")
    if bool(config.reference_rm) != bool(config.current_rm):
        raise DriftError("reward drift needs both --reference-rm and --current-rm; got only one")
    timer, features, where = StageTimer(), [], {}
    ensure_ray(config.ray)  # a Ray job like every other: its figures reach Prometheus through the node's agent
    if config.reference:
        with timer.stage("read"):
            where, tables = _datasets(config)
        tokenizer = load_tokenizer(resolve_model_path(config.tokenizer_path)) if config.tokenizer_path else None
        with timer.stage("datasets"):
            features += dataset_drift(tables["reference"], tables["current"], config, tokenizer)
    if config.reference_rm:
        with timer.stage("probe"):
            rewards = probe_rewards(config)
        features.append(numeric_drift("reward_probe", rewards["reference"], rewards["current"], config.thresholds,
                                      mean_shift=True))
    report = DriftReport(tuple(features), config.thresholds.model_dump())
    payload = {**report.to_dict(), "inputs": where, "reward_models": {"reference": config.reference_rm,
                                                                        "current": config.current_rm}}
    event = None
    current = where.get("current", {})
    if current.get("dataset_id") and current.get("lineage_root"):
        registry = LineageRegistry(current["lineage_root"])
        if registry.has(current["dataset_id"]):
            event = registry.record_event(NAME, current["dataset_id"], payload).seq
    path = StorageRoot.from_uri(config.output_dir).write_bytes_atomic(
        json.dumps({**payload, "lineage_event": event}, indent=2, sort_keys=True).encode(), DRIFT_FILE)
    figures = {**report.figures(), **timer.figures()}
    if sink is not None:
        sink.log(figures)
    return {"alerts": report.alerts, "features": len(features), "report": path, "lineage_event": event, **figures}


def run(config: DriftConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    return sink.close(detect(config, sink))
