"""Quality figures for the dashboards page: agreement over time and per guideline version, annotator health
(accuracy against gold and against the settled consensus, fatigue curve over session position, throughput).

Agreement is Fleiss' κ and Krippendorff's α from `rlhf_ray.annotation.agreement`, computed separately for
the dataset's labels before the workbench (by ISO week and guideline version) and for the workbench's labels
(by day and guideline version), so a guideline update shows up as a step between versions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from rlhf_ray.annotation.agreement import agreement_report
from rlhf_ray.annotation.labels import pairwise_labels

FATIGUE_BUCKETS: tuple[tuple[int, int], ...] = ((0, 4), (5, 9), (10, 19), (20, 39), (40, 10**9))
MIN_AGREEMENT_LABELS = 2


@dataclass(frozen=True)
class LabelFacts:
    """One workbench label as the dashboards see it."""

    task_id: str
    task_type: str
    actor: str
    label: int | None
    at: float
    elapsed_s: float | None
    position: int
    guideline_version: str
    consensus: int | None  # the settled class of the task, None while unsettled
    gold: int | None


def _rate(hits: Sequence[bool]) -> float | None:
    return round(float(np.mean(hits)), 4) if hits else None


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _agreement(items: list[str], annotators: list[str], labels: list[Any],
               groups: Mapping[str, list[str]]) -> dict[str, Any] | None:
    if len(labels) < MIN_AGREEMENT_LABELS:
        return None
    report = agreement_report(items, annotators, labels, groups)
    return {"overall": report["overall"], **{f"by_{name}": stats for name, stats in report["groups"].items()}}


def workbench_agreement(facts: Iterable[LabelFacts]) -> dict[str, Any]:
    """κ/α of the workbench's labels per task type, overall, per guideline version and per day."""
    by_type: dict[str, list[LabelFacts]] = defaultdict(list)
    for fact in facts:
        if fact.label is not None:
            by_type[fact.task_type].append(fact)
    result = {}
    for task_type, rows in sorted(by_type.items()):
        summary = _agreement([r.task_id for r in rows], [r.actor for r in rows], [r.label for r in rows],
                             {"guideline_version": [r.guideline_version for r in rows],
                              "day": [_day(r.at) for r in rows]})
        if summary is not None:
            result[task_type] = summary
    return result


def history_agreement(pairwise: pa.Table | None) -> dict[str, Any] | None:
    """κ/α of the dataset's pairwise labels per guideline version and per ISO week (`2026-W02`)."""
    if pairwise is None or pairwise.num_rows == 0:
        return None
    labels = pairwise_labels(pairwise)
    if labels.label.size < MIN_AGREEMENT_LABELS:
        return None
    weeks = [moment.strftime("%G-W%V") for moment in labels.rows.column("event_time").to_pylist()]
    versions = [str(v) for v in labels.rows.column("guideline_version").to_pylist()]
    return _agreement([labels.item_ids[i] for i in labels.item_index],
                      [labels.annotators[a] for a in labels.annotator_index], labels.label.tolist(),
                      {"guideline_version": versions, "week": weeks})


def fatigue_curve(positions: Sequence[int], hits: Sequence[bool]) -> list[dict[str, Any]]:
    """Agreement with the settled consensus by position in the session: a falling curve is fatigue."""
    curve = []
    for low, high in FATIGUE_BUCKETS:
        inside = [h for p, h in zip(positions, hits, strict=True) if low <= p <= high]
        if inside:
            curve.append({"positions": f"{low}-{high}" if high < 10**9 else f"{low}+", "labels": len(inside),
                          "agreement": _rate(inside)})
    return curve


def annotator_health(facts: Iterable[LabelFacts], active_seconds: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per annotator: labels, accuracy vs gold, agreement with the settled consensus, fatigue curve, throughput.

    Throughput is labels per hour of session time (first session start to last label, per session, summed).
    """
    by_actor: dict[str, list[LabelFacts]] = defaultdict(list)
    for fact in facts:
        by_actor[fact.actor].append(fact)
    table = []
    for actor, rows in sorted(by_actor.items()):
        gold = [r.label == r.gold for r in rows if r.gold is not None and r.label is not None]
        settled = [r for r in rows if r.consensus is not None and r.label is not None and r.gold is None]
        seconds = [r.elapsed_s for r in rows if r.elapsed_s is not None]
        hours = active_seconds.get(actor, 0.0) / 3600.0
        table.append({
            "annotator": actor, "labels": len(rows), "gold_labels": len(gold), "gold_accuracy": _rate(gold),
            "consensus_agreement": _rate([r.label == r.consensus for r in settled]),
            "median_seconds_per_task": round(float(np.median(seconds)), 1) if seconds else None,
            "tasks_per_hour": round(len(rows) / hours, 1) if hours > 0 else None,
            "fatigue_curve": fatigue_curve([r.position for r in settled], [r.label == r.consensus for r in settled]),
        })
    return table


def history_health(annotators: pa.Table) -> list[dict[str, Any]]:
    """Curate's annotator table (pseudonymous ids), trimmed to what the page shows."""
    keep = ("annotator", "labels", "gold_accuracy", "estimated_accuracy", "early_session_agreement",
            "late_session_agreement", "fatigue_drop", "flags")
    return [{k: row.get(k) for k in keep} for row in annotators.to_pylist()] if annotators.num_rows else []
