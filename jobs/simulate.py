"""`rlhf-ray simulate`: write the synthetic world's feedback shards, one Ray task per shard."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from tqdm import tqdm

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.shard_sets import SHARD_MANIFEST
from rlhf_ray.lineage.jobs import lineage_for, lineage_root
from rlhf_ray.sim import (
    ShardConfig,
    ShardResult,
    ShardSpec,
    World,
    WorldConfig,
    leakage_figures,
    leakage_report,
    plan_judge_shards,
    plan_shards,
    write_shard,
)
from rlhf_ray.sim.leakage import describe as describe_leakage
from rlhf_ray.sim.shards import JUDGE_DIR
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "simulate"
HELP = "write feedback shards (Parquet + JSONL, with malformed rows and planted PII) from the synthetic world"
JUDGE_FOLDER = f"{JUDGE_DIR}/"


class SimulateConfig(JobConfig):
    output_dir: str = "runs/simulate"
    world: WorldConfig = WorldConfig()
    shards: ShardConfig = ShardConfig()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved by each shard-writing task")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory or filesystem URI (sets output_dir)")
    parser.add_argument("--rows", type=int, help="total rows to write (sets shards.rows)")
    parser.add_argument("--seed", type=int, help="world seed (sets seed)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = resolve_config(SimulateConfig, args, {"out": "output_dir", "rows": "shards.rows", "seed": "seed"})
    return run(config)


def pinned_world(world: WorldConfig, now: datetime) -> WorldConfig:
    """The world with its clock pinned: an unset `start_time` becomes `now − span_days` (whole seconds), so the
    simulated feedback ends as the run starts and its ingest latency measures the pipeline, not a calendar."""
    if world.start_time is not None:
        return world
    return world.model_copy(update={"start_time": now.replace(microsecond=0) - timedelta(days=world.span_days)})


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def _write_shards(root: StorageRoot, world: World, config: SimulateConfig, plan: list[ShardSpec]) -> list[ShardResult]:
    import ray

    ensure_ray(config.ray)
    task = ray.remote(num_cpus=config.task_cpus)(write_shard)
    pending = {task.remote(root, world, config.shards, spec): position for position, spec in enumerate(plan)}
    results: dict[int, ShardResult] = {}
    with tqdm(total=sum(s.rows for s in plan), desc="simulate", unit="rows", file=sys.stderr) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            position = pending.pop(done[0])
            results[position] = ray.get(done[0])
            bar.update(plan[position].rows)
    return [results[position] for position in range(len(plan))]


def _remove_stale_shards(root: StorageRoot, plan: list[ShardSpec], folder: str) -> None:
    """A rerun with fewer shards must not leave the previous run's extra files behind."""
    wanted = {root.join(spec.relative_path) for spec in plan}
    for path in root.list_files(folder):
        if path not in wanted:
            root.fs.delete_file(path)


def _commit_set(root: StorageRoot, world: World, config: SimulateConfig, plan: list[ShardSpec],
                results: list[ShardResult], folder: str, name: str) -> dict[str, Any]:
    """Ground truth and gold of one shard set under `folder` ("" or "judge/"), then its manifest last: the manifest
    commits the set. Returns the set's counts and artifact id."""
    _remove_stale_shards(root, plan, f"{folder}shards")
    truth = {
        "malformed": [r for res in results for r in res.malformed],
        "duplicates": [r for res in results for r in res.duplicates],
        "planted_pii": [r for res in results for r in res.planted_pii],
        "annotators": [vars(a) for a in world.annotators],
    }
    truth["items"] = [r for res in results for r in res.items]
    for kind, records in truth.items():
        root.write_bytes_atomic(_jsonl(records), f"{folder}ground_truth/{kind}.jsonl")
    gold = [g for res in results for g in res.gold]
    root.write_bytes_atomic(_jsonl(gold), f"{folder}gold/gold_items.jsonl")

    content_digest = digest_files(root, [root.join(spec.relative_path) for spec in plan])
    counts = {
        "rows": sum(r.rows for r in results),
        "malformed_rows": len(truth["malformed"]),
        "duplicate_rows": len(truth["duplicates"]),
        "planted_pii": len(truth["planted_pii"]),
        "gold_items": len(gold),
    }
    definition = {"seed": config.seed, "world": config.world.model_dump(mode="json"),
                  "shards": config.shards.model_dump(mode="json")}
    artifact = lineage_for(config).register("shards", name, content_digest, config=definition, metrics=counts,
                                            uri=root.join(folder.rstrip("/")) if folder else config.output_dir)
    manifest = {
        "artifact_id": artifact.id,
        "lineage_root": lineage_root(config),
        "content_digest": content_digest,
        **definition,
        **counts,
        "files": [{"path": s.relative_path.removeprefix(folder), "signal_type": s.signal_type,
                   "format": s.fmt, "rows": r.rows, "bytes": r.bytes} for s, r in zip(plan, results, strict=True)],
    }
    root.write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(), f"{folder}{SHARD_MANIFEST}")
    return {**counts, "artifact_id": artifact.id, "manifest": root.join(f"{folder}{SHARD_MANIFEST}")}


def generate(config: SimulateConfig) -> dict[str, Any]:
    """Write every shard, then each set's ground truth, then its manifest last: the manifest commits the set.
    The policy's feedback (train prompts) and the judge set (annotator pairs on validation prompts) are two sets.
    The world's clock is pinned first (`pinned_world`): the manifests' `world.start_time` and the summary's
    `world_start_time` say where it started, so `world.start_time=<it>` reproduces the shards byte for byte."""
    started = time.perf_counter()
    root = StorageRoot.from_uri(config.output_dir)
    for folder in ("", JUDGE_FOLDER):
        if root.exists(f"{folder}{SHARD_MANIFEST}"):
            root.fs.delete_file(root.join(f"{folder}{SHARD_MANIFEST}"))
    config = config.model_copy(update={"world": pinned_world(config.world, datetime.now(UTC))})
    world = World(config.world, config.seed)
    leakage = leakage_report(world)
    print(f"[simulate] {describe_leakage(leakage)}", file=sys.stderr)
    hidden = world.hidden_utility.summary()  # what this seed drew: for the study's report, never a training input
    print(f"[simulate] hidden utility (seed {config.seed}): {json.dumps(hidden['weights'])}", file=sys.stderr)
    plan, judge_plan = plan_shards(config.shards), plan_judge_shards(config.shards)
    results = _write_shards(root, world, config, plan + judge_plan)
    counts = _commit_set(root, world, config, plan, results[: len(plan)], "", f"world-seed-{config.seed}")
    judge = _commit_set(root, world, config, judge_plan, results[len(plan):], JUDGE_FOLDER,
                        f"world-seed-{config.seed}-judge")
    seconds = time.perf_counter() - started
    return {
        "feedback_dir": config.output_dir,
        "manifest": counts.pop("manifest"),
        "shards_id": counts.pop("artifact_id"),
        "shards": len(plan),
        **counts,
        "judge_dir": root.join(JUDGE_FOLDER.rstrip("/")),
        "judge_shards_id": judge["artifact_id"],
        "judge_rows": judge["rows"],
        "rows_per_s": round((counts["rows"] + judge["rows"]) / seconds, 1),
        "timing/simulate": round(seconds, 2),
        "world_start_time": config.world.start_time.isoformat(),
        "leakage": leakage,
        "hidden_utility": hidden,
    }


def run(config: SimulateConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = generate(config)
    sink.log({**{k: v for k, v in figures.items() if k not in ("leakage", "hidden_utility")},
              **leakage_figures(figures["leakage"])})
    return sink.close(figures)
