"""Typed job configs: one pydantic schema per job, loaded from YAML and dotted `key.sub=value` overrides."""

from rlhf_ray.config.common import JobConfig, LineageConfig, RayConfig, StrictModel, WandbConfig, drop_retired
from rlhf_ray.config.loader import (
    ConfigError,
    apply_overrides,
    config_keys,
    dump_config,
    load_config,
    parse_override,
)

__all__ = [
    "ConfigError",
    "JobConfig",
    "LineageConfig",
    "RayConfig",
    "StrictModel",
    "WandbConfig",
    "apply_overrides",
    "config_keys",
    "drop_retired",
    "dump_config",
    "load_config",
    "parse_override",
]
