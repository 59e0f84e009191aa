"""Metrics and logs: one sink for every job, one catalogue of Prometheus names."""

from rlhf_ray.telemetry.catalogue import CATALOGUE, MetricSpec
from rlhf_ray.telemetry.sink import MetricsSink
from rlhf_ray.telemetry.timing import StageTimer

__all__ = ["CATALOGUE", "MetricSpec", "MetricsSink", "StageTimer"]
