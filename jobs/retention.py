"""`rlhf-ray retention`: delete rows past their retention period from every store, the way `rlhf-ray erase` does.

Expired rows (event time older than their signal type's period) leave the raw, canary and workbench shards, every
dataset version (each superseded by a version without them, whose files are then deleted), quarantine, the pair
sets built from them and the forward index; models trained on them are marked `trained_on_erased_data`, and the
lineage chain gets a `retention` event with counts per store (`rlhf_ray.dataplane.erasure`). Crash-safe and
idempotent like `erase`: a re-run finishes a killed pass, and a second pass finds nothing more to remove.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from jobs.curate import pairs_version
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.erasure import discover_stores, erase_rows
from rlhf_ray.dataplane.selectors import ExpirySelector
from rlhf_ray.dataplane.versions import read_manifest, resolve_version
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.jobs import lineage_root
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for

NAME = "retention"
HELP = "delete rows past their retention period from every store (shards, versions, quarantine, pairs, index)"


class RetentionConfig(JobConfig):
    output_dir: str = Field("runs/ingest", description="the dataset root that `rlhf-ray ingest` wrote")
    version: str | None = Field(None, description="dataset version whose lineage names the stores (default: LATEST)")
    days: dict[str, int] = Field(default_factory=lambda: {"implicit": 90},
                                 description="retention in days per signal type")
    default_days: int = Field(365, ge=1, description="retention for signal types not listed in `days`")
    now: datetime | None = Field(None, description="reference time (default: wall clock)")
    workbench_dirs: list[str] = Field(default_factory=list, description="workbench output dirs (their shards/)")
    shard_dirs: list[str] = Field(default_factory=list, description="more feedback shard folders to clean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset root written by ingest (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(RetentionConfig, args, {"data": "output_dir"}))


def apply_retention(config: RetentionConfig) -> dict[str, Any]:
    now = config.now or datetime.now(UTC)
    data = StorageRoot.from_uri(config.output_dir)
    start = resolve_version(data, config.version)
    manifest = read_manifest(data, start)
    root = lineage_root(config, manifest.get("lineage_root"))
    registry = LineageRegistry(root)
    stores = discover_stores(registry, config.workbench_dirs, config.shard_dirs).with_dataset_root(config.output_dir)
    selector = ExpirySelector(config.days, config.default_days, now)
    policy = {"days": config.days, "default_days": config.default_days, "now": now.isoformat()}
    result = erase_rows(root, stores, selector, NAME, "retention period passed", pairs_version,
                        extra={"policy": policy}, primary=config.output_dir)
    dropped = next((e["by_type"] for e in result.get("dataset_versions", []) if e["version"] == start), {})
    latest = resolve_version(data, None)
    current = read_manifest(data, latest)
    if result.get("nothing_to_erase"):
        registry.record_event(NAME, current["dataset_id"], {"removed": result["removed"], "policy": policy})
    return {"dataset_version": latest, "dataset_id": current["dataset_id"], "parent_version": start,
            "dropped_rows": sum(dropped.values()), "dropped": dropped, "accepted_rows": current["accepted_rows"],
            **{k: v for k, v in result.items() if k != "policy"}}


def run(config: RetentionConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = apply_retention(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(json.loads(json.dumps(figures, default=str)))
