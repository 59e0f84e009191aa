"""`rlhf-ray serve-rm`: a reward model on Ray Serve, answering POST {"prompts": [...], "responses": [...]} with
{"scores": [...]}, pairs from concurrent requests batched together (`actors.serve_rm`). Any reward source of kind
`http` (`reward.sources`) or `evaluate --judge URL` can read it; so can any other client.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from pydantic import Field

from actors.runtime import ensure_ray, serving_process
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.models import resolve_model_path
from rlhf_ray.telemetry.sink import sink_for

NAME = "serve-rm"
HELP = "host a reward model on Ray Serve (batched): POST {prompts, responses} → {scores}, for http reward sources"


class ServeRMSection(StrictModel):
    host: str = Field("127.0.0.1", description="bind address; loopback unless exposed on purpose")
    port: int = Field(8020, ge=1, le=65535, description="HTTP port of Serve (a running Serve keeps its own)")
    app_name: str = Field("reward-model", pattern=r"^[A-Za-z0-9_.-]+$")
    route_prefix: str = Field("/score", pattern=r"^/[A-Za-z0-9/_-]*$")
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0)
    max_batch_size: int = Field(16, ge=1, description="pairs per forward pass (`@serve.batch`)")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="seconds a batch waits to fill")
    run_for_s: float | None = Field(None, ge=0, description="stop after this many seconds; null: until Ctrl-C")


class ServeRMConfig(JobConfig):
    model_path: str | None = Field(None, description="reward model directory from `rlhf-ray train-rm`")
    normalize: bool = Field(True, description="(r − μ)/σ with the statistics saved beside the model")
    max_length: int = Field(256, ge=8, description="token budget per prompt + response")
    serve: ServeRMSection = ServeRMSection()


class ServeRMError(ValueError):
    """serve-rm cannot start: no reward model."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="reward model directory (sets model_path)")
    parser.add_argument("--port", type=int, help="HTTP port (sets serve.port)")
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(ServeRMConfig, args, {"model": "model_path", "port": "serve.port"}))


def deploy(config: ServeRMConfig) -> tuple[str, Any]:
    """Start Serve on the configured host/port if it is not running, deploy the model; returns (url, handle).
    A Serve already running keeps its own host and port, and the url says where it listens."""
    from ray import serve

    from actors.serve_control import serving_url
    from actors.serve_rm import reward_model_app

    if not config.model_path:
        raise ServeRMError("serve-rm needs --model DIR (a reward model from `rlhf-ray train-rm`)")
    path = str(resolve_model_path(config.model_path))
    ensure_ray(config.ray)
    s = config.serve
    serve.start(http_options={"host": s.host, "port": s.port})
    handle = serve.run(reward_model_app(path, config.normalize, config.max_length, s.max_batch_size,
                                        s.batch_wait_timeout_s, s.num_replicas, s.num_cpus, s.num_gpus),
                       name=s.app_name, route_prefix=s.route_prefix)
    return serving_url(s.route_prefix), handle


def run(config: ServeRMConfig) -> dict[str, Any]:
    from ray import serve

    sink = sink_for(NAME, config)
    with serving_process(config.ray):  # SIGTERM stops as Ctrl-C does; a Ray started here is shut down after
        url, handle = deploy(config)
        print(f"[serve-rm] scoring at {url} — POST {{\"prompts\": [...], \"responses\": [...]}}; Ctrl-C to stop",
              file=sys.stderr)
        try:
            threading.Event().wait(config.serve.run_for_s)  # None: until interrupted (the wait is interruptible)
        except KeyboardInterrupt:
            print("[serve-rm] stopping", file=sys.stderr)
        stats = handle.stats.remote().result()
        serve.delete(config.serve.app_name)
    return sink.close({"url": url, "batches": stats["batches"], "pairs": stats["pairs"],
                       "max_batch": stats["max_batch"]})
