"""The Ray connection every engine and job shares."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rlhf_ray.config import RayConfig


def ensure_ray(config: RayConfig) -> None:
    """Connect to Ray once: the configured address, the cluster of `ray job submit`, or a local one.

    `num_cpus` only applies when this process starts its own local cluster.
    """
    import ray

    if ray.is_initialized():
        return
    joining = config.address is not None or "RAY_ADDRESS" in os.environ
    ray.init(
        address=config.address,
        num_cpus=None if joining else config.num_cpus,
        namespace=config.namespace,
        include_dashboard=config.include_dashboard,
        log_to_driver=config.log_to_driver,
    )


@contextlib.contextmanager
def closing_ray() -> Iterator[None]:
    """Disconnect, when the block ends, from a Ray this block connected to (not from one connected before it). Ray
    prints the last de-duplicated worker lines when it shuts down: this way they go where the block's output goes
    (a quiet run's log), not after the job's summary."""
    import ray

    connected_before = ray.is_initialized()
    try:
        yield
    finally:
        if not connected_before and ray.is_initialized():
            ray.shutdown()
