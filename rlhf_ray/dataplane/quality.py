"""The data quality report of one dataset version: what came in, what it looks like, what was refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOP_REASONS = 10


def _shares(values: list[Any]) -> dict[str, float]:
    counts = Counter(str(v) for v in values)
    total = sum(counts.values()) or 1
    return {key: round(count / total, 4) for key, count in sorted(counts.items())}


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p50, p90, p99 = np.quantile(values, [0.5, 0.9, 0.99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3)}


def _pairwise(table: pa.Table) -> dict[str, Any]:
    return {"choice_balance": _shares(table.column("choice").to_pylist())}


def _ranking(table: pa.Table) -> dict[str, Any]:
    rankings = table.column("ranking").to_pylist()
    return {"ranked_responses": _shares([len(r) for r in rankings]),
            "first_place_position": _shares([r[0] for r in rankings])}


def _rating(table: pa.Table) -> dict[str, Any]:
    by_scale: dict[str, dict[str, list[float]]] = {}
    for scale, scores in zip(table.column("scale").to_pylist(), table.column("scores").to_pylist(), strict=True):
        for entry in scores:
            by_scale.setdefault(scale, {}).setdefault(entry["criterion"], []).append(entry["score"])
    return {"score_distribution": {
        scale: {criterion: {"mean": round(float(np.mean(v)), 3), "histogram": _shares(v)}
                for criterion, v in sorted(criteria.items())}
        for scale, criteria in sorted(by_scale.items())
    }}


def _correction(table: pa.Table) -> dict[str, Any]:
    before = pc.utf8_length(table.column("response")).to_numpy(zero_copy_only=False)
    after = pc.utf8_length(table.column("edited_response")).to_numpy(zero_copy_only=False)
    return {"edit_length_change_chars": _quantiles((after - before).astype(float))}


def _implicit(table: pa.Table) -> dict[str, Any]:
    events = table.column("event").to_pylist()
    dwell = pc.filter(table.column("value"), pc.equal(table.column("event"), "dwell")).to_numpy(zero_copy_only=False)
    return {"event_mix": _shares(events), "dwell_seconds": _quantiles(dwell)}


def _safety(table: pa.Table) -> dict[str, Any]:
    return {"flagged_rate": _rate(table.column("flagged")), "categories": _shares(table.column("category").to_pylist())}


def _task_success(table: pa.Table) -> dict[str, Any]:
    return {"success_rate": _rate(table.column("success"))}


def _rate(column: pa.ChunkedArray) -> float:
    return round(float(pc.mean(pc.cast(column, pa.float64())).as_py() or 0.0), 4)


DISTRIBUTIONS: dict[str, Callable[[pa.Table], dict[str, Any]]] = {
    "pairwise": _pairwise,
    "ranking": _ranking,
    "rating": _rating,
    "correction": _correction,
    "implicit": _implicit,
    "safety_flag": _safety,
    "task_success": _task_success,
}


def signal_latency_seconds(table: pa.Table, ingested_at: datetime) -> np.ndarray:
    """Seconds from the event to its ingest: how stale feedback is when it becomes data."""
    event_ms = pc.cast(table.column("event_time"), pa.int64()).to_numpy(zero_copy_only=False)
    return (ingested_at.timestamp() * 1000.0 - event_ms) / 1000.0


def signal_type_report(table: pa.Table, ingested_at: datetime) -> dict[str, Any]:
    signal_type = table.column("signal_type")[0].as_py()
    nulls = {name: round(table.column(name).null_count / table.num_rows, 4) for name in table.column_names
             if table.column(name).null_count}
    return {
        "rows": table.num_rows,
        "null_rates": nulls,
        "regions": _shares(table.column("region").to_pylist()),
        "sources": _shares(table.column("source").to_pylist()),
        "signal_latency_seconds": _quantiles(signal_latency_seconds(table, ingested_at)),
        **DISTRIBUTIONS[signal_type](table),
    }


def quality_report(curated: dict[str, pa.Table], quarantine_reasons: Counter[str], ingested_at: datetime) -> dict:
    """Per signal type: counts, null rates, distributions, latency; plus the top quarantine reasons."""
    return {
        "ingested_at": ingested_at.isoformat(),
        "signal_types": {name: signal_type_report(table, ingested_at)
                         for name, table in sorted(curated.items()) if table.num_rows},
        "top_quarantine_reasons": [{"reason": reason, "rows": count}
                                   for reason, count in quarantine_reasons.most_common(TOP_REASONS)],
    }
