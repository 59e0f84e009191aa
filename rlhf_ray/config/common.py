"""The config base class and the sections every job embeds (Ray connection, wandb, lineage).

A job's schema subclasses `JobConfig` and adds its own sections; `rlhf_ray.config.load_config` turns a YAML
file plus `key.sub=value` overrides into one validated, frozen instance before any Ray work starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base of every config section.

    `extra="forbid"` turns a typo into an error instead of a silently ignored key; `frozen` lets a config be
    shared by many actors without anyone changing it under the others; `validate_default` checks the
    defaults too. Type checking stays in pydantic's lax mode on purpose: YAML already types scalars, lax
    mode still rejects `"abc"` for an int, and it accepts what YAML and `dump_config` write for richer types
    (an int for a float, a list for a tuple, an ISO string for a datetime).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def drop_retired(data: Any, retired: Mapping[str, str], section: str) -> Any:
    """`data` (a config mapping before validation) without the keys a release retired, each dropped with a
    DeprecationWarning saying why (`retired`: key → reason), so configs and saved run configs written before keep
    loading instead of failing on an unknown key."""
    if not isinstance(data, Mapping):
        return data
    for key in retired.keys() & data.keys():
        warnings.warn(f"{section}{key} is no longer read ({retired[key]}); remove it from the config",
                      DeprecationWarning, stacklevel=2)
    return {key: value for key, value in data.items() if key not in retired}


class RayConfig(StrictModel):
    """How the job reaches Ray."""

    address: str | None = Field(
        None,
        description="Ray cluster address; null means the cluster of `ray job submit` (RAY_ADDRESS) "
        "or else a local in-process cluster",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local cluster this process starts; unused when joining one"
    )
    namespace: str = Field("rlhf-ray", description="Ray namespace of the job's named actors")
    include_dashboard: bool = Field(False, description="start the Ray dashboard with a local cluster")
    log_to_driver: bool = Field(True, description="stream worker logs to the driver's stdout")


class WandbConfig(StrictModel):
    """Experiment logging; offline by default so nothing leaves the machine unless asked."""

    mode: Literal["offline", "online", "disabled"] = Field("offline", description="wandb run mode")
    project: str = Field("rlhf-ray", description="wandb project name")
    dir: str | None = Field(None, description="local directory of wandb files; null means <output_dir>/wandb")
    tags: tuple[str, ...] = Field((), description="tags attached to the wandb run")


class LineageConfig(StrictModel):
    """Where content-hashed lineage records of produced artefacts are kept."""

    root: str | None = Field(
        None, description="lineage registry directory or filesystem URI; null means <output_dir>/lineage"
    )


class JobConfig(StrictModel):
    """Settings every job shares; a job's schema subclasses this and adds its own sections."""

    seed: int = Field(0, ge=0, description="seed of every random choice the job makes")
    output_dir: str = Field(
        "runs/default", description="local directory or pyarrow filesystem URI (e.g. s3://) the job writes to"
    )
    ray: RayConfig = Field(RayConfig(), description="Ray connection")
    wandb: WandbConfig = Field(WandbConfig(), description="experiment logging")
    lineage: LineageConfig = Field(LineageConfig(), description="lineage registry")
