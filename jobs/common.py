"""What every job shares: config arguments, the Ray connection, lineage and the metrics sink."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TypeVar

from rlhf_ray.config import JobConfig, RayConfig, load_config
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.telemetry import MetricsSink

C = TypeVar("C", bound=JobConfig)


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument(
        "--config",
        default=default_config,
        help="YAML config file" + (f" (default: {default_config})" if default_config else " (default: built-in)"),
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the YAML file, e.g. seed=3 world.num_prompts=200",
    )


def flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """Turn convenience flags (`--out`, `--rows`) into dotted overrides; explicit KEY=VALUE args win."""
    return [f"{key}={getattr(args, flag)}" for flag, key in mapping.items() if getattr(args, flag, None) is not None]


def resolve_config(schema: type[C], args: argparse.Namespace, flags: dict[str, str] | None = None) -> C:
    """Load and validate the job's config before any Ray work starts."""
    overrides: Sequence[str] = [*flag_overrides(args, flags or {}), *args.overrides]
    return load_config(schema, args.config, overrides)


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


def lineage_root(config: JobConfig, inherited: str | None = None) -> str:
    """Where lineage goes: the configured root, else the root the input was registered in (so one log holds
    the whole chain), else `<output_dir>/lineage`. Local roots are made absolute for manifests."""
    root = config.lineage.root or inherited or f"{config.output_dir.rstrip('/')}/lineage"
    return root if "://" in root else os.path.abspath(root)


def lineage_for(config: JobConfig, inherited: str | None = None) -> LineageRegistry:
    return LineageRegistry(lineage_root(config, inherited))


def sink_for(job: str, config: JobConfig) -> MetricsSink:
    return MetricsSink(job, config.wandb, config.output_dir, run_config=config.model_dump(mode="json"))
