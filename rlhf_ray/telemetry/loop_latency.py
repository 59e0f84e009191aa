"""Feedback-loop latency: how long a piece of feedback takes to be in a trained model, and then in front of users.

    feedback_to_ingest  = event → ingest seconds of the dataset the model learned from (its quality report's
                          signal latency: the stalest signal type's median)
    ingest_to_trained   = t(model registered) − t(newest dataset ancestor registered)
    trained_to_<event>  = t(event) − t(model registered)                        event: gated, deployed, ...
    feedback_to_<event> = feedback_to_ingest + ingest_to_trained + trained_to_<event>

Times come from the lineage registry (each record's `created_at`), so any job holding a model's artifact id can
compute them: `evaluate` reports `trained_to_gated`, the canary `trained_to_deployed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rlhf_ray.dataplane.versions import curated_folder, manifest_path
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.storage import StorageRoot

LATENCY_PREFIX = "loop_latency/"
SIGNAL_LATENCY_PREFIX = "signal_latency_seconds/"


def signal_latency_figures(quality: Mapping[str, Any]) -> dict[str, float]:
    """`signal_latency_seconds/<quantile>` of a dataset version's quality report: per quantile, the largest over
    signal types (alerting cares about the stalest feedback)."""
    worst: dict[str, float] = {}
    for report in quality.get("signal_types", {}).values():
        for quantile, seconds in report.get("signal_latency_seconds", {}).items():
            worst[quantile] = max(worst.get(quantile, float("-inf")), float(seconds))
    return {f"{SIGNAL_LATENCY_PREFIX}{quantile}": seconds for quantile, seconds in sorted(worst.items())}


def latency_segments(event: str, event_at: datetime, model_at: datetime, dataset_at: datetime | None = None,
                     signal_latency_s: float | None = None) -> dict[str, float]:
    """The segments of the module docstring that the known times allow, in seconds, keyed `loop_latency/<segment>`.

    A missing dataset time (a model trained on no registered dataset) leaves out the segments that need it.
    """
    for name, moment in (("event_at", event_at), ("model_at", model_at), ("dataset_at", dataset_at)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"{name}={moment!r} is a naive datetime; expected a timezone-aware one")
    segments = {f"trained_to_{event}": (event_at - model_at).total_seconds()}
    if dataset_at is not None:
        segments["ingest_to_trained"] = (model_at - dataset_at).total_seconds()
        if signal_latency_s is not None:
            segments["feedback_to_ingest"] = float(signal_latency_s)
            segments[f"feedback_to_{event}"] = sum(segments.values())
    return {f"{LATENCY_PREFIX}{name}": round(value, 3) for name, value in segments.items()}


def _dataset_quality(uri: str, version: str) -> Mapping[str, Any]:
    """The quality report committed with a dataset version, found from the record's uri (`<root>/curated/<v>`,
    the layout of `rlhf_ray.dataplane.versions`); empty when it cannot be read."""
    suffix = "/" + curated_folder(version)
    if not uri.endswith(suffix):
        return {}
    try:
        root = StorageRoot.from_uri(uri[: -len(suffix)])
        return json.loads(root.read_bytes(manifest_path(version))).get("quality", {})
    except (OSError, ValueError):
        return {}


def loop_latency(registry: LineageRegistry, artifact_id: str, event: str, event_at: datetime) -> dict[str, float]:
    """Latency segments for the model `artifact_id` reaching `event` at `event_at`, from its lineage; empty for a
    `checkpoint` record (a directory registered when first handed to a job: when it was trained is unknown)."""
    model = registry.get(artifact_id)
    if model.kind == "checkpoint":
        return {}
    datasets = [record for record in registry.ancestors(model.id) if record.kind == "dataset"]
    newest = max(datasets, key=lambda record: record.created_at, default=None)
    signal = None
    if newest is not None:
        signal = signal_latency_figures(_dataset_quality(newest.uri, newest.name)).get(f"{SIGNAL_LATENCY_PREFIX}p50")
    return latency_segments(event, event_at, datetime.fromisoformat(model.created_at),
                            datetime.fromisoformat(newest.created_at) if newest else None, signal)
