"""One metrics sink per job: JSON lines on stdout for machines, wandb (offline by default) for people.

The last line a job prints is its summary, so `ray job logs ... | tail -1 | jq` always works.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from rlhf_ray.config.common import WandbConfig


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class MetricsSink:
    """Send metrics to stdout JSON lines and to a wandb run; `close` prints the one-line summary."""

    def __init__(
        self,
        job: str,
        wandb_config: WandbConfig,
        output_dir: str,
        run_config: Mapping[str, Any] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.job = job
        self.stream = stream or sys.stdout
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

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        record = {"job": self.job, "step": step, "metrics": clean}
        print(json.dumps(record, sort_keys=True), file=self.stream, flush=True)
        if self._run is not None:
            numeric = {k: v for k, v in clean.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self._run.log(numeric, step=step)

    def close(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Finish the wandb run and print the summary as the last stdout line."""
        result = {"job": self.job, **{k: _jsonable(v) for k, v in summary.items()}}
        if self._run is not None:
            result["wandb_dir"] = self.wandb_dir
            self._run.summary.update({k: v for k, v in result.items() if isinstance(v, int | float | str)})
            self._run.finish()
            self._run = None
        print(json.dumps(result, sort_keys=True), file=self.stream, flush=True)
        return result
