"""The Ray connection every engine and job shares."""

from __future__ import annotations

import contextlib
import os
import signal
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


@contextlib.contextmanager
def serving_process(config: RayConfig) -> Iterator[None]:
    """The lifetime of a serving job (`canary`, `workbench`, `serve-rm`): connect to Ray, and make SIGTERM (`ray job
    stop`, Kubernetes, `kill`) end the block like Ctrl-C, as a KeyboardInterrupt, so the job's own cleanup runs
    (delete its Serve application: replicas flush their buffered rows when Serve stops them). When the block ends
    — normally, by an error or by a signal — and this process started Ray itself, Serve and that Ray are shut
    down, so no GCS, raylet, Serve controller, proxy or replica outlives the job. A cluster the job joined (an
    address, `ray job submit`) keeps running. A second signal during that shutdown is ignored, so it completes."""
    import ray

    started = not ray.is_initialized() and config.address is None and "RAY_ADDRESS" not in os.environ
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ensure_ray(config)
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started and ray.is_initialized():
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            terminate = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                from ray import serve

                with contextlib.suppress(Exception):  # no Serve started, or its controller gone already
                    serve.shutdown()
                ray.shutdown()
            finally:
                signal.signal(signal.SIGINT, interrupt)
                signal.signal(signal.SIGTERM, terminate)
