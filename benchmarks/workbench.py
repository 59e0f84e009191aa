"""Workbench API throughput under scripted annotators: tasks labeled per minute through Ray Serve's HTTP API.

    python benchmarks/workbench.py --annotators 4 --labels 600

Builds a workbench input from the simulated world (curate in-process), deploys `rlhf-ray workbench` on a local
Ray cluster (Serve on loopback), and runs N scripted annotators, each a thread looping GET /api/tasks/next →
POST /api/labels with a random but valid answer and a rationale. Every label goes through the real path:
contract row, PII masking, validation, fsync'd event log, shard writes. The same script is then run against
the core in-process (no HTTP, no Serve) to show what the serving layer costs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from rlhf_ray.workbench.demo import scripted_answer

ROOT = Path(__file__).resolve().parents[1]

QUEUE = {"active_learning": 400, "adjudication": 200, "rubric": 80, "correction": 40, "gold": 20,
         "labels_wanted": 3, "max_labels": 5}
ROWS = {"pairwise": 3000, "ranking": 600, "rating": 1200}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_annotator(url: str, token: str, quota: int, stop_at: float, seed: int, stats: dict[str, list]) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    session.post(f"{url}/api/session", timeout=60).raise_for_status()
    rng = random.Random(seed)
    for _ in range(quota):
        if time.monotonic() > stop_at:
            return
        started = time.perf_counter()
        handed = session.get(f"{url}/api/tasks/next", timeout=60).json()
        fetched = time.perf_counter()
        if handed.get("state") != "task":
            return
        reply = session.post(f"{url}/api/labels", json={"assignment_id": handed["assignment_id"],
                                                        **scripted_answer(handed["task"], rng)}, timeout=60)
        reply.raise_for_status()
        done = time.perf_counter()
        with stats["lock"][0]:
            stats["next"].append(fetched - started)
            stats["submit"].append(done - fetched)


def run_http(url: str, tokens: list[str], labels: int, seconds: float) -> dict[str, Any]:
    stats: dict[str, list] = {"next": [], "submit": [], "lock": [threading.Lock()]}
    stop_at = time.monotonic() + seconds
    quota = -(-labels // len(tokens))
    threads = [threading.Thread(target=http_annotator, args=(url, token, quota, stop_at, i, stats))
               for i, token in enumerate(tokens)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done = len(stats["submit"])
    return {"labels": done, "seconds": round(wall, 2), "tasks_per_min": round(done / wall * 60, 1),
            "next_ms_p50": round(float(np.percentile(stats["next"], 50)) * 1000, 1),
            "next_ms_p95": round(float(np.percentile(stats["next"], 95)) * 1000, 1),
            "submit_ms_p50": round(float(np.percentile(stats["submit"], 50)) * 1000, 1),
            "submit_ms_p95": round(float(np.percentile(stats["submit"], 95)) * 1000, 1)}


def run_core(args: Any, annotators: int, labels: int) -> dict[str, Any]:
    """The same scripted loop on the core in-process, annotators taking turns (no HTTP, no Serve)."""
    from rlhf_ray.workbench.config import Identity
    from rlhf_ray.workbench.service import Workbench

    bench = Workbench.open(args)
    people = [Identity(actor=f"ann_{i:016x}", role="annotator") for i in range(annotators)]
    for who in people:
        bench.sign_in(who)
    rng, done = random.Random(0), 0
    started = time.perf_counter()
    while done < labels:
        progressed = False
        for who in people:
            handed = bench.next_task(who)
            if handed["state"] == "task":
                bench.submit(who, {"assignment_id": handed["assignment_id"], **scripted_answer(handed["task"], rng)})
                done, progressed = done + 1, True
        if not progressed:
            break
    wall = time.perf_counter() - started
    bench.close()
    return {"labels": done, "seconds": round(wall, 2), "tasks_per_min": round(done / wall * 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=4)
    parser.add_argument("--labels", type=int, default=600, help="labels to submit in all")
    parser.add_argument("--seconds", type=float, default=300.0, help="stop the HTTP run after this long")
    parser.add_argument("--num-prompts", type=int, default=300)
    args = parser.parse_args()

    from jobs.workbench import WorkbenchConfig, deploy, stop, workbench_args
    from rlhf_ray.config import load_config
    from rlhf_ray.governance import Pseudonymizer
    from rlhf_ray.workbench.demo import write_demo_inputs

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    key = os.urandom(32).hex()
    (work / "key.hex").write_text(key)
    tokens = {f"scripted{i}": f"scripted-token-{i:04d}-{os.urandom(8).hex()}" for i in range(args.annotators)}
    (work / "tokens.json").write_text(json.dumps({"annotators": tokens}))
    started = time.perf_counter()
    demo = write_demo_inputs(work / "inputs", Pseudonymizer(bytes.fromhex(key)), num_prompts=args.num_prompts,
                             rows=ROWS, active_budget=QUEUE["active_learning"])
    build_s = time.perf_counter() - started
    overrides = {"curated": demo.curated, "dataset": demo.dataset, "gold": demo.gold,
                 "output_dir": str(work / "feedback-http"), "guidelines_dir": str(ROOT / "guidelines"),
                 "pseudonyms.key_file": str(work / "key.hex"), "pseudonyms.key_env": "UNSET_FOR_BENCHMARK",
                 "auth.tokens_file": str(work / "tokens.json"), "auth.tokens_env": "UNSET_FOR_BENCHMARK",
                 "wandb.mode": "disabled", "ray.num_cpus": 2, "ray.log_to_driver": False,
                 "session.max_tasks": 100_000, "session.max_minutes": 600, "session.rotate_after": 0,
                 "serve.port": _free_port(), "serve.app_name": "workbench-bench", "serve.num_cpus": 0.5,
                 **{f"queue.{k}": v for k, v in QUEUE.items()}}
    config = load_config(WorkbenchConfig, None, [f"{k}={v}" for k, v in overrides.items()])
    url, handle = deploy(config)
    http = run_http(url, list(tokens.values()), args.labels, args.seconds)
    summary = stop(config, handle)
    core_config = load_config(WorkbenchConfig, None, [f"{k}={v}" for k, v in overrides.items()]
                              + [f"output_dir={work / 'feedback-core'}"])
    core = run_core(workbench_args(core_config), args.annotators, http["labels"])
    shards = sorted((work / "feedback-http" / "shards").glob("*.jsonl"))
    rows = sum(len(p.read_text().splitlines()) for p in shards)
    print(json.dumps({
        "benchmark": "workbench_api_throughput", "annotators": args.annotators, "tasks": summary["tasks"],
        "http": http, "core_in_process": core, "serve_overhead_x": round(core["tasks_per_min"]
                                                                          / max(1e-9, http["tasks_per_min"]), 1),
        "shard_files": len(shards), "shard_rows": rows, "rows_match_labels": rows == summary["labels"],
        "inputs_build_s": round(build_s, 1), "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
