"""`rlhf-ray lineage ID`: the chain of parents of an artifact, and a check of the audit log."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rlhf_ray.lineage import LineageRegistry

NAME = "lineage"
HELP = "print an artifact's chain of parents (and verify the tamper-evident event log)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact_id", help="artifact id or an unambiguous prefix of one")
    parser.add_argument(
        "--root", default="runs/quickstart/lineage", help="lineage root: a directory or filesystem URI"
    )
    parser.add_argument("--verify", action="store_true", help="also verify the hash chain of the event log")


def main(args: argparse.Namespace) -> dict[str, Any]:
    registry = LineageRegistry(args.root)
    record = registry.get(args.artifact_id)
    print(registry.format_chain(record.id), file=sys.stderr)
    summary: dict[str, Any] = {
        "job": NAME,
        "artifact_id": record.id,
        "ancestors": [a.id for a in registry.ancestors(record.id)],
    }
    if args.verify:
        report = registry.verify()
        summary.update(log_ok=report.ok, log_entries=report.entries_checked, log_problem=report.problem)
    print(json.dumps(summary, sort_keys=True))
    return summary
