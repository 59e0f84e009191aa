"""Throughput of `rlhf-ray simulate`: rows/s writing feedback shards through Ray tasks.

    python benchmarks/simulate.py --rows 200000 --rows-per-shard 20000

Prints one JSON line. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile

from jobs.simulate import SimulateConfig, generate
from rlhf_ray.config import RayConfig, WandbConfig
from rlhf_ray.sim import ShardConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-shard", type=int, default=20_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        config = SimulateConfig(
            output_dir=out,
            shards=ShardConfig(rows=args.rows, rows_per_shard=args.rows_per_shard),
            ray=RayConfig(num_cpus=args.num_cpus, log_to_driver=False),
            wandb=WandbConfig(mode="disabled"),
        )
        figures = generate(config)
    print(json.dumps({
        "benchmark": "simulate",
        "rows": figures["rows"],
        "shards": figures["shards"],
        "seconds": figures["timing/simulate"],
        "rows_per_s": figures["rows_per_s"],
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "num_cpus": args.num_cpus,
    }))


if __name__ == "__main__":
    main()
