"""`rlhf-ray lineage ID`: what changed, why, and with what impact — an artifact's chain of parents, the events
about it (gate verdicts, canary promotions and rollbacks), the deployments that served it, and, for a model,
a sample of its training pairs traced to the source signal ids.

The audit log, with or without an ID: `--verify` checks its keyed hash chain (non-zero exit when it does not
hold); `--anchor` verifies it and prints its head (`head_seq`, `head_hash`) to record elsewhere; `--verify
--anchor HASH` later proves that nothing up to that head changed (a log rewritten, re-keyed or truncated below
it fails)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow.parquet as pq

from rlhf_ray.lineage import LineageError, LineageRegistry
from rlhf_ray.lineage.log import check_anchor
from rlhf_ray.lineage.registry import ArtifactRecord

NAME = "lineage"
HELP = "what changed, why, with what impact: an artifact's parents, gate and canary events, training-pair sources"
PAIR_SAMPLE = 3
PRINT_ANCHOR = "print"  # `--anchor` without a value: print the head to record, rather than check against one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact_id", nargs="?",
                        help="artifact id or an unambiguous prefix of one (optional with --verify or --anchor)")
    parser.add_argument(
        "--root", default="runs/quickstart/lineage", help="lineage root: a directory or filesystem URI"
    )
    parser.add_argument("--verify", action="store_true", help="also verify the keyed hash chain of the event log")
    parser.add_argument("--anchor", nargs="?", const=PRINT_ANCHOR, metavar="HASH",
                        help="alone: verify the log and print its head hash to record elsewhere; with HASH (a head "
                             "printed earlier): verify that the log still holds it, unchanged up to it")


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


def _audit(registry: LineageRegistry, root: str, anchor: str | None) -> dict[str, Any]:
    """Verify the log (against `anchor` when one is given): the figures, and the head to anchor when it holds."""
    given = None if anchor in (None, PRINT_ANCHOR) else check_anchor(anchor)
    report = registry.verify(anchor=given)
    if anchor == PRINT_ANCHOR and report.ok and report.entries_checked == 0:
        raise LineageError(f"nothing to anchor: the event log under {root!r} is empty")
    figures: dict[str, Any] = {"log_ok": report.ok, "log_entries": report.entries_checked,
                               "log_problem": report.problem, "key_id": report.key_id}
    if given is not None:
        figures.update(anchor=given, anchor_seq=report.anchor_seq)
    if report.ok:
        figures.update(head_seq=report.entries_checked - 1, head_hash=report.head_hash)
    else:
        print(f"rlhf-ray lineage: the audit log does not verify: {report.problem}", file=sys.stderr)
    return figures


def _artifact(registry: LineageRegistry, artifact_id: str) -> dict[str, Any]:
    """The artifact's chain of parents (printed), its events, deployments and a sample of its training pairs."""
    record = registry.get(artifact_id)
    print(registry.format_chain(record.id), file=sys.stderr)
    ancestors = registry.ancestors(record.id)
    summary: dict[str, Any] = {
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
    return summary


def main(args: argparse.Namespace) -> dict[str, Any]:
    audit = args.verify or args.anchor is not None
    if args.artifact_id is None and not audit:
        raise LineageError("name an artifact id (or prefix), or pass --verify / --anchor to check the audit log")
    registry = LineageRegistry(args.root)
    summary: dict[str, Any] = {"job": NAME, "root": args.root}
    if args.artifact_id is not None:
        summary.update(_artifact(registry, args.artifact_id))
    if audit:
        summary.update(_audit(registry, args.root, args.anchor))
    print(json.dumps(summary, sort_keys=True, default=str))
    return summary
