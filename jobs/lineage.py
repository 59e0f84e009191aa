"""`rlhf-ray lineage ID`: what changed, why, and with what impact — an artifact's chain of parents, the events
about it (gate verdicts, canary promotions and rollbacks), the deployments that served it, and, for a model,
a sample of its training pairs traced to the source signal ids. `--verify` also checks the audit log."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow.parquet as pq

from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.registry import ArtifactRecord

NAME = "lineage"
HELP = "what changed, why, with what impact: an artifact's parents, gate and canary events, training-pair sources"
PAIR_SAMPLE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact_id", help="artifact id or an unambiguous prefix of one")
    parser.add_argument(
        "--root", default="runs/quickstart/lineage", help="lineage root: a directory or filesystem URI"
    )
    parser.add_argument("--verify", action="store_true", help="also verify the hash chain of the event log")


def _events(registry: LineageRegistry, artifact_id: str) -> list[dict[str, Any]]:
    """Every event about the artifact but its registration, newest last, with the figures that decided it."""
    return [{"event": e.event, "time": e.time, "seq": e.seq, **_brief(e.payload)}
            for e in registry.events(artifact_id) if e.event != "register"]


def _brief(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("verdict", "gate", "failures", "failed_checks", "action", "reason", "source", "win_rate", "figures")
    return {key: payload[key] for key in keys if key in payload}


def _deployments(registry: LineageRegistry, artifact_id: str, records: list[ArtifactRecord]) -> list[dict[str, Any]]:
    """Deployments that served the artifact, each with its decisions (promote, rollback, kill)."""
    return [{"deployment_id": r.id, "name": r.name, "events": _events(registry, r.id)}
            for r in records if r.kind == "deployment" and artifact_id in r.parents]


def _pair_sources(ancestors: list[ArtifactRecord]) -> list[dict[str, Any]]:
    """A few of the preference pairs the artifact was trained on, with the signal ids each came from."""
    pairs = next((a for a in ancestors if a.kind == "pairs" and a.uri), None)
    if pairs is None:
        return []
    try:
        table = pq.read_table(pairs.uri, columns=["pair_id", "source", "source_signal_ids"])
    except (OSError, ValueError):
        return []  # the pairs were moved or retired; the chain above still answers
    return table.slice(0, PAIR_SAMPLE).to_pylist()


def main(args: argparse.Namespace) -> dict[str, Any]:
    registry = LineageRegistry(args.root)
    record = registry.get(args.artifact_id)
    print(registry.format_chain(record.id), file=sys.stderr)
    ancestors = registry.ancestors(record.id)
    summary: dict[str, Any] = {
        "job": NAME,
        "artifact_id": record.id,
        "kind": record.kind,
        "metrics": record.metrics,
        "ancestors": [a.id for a in ancestors],
        "events": _events(registry, record.id),
        "deployments": _deployments(registry, record.id, registry.records()),
        "training_pairs_sample": _pair_sources(ancestors),
    }
    for entry in summary["events"] + [e for d in summary["deployments"] for e in d["events"]]:
        print(f"  {entry['time']} {entry['event']}: " + ", ".join(f"{k}={v}" for k, v in entry.items()
                                                                if k in ("verdict", "gate", "action", "reason")),
              file=sys.stderr)
    if args.verify:
        report = registry.verify()
        summary.update(log_ok=report.ok, log_entries=report.entries_checked, log_problem=report.problem)
    print(json.dumps(summary, sort_keys=True, default=str))
    return summary
