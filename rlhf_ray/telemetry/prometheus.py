"""Prometheus through Ray: catalogue metrics as `ray.util.metrics` objects, recorded from sink figures.

Ray's metrics agent on each node serves what a process records on the node's metrics export port
(`ray.nodes()[i]["MetricsExportPort"]`), every name with the prefix `ray_`; Prometheus finds those endpoints
through the service-discovery file Ray writes (`/tmp/ray/prom_metrics_service_discovery.json`). A gauge lives as
long as the process that sets it keeps reporting: a job's figures vanish from the endpoint a few seconds after its
driver exits, so a short job on a long-lived cluster may want `RLHF_RAY_METRICS_LINGER_S` (see `MetricsSink`).

Nothing here starts Ray: without an initialised Ray the exporter records nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from rlhf_ray.telemetry.bindings import observations
from rlhf_ray.telemetry.catalogue import CATALOGUE, JOB_TAG

# One metric object per (Ray job, name): creating a name twice in a process would register it twice, and an
# object made under an earlier `ray.init` belongs to a core worker that is gone.
_METRICS: dict[tuple[str, str], Any] = {}


def ray_initialized() -> bool:
    """Whether this process is connected to Ray, without importing ray when nobody has."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def ray_metric(name: str) -> Any:
    """The `ray.util.metrics` Counter, Gauge or Histogram of catalogue metric `name` (Ray must be initialised)."""
    import ray
    from ray.util import metrics

    spec = CATALOGUE.get(name)
    if spec is None:
        raise ValueError(f"metric {name!r} is not in the catalogue (rlhf_ray/telemetry/catalogue.py); declare it "
                         "there first")
    if not ray.is_initialized():
        raise RuntimeError(f"metric {name!r}: Ray is not initialised, so there is no metrics agent to report to")
    key = (ray.get_runtime_context().get_job_id(), name)
    if key not in _METRICS:
        if spec.kind == "histogram":
            _METRICS[key] = metrics.Histogram(name, spec.description, list(spec.boundaries), spec.tag_keys)
        elif spec.kind == "counter":
            _METRICS[key] = metrics.Counter(name, spec.description, spec.tag_keys)
        else:
            _METRICS[key] = metrics.Gauge(name, spec.description, spec.tag_keys)
    return _METRICS[key]


def record(name: str, value: float, tags: Mapping[str, str]) -> None:
    """Set a gauge, add to a counter (positive amounts only: counters never go down) or observe a histogram."""
    metric, kind = ray_metric(name), CATALOGUE[name].kind
    # Ray encodes names, descriptions and tag values as ASCII: escape anything else rather than fail the job
    tags = {k: str(v).encode("ascii", "backslashreplace").decode("ascii") for k, v in tags.items()}
    if kind == "gauge":
        metric.set(value, tags=tags)
    elif kind == "histogram":
        metric.observe(value, tags=tags)
    elif value > 0:
        metric.inc(value, tags=tags)


class PrometheusExporter:
    """Records a job's figures as catalogue metrics once Ray is up; a no-op before (figures logged before
    `ray.init` reach stdout and wandb only)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.recorded = 0

    def export(self, figures: Mapping[str, Any], source: str | None = None) -> int:
        """Record every figure a binding names, tagged with `source` (default: this job); returns how many."""
        if not ray_initialized():
            return 0
        found = observations(source or self.job, figures)
        for item in found:
            record(item.spec.name, item.value, item.tags)
        self.recorded += len(found)
        return len(found)

    def completed(self) -> None:
        """The job finished: count it and stamp the time."""
        if not ray_initialized():
            return
        tags = {JOB_TAG: self.job}
        record("rlhf_job_completions_total", 1.0, tags)
        record("rlhf_job_last_completion_timestamp_seconds", time.time(), tags)
        self.recorded += 2
