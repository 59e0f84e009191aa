"""`rlhf-ray curate` end to end at scale: items/s and Dawid–Skene iterations on the simulated world.

    python benchmarks/curate.py --items 100000 --labels-per-item 5

Simulates pairwise feedback (`--items` items × `--labels-per-item` annotators), ingests it, then times the
curate job (Ray Data read, consensus, agreement, health, adjudication, pairs, writes). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from actors.ingest import IngestConfig, ingest
from jobs.curate import CurateConfig, run_curate
from jobs.simulate import SimulateConfig, generate
from rlhf_ray.config import RayConfig, WandbConfig
from rlhf_ray.sim import PopulationConfig, ShardConfig, SignalMix, WorldConfig

PAIRWISE_ONLY = SignalMix(pairwise=1.0, ranking=0.0, rating=0.0, correction=0.0, implicit=0.0, safety_flag=0.0,
                          task_success=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--labels-per-item", type=int, default=5)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RLHF_RAY_PSEUDONYM_KEY", "cd" * 32)
    ray_config = RayConfig(num_cpus=args.num_cpus, log_to_driver=False)
    quiet = WandbConfig(mode="disabled")
    rows = args.items * args.labels_per_item
    with tempfile.TemporaryDirectory() as work:
        world = WorldConfig(labels_per_item=args.labels_per_item,
                            population=PopulationConfig(num_annotators=args.annotators))
        shards = ShardConfig(rows=rows, rows_per_shard=50_000, signal_mix=PAIRWISE_ONLY, malformed_fraction=0.0,
                             duplicate_fraction=0.0, pii_fraction=0.0)
        generate(SimulateConfig(output_dir=f"{work}/feedback", world=world, shards=shards, ray=ray_config,
                                wandb=quiet))
        ingest(IngestConfig(input=f"{work}/feedback/shards", output_dir=f"{work}/dataset", ray=ray_config,
                            wandb=quiet))
        started = time.perf_counter()
        summary = run_curate(CurateConfig(input=f"{work}/dataset", gold=f"{work}/feedback/gold/gold_items.jsonl",
                                          output_dir=f"{work}/curated", ray=ray_config, wandb=quiet))
        seconds = time.perf_counter() - started
        report = json.loads(Path(summary["report"]).read_text())["pairwise"]
    print(json.dumps({
        "benchmark": "curate", "items": report["items"], "labels": report["labels"], "seconds": round(seconds, 2),
        "items_per_s": round(report["items"] / seconds, 1), "labels_per_s": round(report["labels"] / seconds, 1),
        "dawid_skene_iterations": report["dawid_skene_iterations"],
        "dawid_skene_converged": report["dawid_skene_converged"], "pairs": summary["pairs"],
        "estimated_label_accuracy": summary["estimated_label_accuracy"], "fleiss_kappa": summary["fleiss_kappa"],
        "adjudication_queue": summary["adjudication_queue"], "num_cpus": args.num_cpus,
    }))


if __name__ == "__main__":
    main()
