"""`rlhf-ray report RUN_DIR`: one self-contained HTML page of a run — PPO curves (reward, KL, length, true
utility), annotator agreement, the gate's verdict, canary traffic and decision, drift, sweep trials — built from
whatever files the run directory holds (`rlhf_ray.reporting`). Runs no Ray work; wandb stays off."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rlhf_ray.config import WandbConfig
from rlhf_ray.reporting import write_report
from rlhf_ray.telemetry import MetricsSink, StageTimer

NAME = "report"
HELP = "write a self-contained HTML report (plots embedded) of a run directory"


class ReportError(ValueError):
    """Nothing to report on: the run directory is missing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a job's or the loop's output directory")
    parser.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(args.run_dir, args.out)


def run(run_dir: str, out: str | None = None) -> dict[str, Any]:
    """Write the report; its path goes to stderr, the JSON summary line last on stdout, like every job."""
    if not os.path.isdir(run_dir):
        raise ReportError(f"run directory {run_dir!r} does not exist or is not a directory")
    sink, timer = MetricsSink(NAME, WandbConfig(mode="disabled"), run_dir), StageTimer()
    with timer.stage("report"):
        written = write_report(run_dir, out)
    sink.log({"sections": len(written["sections"]), "bytes": written["bytes"], **timer.figures()})
    print(f"[report] {written['report']} ({', '.join(written['sections']) or 'no sections'})", file=sys.stderr)
    return sink.close(written)
