"""The adjudication queue: items the crowd could not settle go to an expert, with everything said so far.

An item is queued when its consensus confidence is below a threshold, or when the batch it belongs to
(e.g. guideline version × topic) has an agreement κ below a floor. Resolved adjudications come back as
labels with a known answer (clamped like gold) and a high pair weight.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from rlhf_ray.annotation.labels import LabelSet

QUEUE_SCHEMA = pa.schema([
    pa.field("item_id", pa.string()),
    pa.field("signal_type", pa.string()),
    pa.field("prompt_id", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("responses", pa.list_(pa.string())),
    pa.field("labels", pa.list_(pa.struct([("annotator", pa.string()), ("label", pa.string()),
                                           ("rationale", pa.string())]))),
    pa.field("consensus", pa.string()),
    pa.field("confidence", pa.float64()),
    pa.field("reason", pa.string()),
])


def _responses(row: Mapping[str, Any]) -> list[str]:
    return list(row["responses"]) if "responses" in row else [row["response_a"], row["response_b"]]


def adjudication_queue(labels: LabelSet, posterior: np.ndarray, batch_of_row: np.ndarray,
                       batch_kappa: Mapping[str, float | None], min_confidence: float, kappa_floor: float,
                       answered: Collection[str] = ()) -> pa.Table:
    """Queue rows for low-confidence items and for every item of a batch whose κ is under the floor;
    items with a known answer (gold, or already adjudicated) are settled and never queued."""
    weak_batches = {b for b, kappa in batch_kappa.items() if kappa is not None and kappa < kappa_floor}
    confidence = posterior.max(axis=1)
    rows = labels.rows.to_pylist()
    by_item: dict[int, list[int]] = {}
    for position, item in enumerate(labels.item_index.tolist()):
        by_item.setdefault(item, []).append(position)
    queue = []
    for item, positions in sorted(by_item.items()):
        in_weak_batch = any(batch_of_row[p] in weak_batches for p in positions)
        settled = confidence[item] >= min_confidence and not in_weak_batch
        if settled or labels.item_ids[item] in answered:
            continue
        first = rows[positions[0]]
        queue.append({
            "item_id": labels.item_ids[item], "signal_type": labels.signal_type, "prompt_id": first["prompt_id"],
            "prompt": first["prompt"], "responses": _responses(first),
            "labels": [{"annotator": rows[p]["actor_id"], "label": labels.categories[labels.label[p]],
                        "rationale": rows[p].get("rationale")} for p in positions],
            "consensus": labels.categories[int(posterior[item].argmax())],
            "confidence": round(float(confidence[item]), 4),
            "reason": "low_confidence" if confidence[item] < min_confidence else "low_batch_kappa",
        })
    return pa.Table.from_pylist(queue, schema=QUEUE_SCHEMA)
