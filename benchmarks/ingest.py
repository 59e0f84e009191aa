"""`rlhf-ray ingest` throughput against a plain single-process pyarrow pipeline doing the same work.

    python benchmarks/ingest.py --rows 1000000

Simulates the shards once (2 % planted PII, 1 % malformed rows, short texts), then times:
- `reference`: one process, no Ray: read each shard, validate + mask + pseudonymize every row with the
  same core functions, resolve duplicates, write curated Parquet per signal type and the quarantine;
- `ingest`: the real job (Ray Data on a local cluster with `--num-cpus` CPUs).
Peak memory is sampled (RSS of this process plus every Ray worker) while each runs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.ingest import IngestConfig, ingest
from jobs.simulate import SimulateConfig, generate
from rlhf_ray.config import RayConfig, WandbConfig
from rlhf_ray.dataplane.curated import to_curated_table
from rlhf_ray.dataplane.dedup import KEY_COLUMNS, resolve_duplicates
from rlhf_ray.dataplane.records import ACCEPTED, INGEST_SCHEMA, FeedbackProcessor, read_shard
from rlhf_ray.governance import PiiMasker, Pseudonymizer
from rlhf_ray.sim import ShardConfig

KEY = "ab" * 32
# one reference time for both pipelines; simulate dates its events up to its own run time, so after that
NOW = datetime.now(UTC) + timedelta(minutes=5)


class PeakMemory:
    """Samples the summed RSS of this process and all Ray worker processes every 0.2 s."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for process in psutil.process_iter(["name", "cmdline"]):
                try:
                    if process.pid != me.pid and "ray::" in " ".join(process.info["cmdline"] or []):
                        total += process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reference_pipeline(shards: Path, out: Path) -> int:
    """The same validation, masking, dedup and writes as ingest, in one process with plain pyarrow."""
    processor = FeedbackProcessor(PiiMasker(), Pseudonymizer(bytes.fromhex(KEY)), frozenset({"eu", "us", "apac"}), NOW)
    records = [processor.process(raw) for path in sorted(shards.rglob("*")) if path.is_file()
               for raw in read_shard(str(path), path.read_bytes())]
    table = pa.Table.from_pylist(records, schema=INGEST_SCHEMA)
    accepted = table.filter(pc.equal(table.column("status"), ACCEPTED))
    changed = resolve_duplicates(accepted.select(list(KEY_COLUMNS)))
    moved = set(zip(changed.column("source_file").to_pylist(), changed.column("row_number").to_pylist(), strict=True))
    keep = [(f, r) not in moved for f, r in zip(accepted.column("source_file").to_pylist(),
                                                 accepted.column("row_number").to_pylist(), strict=True)]
    accepted = accepted.filter(pa.array(keep))
    for signal_type in pc.unique(accepted.column("signal_type")).to_pylist():
        part = accepted.filter(pc.equal(accepted.column("signal_type"), signal_type))
        (out / signal_type).mkdir(parents=True)
        pq.write_table(to_curated_table(part, signal_type), out / signal_type / "part-0.parquet")
    quarantine = table.filter(pc.equal(table.column("status"), "quarantined"))
    pq.write_table(quarantine, out / "quarantine.parquet")
    return table.num_rows


def _timed(function: Callable[[], Any]) -> tuple[Any, float, int]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - started
    return result, seconds, memory.peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ["RLHF_RAY_PSEUDONYM_KEY"] = KEY
    ray_config = RayConfig(num_cpus=args.num_cpus, log_to_driver=False)
    quiet = WandbConfig(mode="disabled")
    with tempfile.TemporaryDirectory() as work:
        feedback = Path(work) / "feedback"
        shards = ShardConfig(rows=args.rows, rows_per_shard=args.rows_per_shard, pii_fraction=0.02,
                             malformed_fraction=0.01, duplicate_fraction=0.005)
        simulated = generate(SimulateConfig(output_dir=str(feedback), shards=shards, ray=ray_config, wandb=quiet))
        rows, reference_s, reference_peak = _timed(lambda: reference_pipeline(feedback / "shards", Path(work) / "ref"))
        config = IngestConfig(input=str(feedback / "shards"), output_dir=str(Path(work) / "ingest"), now=NOW,
                              ray=ray_config, wandb=quiet)
        summary, ingest_s, ingest_peak = _timed(lambda: ingest(config))
    print(json.dumps({
        "benchmark": "ingest",
        "rows": rows,
        "num_cpus": args.num_cpus,
        "simulate_rows_per_s": simulated["rows_per_s"],
        "reference_rows_per_s": round(rows / reference_s, 1),
        "ingest_rows_per_s": round(summary["input_rows"] / ingest_s, 1),
        "speedup_vs_reference": round(reference_s / ingest_s, 3),
        "reference_peak_rss_mb": round(reference_peak / 2**20, 1),
        "ingest_peak_rss_mb_driver_plus_workers": round(ingest_peak / 2**20, 1),
        "accepted_rows": summary["accepted_rows"],
        "quarantined_rows": summary["quarantined_rows"],
        "duplicate_rows": summary["duplicate_rows"],
    }))


if __name__ == "__main__":
    main()
