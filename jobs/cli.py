"""The `rlhf-ray` command: one subcommand per job, the same entry under `ray job submit`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from jobs import (
    canary,
    cluster,
    curate,
    dpo,
    drift,
    evaluate,
    export,
    ingest,
    init_model,
    lineage,
    loop,
    ppo,
    report,
    retention,
    sft,
    simulate,
    sweep,
    train_rm,
    workbench,
)
from rlhf_ray.config import ConfigError
from rlhf_ray.dataplane.residency import ResidencyViolation
from rlhf_ray.dataplane.versions import DatasetVersionError
from rlhf_ray.lineage import LineageError
from rlhf_ray.models import ModelNotFoundError

JOBS: tuple[ModuleType, ...] = (
    loop, simulate, ingest, curate, retention, export, init_model, sft, train_rm, dpo, ppo, sweep, evaluate, canary,
    drift, lineage, report, cluster, workbench,
)
# Errors that mean "this input cannot be processed": reported in one line, no traceback.
USER_ERRORS = (ModelNotFoundError, LineageError, ingest.IngestError, DatasetVersionError, ResidencyViolation,
               export.ExportError, curate.CurateError, sft.SFTError,
               train_rm.RewardModelError, dpo.DPOError, ppo.PPOError,
               sweep.SweepError, canary.CanaryError, cluster.ClusterError,
               evaluate.EvaluateError, drift.DriftError, report.ReportError,
               workbench.WorkbenchError)
EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-ray",
        description="RLHF as a production loop on Ray. Every job prints a one-line JSON summary last.",
        epilog="On a cluster: ray job submit --working-dir . -- rlhf-ray <job> [args]",
    )
    subparsers = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in JOBS:
        sub = subparsers.add_parser(job.NAME, help=job.HELP, description=job.HELP)
        job.add_arguments(sub)
        sub.set_defaults(entry=job.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.entry(args)
    except ConfigError as error:
        print(f"rlhf-ray {args.job}: invalid config:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    except USER_ERRORS as error:
        print(f"rlhf-ray {args.job}: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0 if summary.get("log_ok", True) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
