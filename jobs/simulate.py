"""`rlhf-ray simulate`: write the synthetic world's feedback shards, one Ray task per shard."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from pydantic import Field
from tqdm import tqdm

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.shard_sets import SHARD_MANIFEST
from rlhf_ray.lineage.jobs import lineage_for, lineage_root
from rlhf_ray.sim import ShardConfig, ShardResult, ShardSpec, World, WorldConfig, plan_shards, write_shard
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "simulate"
HELP = "write feedback shards (Parquet + JSONL, with malformed rows and planted PII) from the synthetic world"


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


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def _write_shards(root: StorageRoot, world: World, config: SimulateConfig, plan: list[ShardSpec]) -> list[ShardResult]:
    import ray

    ensure_ray(config.ray)
    task = ray.remote(num_cpus=config.task_cpus)(write_shard)
    pending = {task.remote(root, world, config.shards, spec): spec for spec in plan}
    results: dict[int, ShardResult] = {}
    with tqdm(total=sum(s.rows for s in plan), desc="simulate", unit="rows", file=sys.stderr) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            results[spec.index] = ray.get(done[0])
            bar.update(spec.rows)
    return [results[spec.index] for spec in plan]


def _remove_stale_shards(root: StorageRoot, plan: list[ShardSpec]) -> None:
    """A rerun with fewer shards must not leave the previous run's extra files behind."""
    wanted = {root.join(spec.relative_path) for spec in plan}
    for path in root.list_files("shards"):
        if path not in wanted:
            root.fs.delete_file(path)


def generate(config: SimulateConfig) -> dict[str, Any]:
    """Write every shard, then the ground truth, then the manifest last: the manifest commits the set."""
    started = time.perf_counter()
    root = StorageRoot.from_uri(config.output_dir)
    if root.exists(SHARD_MANIFEST):
        root.fs.delete_file(root.join(SHARD_MANIFEST))
    world = World(config.world, config.seed)
    plan = plan_shards(config.shards)
    results = _write_shards(root, world, config, plan)
    _remove_stale_shards(root, plan)

    truth = {
        "malformed": [r for res in results for r in res.malformed],
        "duplicates": [r for res in results for r in res.duplicates],
        "planted_pii": [r for res in results for r in res.planted_pii],
        "annotators": [vars(a) for a in world.annotators],
    }
    truth["items"] = [r for res in results for r in res.items]
    for name, records in truth.items():
        root.write_bytes_atomic(_jsonl(records), f"ground_truth/{name}.jsonl")
    gold = [g for res in results for g in res.gold]
    root.write_bytes_atomic(_jsonl(gold), "gold/gold_items.jsonl")

    shard_paths = [root.join(spec.relative_path) for spec in plan]
    content_digest = digest_files(root, shard_paths)
    counts = {
        "rows": sum(r.rows for r in results),
        "malformed_rows": len(truth["malformed"]),
        "duplicate_rows": len(truth["duplicates"]),
        "planted_pii": len(truth["planted_pii"]),
        "gold_items": len(gold),
    }
    definition = {"seed": config.seed, "world": config.world.model_dump(mode="json"),
                  "shards": config.shards.model_dump(mode="json")}
    artifact = lineage_for(config).register(
        "shards", f"world-seed-{config.seed}", content_digest, config=definition, metrics=counts,
        uri=config.output_dir,
    )
    manifest = {
        "artifact_id": artifact.id,
        "lineage_root": lineage_root(config),
        "content_digest": content_digest,
        **definition,
        **counts,
        "files": [{"path": s.relative_path, "signal_type": s.signal_type, "format": s.fmt, "rows": r.rows,
                   "bytes": r.bytes} for s, r in zip(plan, results, strict=True)],
    }
    root.write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(), SHARD_MANIFEST)

    seconds = time.perf_counter() - started
    return {
        "feedback_dir": config.output_dir,
        "manifest": root.join(SHARD_MANIFEST),
        "shards_id": artifact.id,
        "shards": len(plan),
        **counts,
        "rows_per_s": round(counts["rows"] / seconds, 1),
        "timing/simulate": round(seconds, 2),
    }


def run(config: SimulateConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = generate(config)
    sink.log(figures)
    return sink.close(figures)
