"""Metrics and logs: one sink for every job."""

from rlhf_ray.telemetry.sink import MetricsSink

__all__ = ["MetricsSink"]
