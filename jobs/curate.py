"""`rlhf-ray curate`: annotation QA over a curated dataset version → weighted preference pairs.

Reads the version with Ray Data, runs consensus (Dawid–Skene with gold clamped, or majority vote),
agreement (Fleiss κ, Krippendorff α per guideline version, topic and batch; beside the pairwise κ, the κ the
annotators' gold accuracies predict, `expected_fleiss_kappa`), annotator health,
the adjudication queue and active-learning picks, and writes under `output_dir`::

    pairs/<pairs version>/part-00000.parquet    prompt, chosen, rejected, weight, source, source_signal_ids
    adjudication/<pairs version>.parquet        items for an expert, with every label and rationale
    active_learning/<pairs version>.parquet     what to label next, by disagreement (+ reward-model
                                                uncertainty with `active.reward_models`), per topic × segment
    phrases/<pairs version>.json, phrases/LATEST  canned phrases learned from rejected vs chosen answers
                                                (`rlhf_ray.algos.phrases`), for PPO's `reward.canned_phrases_file`
    annotators.parquet, agreement.json          annotator table (pseudonymous ids) and the QA report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.algos.phrases import LATEST, PhraseSettings, learn_canned_phrases, phrase_list_json
from rlhf_ray.annotation.active import ActiveSettings, reward_model_scorers
from rlhf_ray.annotation.answers import read_answers
from rlhf_ray.annotation.curate import CurateSettings, curate
from rlhf_ray.annotation.health import HealthSettings
from rlhf_ray.annotation.pairs import PairSettings
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.contracts import SignalType
from rlhf_ray.dataplane.versions import curated_folder, read_manifest, resolve_version
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.forward import ForwardIndex, pair_entries
from rlhf_ray.lineage.jobs import lineage_root
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for

NAME = "curate"
HELP = "annotation QA (agreement, Dawid–Skene consensus, annotator health, adjudication) → preference pairs"


class CurateError(ValueError):
    """The dataset or an answer file cannot be used."""


class ConsensusSection(StrictModel):
    method: Literal["dawid_skene", "majority"] = "dawid_skene"
    max_iter: int = Field(200, ge=1)
    tol: float = Field(1e-4, gt=0, description="stop when no item posterior moves more than this")
    smoothing: float = Field(0.01, ge=0, description="pseudo-count added to every confusion-matrix cell")


class AdjudicationSection(StrictModel):
    min_confidence: float = Field(0.7, ge=0, le=1, description="queue items whose consensus is less sure")
    kappa_floor: float = Field(0.1, description="queue every item of a batch whose Fleiss κ is below this")
    batch_by: tuple[str, ...] = ("guideline_version", "topic")
    resolved: str | None = Field(None, description="JSONL of resolved adjudications: {item_id, answer}")


class HealthSection(StrictModel):
    early_positions: int = Field(10, ge=1)
    late_from_position: int = Field(30, ge=1)
    fatigue_drop: float = 0.1
    drift_distance: float = 0.25
    spammer_accuracy: float = Field(0.58, description="estimated accuracy under which an annotator is a spammer")
    session_cap: int = Field(60, ge=1, description="the longest session annotators should work")


class PairsSection(StrictModel):
    rubric_min_gap: float = 1.0
    rating_min_gap: float = 0.5
    correction_weight: float = Field(0.9, ge=0, le=1)
    rubric_weights: dict[str, float] = Field(default_factory=dict)
    criterion_pairs: bool = Field(True, description="also emit per-rubric-criterion pairs (objective = criterion)")


class ActiveSection(StrictModel):
    budget: int = Field(200, ge=0)
    disagreement_weight: float = 1.0
    uncertainty_weight: float = 1.0
    reward_models: list[str] = Field(default_factory=list, description="reward model dirs (`rlhf-ray train-rm`) "
                                     "whose uncertainty joins the disagreement: one gives its margin "
                                     "exp(−|r_a − r_b|), several an ensemble's spread of margins")

    @field_validator("reward_models", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PhrasesSection(StrictModel):
    """The canned-phrase list learned from the pairs (`rlhf_ray.algos.phrases.learn_canned_phrases`)."""

    enabled: bool = True
    ngram_min: int = Field(2, ge=1)
    ngram_max: int = Field(4, ge=1)
    top_k: int = Field(30, ge=1, description="phrases kept, highest z first")
    min_z: float = Field(2.0, description="least log-odds z (rejected vs chosen) of a phrase")
    min_doc_freq: int = Field(5, ge=1, description="least rejected responses a phrase occurs in")
    absorb: float = Field(0.8, gt=0, le=1, description="drop a phrase inside a longer one holding this share of it")
    prior_scale: float = Field(0.1, gt=0, description="Dirichlet prior: this times the pooled counts")


class CurateConfig(JobConfig):
    input: str | None = Field(None, description="dataset root written by `rlhf-ray ingest`")
    version: str | None = Field(None, description="dataset version (default: LATEST)")
    gold: str | None = Field(None, description="JSONL answer key of gold questions: {item_id, answer}")
    output_dir: str = "runs/curate"
    consensus: ConsensusSection = ConsensusSection()
    adjudication: AdjudicationSection = AdjudicationSection()
    health: HealthSection = HealthSection()
    pairs: PairsSection = PairsSection()
    active: ActiveSection = ActiveSection()
    phrases: PhrasesSection = PhrasesSection()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="dataset root from ingest (sets input)")
    parser.add_argument("--gold", help="gold answer key JSONL (sets gold)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(CurateConfig, args, {"input": "input", "gold": "gold", "out": "output_dir"}))


def settings_for(config: CurateConfig) -> CurateSettings:
    return CurateSettings(
        consensus=config.consensus.method, max_iter=config.consensus.max_iter, tol=config.consensus.tol,
        smoothing=config.consensus.smoothing, min_confidence=config.adjudication.min_confidence,
        kappa_floor=config.adjudication.kappa_floor, batch_by=config.adjudication.batch_by,
        health=HealthSettings(**config.health.model_dump()),
        pairs=PairSettings(**config.pairs.model_dump()),
        active=ActiveSettings(**config.active.model_dump(exclude={"reward_models"})),
    )


def _read_version(root: StorageRoot, version: str) -> dict[str, pa.Table]:
    """Each signal type's typed table, read in parallel by Ray Data."""
    import ray

    tables = {}
    for signal_type in SignalType:
        folder = curated_folder(version, signal_type.value)
        if root.list_files(folder, suffixes=(".parquet",)):
            dataset = ray.data.read_parquet(root.join(folder), filesystem=root.fs)
            tables[signal_type.value] = pa.concat_tables(ray.get(dataset.to_arrow_refs()))
    return tables


def pairs_version(pairs: pa.Table) -> str:
    """`pairs-` + sha256 over (pair id, weight) in pair-id order: same QA outcome, same version."""
    digest = hashlib.sha256()
    for pid, weight in zip(pairs.column("pair_id").to_pylist(), pairs.column("weight").to_pylist(), strict=True):
        digest.update(f"{pid}:{weight!r}\n".encode())
    return f"pairs-{digest.hexdigest()[:16]}"


def run_curate(config: CurateConfig) -> dict[str, Any]:
    import ray

    started = time.perf_counter()
    if not config.input:
        raise CurateError("input is not set: pass --input DATASET_ROOT (the output_dir of `rlhf-ray ingest`)")
    source = StorageRoot.from_uri(config.input)
    version = resolve_version(source, config.version)
    answers = {**read_answers(config.gold, "gold"), **read_answers(config.adjudication.resolved, "adjudication")}
    rewards = reward_model_scorers(config.active.reward_models)  # a missing model fails before any Ray work
    ensure_ray(config.ray)
    tables = _read_version(source, version)
    result = curate(tables, answers, settings_for(config), rewards)
    out = StorageRoot.from_uri(config.output_dir)
    pairs_id = pairs_version(result.pairs)
    ray.data.from_arrow(result.pairs).repartition(1).write_parquet(out.join("pairs", pairs_id), filesystem=out.fs)
    out.write_parquet_atomic(result.adjudication, "adjudication", f"{pairs_id}.parquet")
    out.write_parquet_atomic(result.active, "active_learning", f"{pairs_id}.parquet")
    out.write_parquet_atomic(result.annotators, "annotators.parquet")
    dataset = read_manifest(source, version)
    registry_root = lineage_root(config, dataset.get("lineage_root"))
    artifact = LineageRegistry(registry_root).register(
        "pairs", pairs_id, pairs_id.removeprefix("pairs-"), parents=(dataset["dataset_id"],),
        config={"settings": config.model_dump(mode="json", include={"consensus", "adjudication", "pairs"})},
        metrics={"pairs": result.pairs.num_rows, "adjudication_queue": result.adjudication.num_rows},
        uri=out.join("pairs", pairs_id),
    )
    ForwardIndex(registry_root).write(artifact.id, pair_entries(result.pairs, tables))  # signal → pair, by subject
    phrases = _learn_phrases(config, result.pairs, out, LineageRegistry(registry_root), artifact.id, pairs_id)
    report = {**result.report, "dataset_version": version, "pairs_version": pairs_id, "pairs_id": artifact.id,
              "lineage_root": registry_root, "gold_answers": len(answers), **phrases}
    out.write_bytes_atomic(json.dumps(report, indent=2, sort_keys=True, default=str).encode(), "agreement.json")
    pairwise = result.report.get("pairwise", {})
    agreement = result.report["agreement"].get("pairwise", {}).get("overall", {})
    return {
        "pairs": result.pairs.num_rows, "pairs_by_source": result.report["pairs_by_source"],
        "pairs_by_objective": result.report["pairs_by_objective"],
        "pairs_dir": out.join("pairs", pairs_id), "pairs_id": artifact.id, "pairs_version": pairs_id,
        "consensus_method": config.consensus.method, "fleiss_kappa": agreement.get("fleiss_kappa"),
        "expected_fleiss_kappa": pairwise.get("expected_fleiss_kappa"),
        "expected_fleiss_kappa_gold_labels": pairwise.get("gold_labels", 0),
        "krippendorff_alpha": agreement.get("krippendorff_alpha"),
        "estimated_label_accuracy": pairwise.get("estimated_label_accuracy"),
        "dawid_skene_iterations": pairwise.get("dawid_skene_iterations"),
        "adjudication_queue": result.adjudication.num_rows, "active_learning_picks": result.active.num_rows,
        "active_learning_uncertainty": result.report["active_learning_uncertainty"],
        "flagged_annotators": len(result.report["flagged_annotators"]),
        **{k: v for k, v in phrases.items() if k != "top_phrases"},
        "report": out.join("agreement.json"), "timing/curate": round(time.perf_counter() - started, 2),
    }


def _learn_phrases(config: CurateConfig, pairs: pa.Table, out: StorageRoot, registry: LineageRegistry,
                   pairs_artifact: str, pairs_id: str) -> dict[str, Any]:
    """Learn the canned-phrase list from the pairs, write it as `phrases/<pairs version>.json` (+ `LATEST`) and
    register it (kind `phrase-list`, parent: the pairs)."""
    if not config.phrases.enabled:
        return {}
    settings = config.phrases.model_dump(exclude={"enabled"})
    learned = learn_canned_phrases(pairs.column("rejected").to_pylist(), pairs.column("chosen").to_pylist(),
                                   PhraseSettings(**settings))
    data = phrase_list_json([p["phrase"] for p in learned])
    path = out.write_bytes_atomic(data, "phrases", f"{pairs_id}.json")
    out.write_bytes_atomic(f"{pairs_id}.json".encode(), "phrases", LATEST)
    record = registry.register("phrase-list", f"phrases-{pairs_id}", hashlib.sha256(data).hexdigest()[:16],
                               parents=(pairs_artifact,), config={"settings": settings},
                               metrics={"phrases": len(learned)}, uri=path)
    return {"phrase_list": path, "phrase_list_id": record.id, "phrases": len(learned),
            "top_phrases": [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()} for p in learned]}


def run(config: CurateConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = run_curate(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
