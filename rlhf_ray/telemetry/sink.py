"""One metrics sink per job: JSON lines on stdout for machines, wandb (offline by default) for people, and
Prometheus through Ray's metrics agent for dashboards (`rlhf_ray.telemetry.prometheus`; the figure → metric
table is `rlhf_ray.telemetry.bindings`, the names `rlhf_ray.telemetry.catalogue`).

The last line a job prints is its summary, so `ray job logs ... | tail -1 | jq` always works.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from rlhf_ray.config.common import JobConfig, WandbConfig
from rlhf_ray.telemetry.prometheus import PrometheusExporter

# Seconds `close` keeps the process alive after the last Prometheus figure, so a scrape sees a short job's final
# values before its gauges age out with the driver (unset: no wait).
LINGER_ENV = "RLHF_RAY_METRICS_LINGER_S"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class MetricsSink:
    """Send metrics to stdout JSON lines, a wandb run and Prometheus; `close` prints the one-line summary.

    Prometheus series are created lazily, and only once Ray is initialised (a job's figures logged before
    `ray.init` go to stdout and wandb only); `prometheus=False` turns them off.
    """

    def __init__(
        self,
        job: str,
        wandb_config: WandbConfig,
        output_dir: str,
        run_config: Mapping[str, Any] | None = None,
        stream: TextIO | None = None,
        prometheus: bool = True,
    ) -> None:
        self.job = job
        self.stream = stream or sys.stdout
        self.prometheus = PrometheusExporter(job) if prometheus else None
        self._run = self._start_wandb(wandb_config, output_dir, dict(run_config or {}))

    def _start_wandb(self, config: WandbConfig, output_dir: str, run_config: dict[str, Any]) -> Any:
        if config.mode == "disabled":
            return None
        import wandb

        directory = config.dir or os.path.join(output_dir, "wandb")
        if "://" in directory:
            raise ValueError(f"wandb.dir {directory!r} must be a local directory, not a URI")
        os.makedirs(directory, exist_ok=True)
        return wandb.init(
            project=config.project,
            mode=config.mode,
            dir=directory,
            job_type=self.job,
            config=run_config,
            tags=list(config.tags),
            reinit="finish_previous",
        )

    @property
    def wandb_dir(self) -> str | None:
        return None if self._run is None else str(Path(self._run.dir).parent)

    def log(self, metrics: Mapping[str, Any], step: int | None = None, source: str | None = None) -> None:
        """One JSON line, one wandb step, and the Prometheus series the figures feed. `source` is the job the
        figures come from when it is not this one (the loop logs each stage's figures), for the `rlhf_job` tag."""
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        record = {"job": self.job, "step": step, "metrics": clean}
        print(json.dumps(record, sort_keys=True), file=self.stream, flush=True)
        if self._run is not None:
            numeric = {k: v for k, v in clean.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self._run.log(numeric, step=step)
        if self.prometheus is not None:
            self.prometheus.export(clean, source)

    def close(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Finish the wandb run and print the summary as the last stdout line. Prometheus gets the completion
        (the summary's figures were logged already: every job logs before it closes)."""
        result = {"job": self.job, **{k: _jsonable(v) for k, v in summary.items()}}
        if self.prometheus is not None:
            self.prometheus.completed()
        if self._run is not None:
            result["wandb_dir"] = self.wandb_dir
            self._run.summary.update({k: v for k, v in result.items() if isinstance(v, int | float | str)})
            self._run.finish()
            self._run = None
        print(json.dumps(result, sort_keys=True), file=self.stream, flush=True)
        self._linger()
        return result

    def _linger(self) -> None:
        seconds = os.environ.get(LINGER_ENV)
        if not seconds or self.prometheus is None or not self.prometheus.recorded:
            return
        try:
            wait = float(seconds)
        except ValueError:
            raise ValueError(f"{LINGER_ENV}={seconds!r}: expected a number of seconds") from None
        time.sleep(max(0.0, wait))


def sink_for(job: str, config: JobConfig) -> MetricsSink:
    """A job's sink: its wandb settings, metrics under its output directory, its whole config as the run's."""
    return MetricsSink(job, config.wandb, config.output_dir, run_config=config.model_dump(mode="json"))
