"""`rlhf-ray lineage ID`: what changed, why, and with what impact — an artifact's chain of parents, the events
about it (gate verdicts, canary promotions and rollbacks), the deployments that served it, and, for a model,
a sample of its training pairs traced to the source signal ids.

The audit log, with or without an ID: `--verify` checks its keyed hash chain (non-zero exit when it does not
hold); `--anchor` verifies it and prints its head (`head_seq`, `head_hash`) to record elsewhere; `--verify
--anchor HASH` later proves that nothing up to that head changed (a log rewritten, re-keyed or truncated below
it fails).

Forward, from a person's data to what it reached: `--subject PSEUDONYM`, `--user RAW_ID` (pseudonymized with the
key ingest used) or `--signal ID` lists every dataset version, pair set, model, sweep and deployment their signals
reached, with counts per artifact, from the forward index ingest and curate write (`rlhf_ray.lineage.forward`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import pyarrow.parquet as pq

from rlhf_ray.lineage import LineageError, LineageRegistry
from rlhf_ray.lineage.forward import ForwardIndex, find_pseudonymizer, forward_lineage, subject_aliases
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
    forward = parser.add_mutually_exclusive_group()
    forward.add_argument("--subject", metavar="PSEUDONYM", help="forward lineage: what this subject's signals reached")
    forward.add_argument("--user", metavar="RAW_ID", help="forward lineage of a raw user/annotator id (hashed with "
                                                          "the pseudonym key; never printed)")
    forward.add_argument("--signal", metavar="ID", help="forward lineage of one signal id")
    parser.add_argument("--key-file", help="pseudonym key file (default: $RLHF_RAY_PSEUDONYM_KEY, else "
                                           "<root>/../secrets/pseudonym.key)")


def _events(registry: LineageRegistry, artifact_id: str) -> list[dict[str, Any]]:
    """Every event about the artifact but its registration, newest last, with the figures that decided it."""
    return [{"event": e.event, "time": e.time, "seq": e.seq, **_brief(e.payload)}
            for e in registry.events(artifact_id) if e.event != "register"]


def _brief(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("verdict", "gate", "failures", "failed_checks", "action", "reason", "source", "win_rate", "figures",
            "erasure_id", "successor", "via")
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


def _erased(registry: LineageRegistry, ancestors: list[ArtifactRecord]) -> list[dict[str, Any]]:
    """Ancestors an erasure or retention pass superseded (`erased` events): what the artifact was trained on, and
    the version that replaced it without the erased rows."""
    ids = {a.id for a in ancestors}
    return [{"artifact_id": e.artifact_id, "erasure_id": e.payload.get("erasure_id"),
             "successor": e.payload.get("successor", e.artifact_id)}
            for e in registry.events() if e.event == "erased" and e.artifact_id in ids]


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
        "erased_ancestors": _erased(registry, ancestors),
    }
    for erased in summary["erased_ancestors"]:
        print(f"  {erased['artifact_id']} was superseded by {erased['successor']} ({erased['erasure_id']}): "
              "it no longer holds the erased rows", file=sys.stderr)
    for entry in summary["events"] + [e for d in summary["deployments"] for e in d["events"]]:
        print(f"  {entry['time']} {entry['event']}: " + ", ".join(f"{k}={v}" for k, v in entry.items()
                                                                if k in ("verdict", "gate", "action", "reason",
                                                                         "erasure_id")),
              file=sys.stderr)
    return summary


def _forward(registry: LineageRegistry, args: argparse.Namespace) -> dict[str, Any]:
    """What the subject's (or the signal's) signals reached, with counts and each artifact's events."""
    started = time.perf_counter()
    pseudonyms = find_pseudonymizer(args.root, args.key_file, required=args.user is not None)
    subject = pseudonyms.pseudonym(args.user) if args.user is not None and pseudonyms else args.subject
    subjects = subject_aliases(subject, pseudonyms) if subject is not None else []
    reached = forward_lineage(registry, ForwardIndex(args.root), subjects, args.signal)
    events: dict[str, list[dict[str, Any]]] = {}
    for entry in registry.events():
        if entry.artifact_id and entry.event != "register":
            events.setdefault(entry.artifact_id, []).append({"event": entry.event, "time": entry.time,
                                                             "seq": entry.seq, **_brief(entry.payload)})
    artifacts = [{**r.summary(), "events": events.get(r.record.id, [])} for r in reached]
    for artifact in artifacts:
        counts = ", ".join(f"{k}={v}" for k, v in artifact.items() if k.endswith(("rows", "pairs", "signals")))
        marks = sorted({e["event"] for e in artifact["events"] if e["event"] in ("erased", "trained_on_erased_data")})
        print(f"  {artifact['kind']:<14} {artifact['name'] or '-'}  {artifact['artifact_id']}  {counts}"
              + (f"  [{', '.join(marks)}]" if marks else ""), file=sys.stderr)
    return {"forward": {"query": "signal" if args.signal else "user" if args.user else "subject",
                        "aliases_searched": len(subjects), "artifacts": artifacts,
                        "timing/forward_lineage": round(time.perf_counter() - started, 3)}}


def main(args: argparse.Namespace) -> dict[str, Any]:
    audit = args.verify or args.anchor is not None
    forward = any(getattr(args, name, None) is not None for name in ("subject", "user", "signal"))
    if args.artifact_id is None and not audit and not forward:
        raise LineageError("name an artifact id (or prefix), or pass --subject / --user / --signal for forward "
                           "lineage, or --verify / --anchor to check the audit log")
    registry = LineageRegistry(args.root)
    summary: dict[str, Any] = {"job": NAME, "root": args.root}
    if args.artifact_id is not None:
        summary.update(_artifact(registry, args.artifact_id))
    if forward:
        summary.update(_forward(registry, args))
    if audit:
        summary.update(_audit(registry, args.root, args.anchor))
    print(json.dumps(summary, sort_keys=True, default=str))
    return summary
