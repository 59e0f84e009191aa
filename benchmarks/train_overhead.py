"""Ray Train's fixed cost per stage: a no-op `TorchTrainer.fit` (2 workers × 1 CPU, the training jobs' shape on a
laptop), under each controller poll interval. Prints JSON: per interval, each fit's wall time and when its train
function started (so start-up and tear-down show apart).

    python benchmarks/train_overhead.py --polls 2.0,0.5 --fits 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from jobs.training import TRAIN_POLL_ENV


def _noop_loop(config: dict[str, Any]) -> None:
    from ray import train

    entered = time.time() - config["started"]
    train.report({})
    if train.get_context().get_world_rank() == 0:
        Path(config["marker"]).write_text(json.dumps({"entered_s": entered}))


def timed_fit(workers: int, storage: str) -> dict[str, float]:
    """One no-op fit: its wall time and the second its train function started at."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    marker = os.path.join(storage, f"marker-{uuid.uuid4().hex}.json")
    started = time.time()
    TorchTrainer(_noop_loop, train_loop_config={"started": started, "marker": marker},
                 scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(name=f"noop-{uuid.uuid4().hex[:8]}", storage_path=storage)).fit()
    total = time.time() - started
    entered = json.loads(Path(marker).read_text())["entered_s"]
    return {"fit_s": round(total, 2), "train_fn_started_s": round(entered, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", default="2.0,0.5", help="controller poll intervals (s), comma-separated")
    parser.add_argument("--fits", type=int, default=3, help="fits per interval (the first also warms Ray)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory() as storage:
        timed_fit(args.workers, storage)  # warm-up: Ray's first worker processes and imports
        for poll in args.polls.split(","):
            os.environ[TRAIN_POLL_ENV] = poll  # Ray Train hands it from the driver to its controller at each fit
            fits = [timed_fit(args.workers, storage) for _ in range(args.fits)]
            results.append({"poll_s": float(poll), "fits": fits,
                            "mean_fit_s": round(statistics.mean(f["fit_s"] for f in fits), 2)})
    print(json.dumps({"workers": args.workers, "load_1min_end": os.getloadavg()[0], "results": results}))


if __name__ == "__main__":
    main()
