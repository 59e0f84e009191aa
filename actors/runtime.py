"""The Ray connection every engine and job shares."""

from __future__ import annotations

import os

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
