"""`rlhf-ray lineage --subject` at scale: forward-lineage query time over a synthetic index of `--signals` signals.

    python benchmarks/lineage_forward.py --signals 1000000

Builds what ingest and curate would have written for a dataset of `--signals` signals from `--subjects` subjects
(no ingest run: the index is built directly): one dataset index (every signal), one pair-set index (each signal in
`--pairs-per-signal` pairs), and a registry with the dataset, the pair set, a reward model, a policy with a gate
verdict and a deployment. Then times `forward_lineage` (the index lookup plus the registry's descendants) for
`--queries` random subjects and signal ids, and the whole `rlhf-ray lineage --subject` entry once, against a
baseline that reads every index row. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import tempfile
import time
from argparse import Namespace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import lineage
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.forward import CURATED, INDEX_SCHEMA, PAIRS, ForwardIndex, forward_lineage


def _index(subjects: list[str], signal_ids: list[str], store: str, items: list[str | None]) -> pa.Table:
    return pa.table({"subject": subjects, "signal_id": signal_ids, "signal_type": ["pairwise"] * len(subjects),
                     "store": [store] * len(subjects), "item": items}, schema=INDEX_SCHEMA)


def build(root: str, signals: int, subjects: int, pairs_per_signal: int, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    owners = [f"usr_{rng.getrandbits(64):016x}" for _ in range(subjects)]
    subject_of = [owners[rng.randrange(subjects)] for _ in range(signals)]
    signal_ids = [f"{rng.getrandbits(128):032x}" for _ in range(signals)]
    registry = LineageRegistry(root)
    dataset = registry.register("dataset", "ds-bench", "bench", metrics={"accepted_rows": signals}).id
    pairs = registry.register("pairs", "pairs-bench", "bench", parents=(dataset,)).id
    reward_model = registry.register("reward-model", "rm-bench", "bench", parents=(pairs,)).id
    policy = registry.register("policy", "ppo-bench", "bench", parents=(reward_model,)).id
    registry.record_event("gate", policy, {"verdict": "promote"})
    registry.register("deployment", "serve-bench", "bench", parents=(policy,))
    index = ForwardIndex(root)
    index.write(dataset, _index(subject_of, signal_ids, CURATED, [None] * signals))
    pair_rows = signals * pairs_per_signal
    index.write(pairs, _index([subject_of[i % signals] for i in range(pair_rows)],
                              [signal_ids[i % signals] for i in range(pair_rows)], PAIRS,
                              [f"pair-{i // 2}" for i in range(pair_rows)]))
    return {"subjects": owners, "signal_ids": signal_ids}


def _timed(call, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return time.perf_counter() - started, result


def _full_scan(index: ForwardIndex, subject: str) -> int:
    """The baseline: read every entry of every file, then filter."""
    return sum(int(pc.sum(pc.equal(pq.read_table(index.path(a)).column("subject"), subject)).as_py() or 0)
               for a in index.artifact_ids())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=50_000)
    parser.add_argument("--pairs-per-signal", type=int, default=2)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "lineage")
        build_s, made = _timed(build, root, args.signals, args.subjects, args.pairs_per_signal, args.seed)
        registry, index = LineageRegistry(root), ForwardIndex(root)
        rng = random.Random(args.seed + 1)
        subject_s, signal_s, reached = [], [], 0
        for _ in range(args.queries):
            seconds, found = _timed(forward_lineage, registry, index, [rng.choice(made["subjects"])])
            subject_s.append(seconds)
            reached = max(reached, len(found))
            signal_s.append(_timed(forward_lineage, registry, index, (), rng.choice(made["signal_ids"]))[0])
        subject = made["subjects"][0]
        cli = Namespace(root=root, subject=subject, user=None, signal=None, key_file=None, artifact_id=None,
                        verify=False, anchor=None)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli_s, summary = _timed(lineage.main, cli)
        scan_s = _timed(_full_scan, index, subject)[0]
        index_bytes = sum(os.path.getsize(path(a)) for a in index.artifact_ids()
                          for path in (index.path, index.by_signal_path))
    print(json.dumps({
        "benchmark": "lineage_forward", "signals": args.signals, "subjects": args.subjects,
        "pair_index_entries": args.signals * args.pairs_per_signal, "index_bytes": index_bytes,
        "build_s": round(build_s, 2), "queries": args.queries,
        "subject_query_s": {"median": round(statistics.median(subject_s), 4), "max": round(max(subject_s), 4)},
        "signal_query_s": {"median": round(statistics.median(signal_s), 4), "max": round(max(signal_s), 4)},
        "cli_subject_s": round(cli_s, 3), "artifacts_reached": reached,
        "cli_artifacts": len(summary["forward"]["artifacts"]), "full_scan_baseline_s": round(scan_s, 3),
    }))


if __name__ == "__main__":
    main()
