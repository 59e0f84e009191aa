"""`rlhf-ray retention`: drop curated rows past their retention period, as a new committed version."""

from __future__ import annotations

import argparse
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.dedup import dataset_version
from rlhf_ray.dataplane.quality import quality_report
from rlhf_ray.dataplane.residency import expired
from rlhf_ray.dataplane.versions import commit_version, curated_folder, read_curated, read_manifest, resolve_version
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.jobs import lineage_root
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for

NAME = "retention"
HELP = "drop curated rows older than their retention period; commit the rest as a new dataset version"


class RetentionConfig(JobConfig):
    output_dir: str = Field("runs/ingest", description="the dataset root that `rlhf-ray ingest` wrote")
    version: str | None = Field(None, description="dataset version to start from (default: LATEST)")
    days: dict[str, int] = Field(default_factory=lambda: {"implicit": 90},
                                 description="retention in days per signal type")
    default_days: int = Field(365, ge=1, description="retention for signal types not listed in `days`")
    now: datetime | None = Field(None, description="reference time (default: wall clock)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset root written by ingest (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(RetentionConfig, args, {"data": "output_dir"}))


def apply_retention(config: RetentionConfig) -> dict[str, Any]:
    now = config.now or datetime.now(timezone.utc)
    root = StorageRoot.from_uri(config.output_dir)
    parent_version = resolve_version(root, config.version)
    parent = read_manifest(root, parent_version)
    kept: dict[str, pa.Table] = {}
    dropped: dict[str, int] = {}
    for signal_type, table in read_curated(root, curated_folder(parent_version)).items():
        old = expired(table, config.days.get(signal_type, config.default_days), now)
        kept[signal_type] = table.filter(pc.invert(old))
        dropped[signal_type] = table.num_rows - kept[signal_type].num_rows
    registry_root = lineage_root(config, parent.get("lineage_root"))
    registry = LineageRegistry(registry_root)
    if not any(dropped.values()):
        registry.record_event("retention", parent["dataset_id"], {"dropped": dropped, "version": parent_version})
        return {"dataset_version": parent_version, "dataset_id": parent["dataset_id"], "dropped_rows": 0,
                "dropped": dropped}
    keys = pa.concat_tables(t.select(["signal_id", "content_hash"]) for t in kept.values())
    version = dataset_version(keys)
    staging = f".staging-{uuid.uuid4().hex}"
    for signal_type, table in kept.items():
        if table.num_rows:
            root.write_parquet_atomic(table, staging, "curated", signal_type, "part-00000.parquet")
    artifact = registry.register("dataset", version, version.removeprefix("ds-"), parents=(parent["dataset_id"],),
                                 config={"retention_days": config.days, "default_days": config.default_days,
                                         "now": now.isoformat()},
                                 metrics={"dropped_rows": sum(dropped.values())},
                                 uri=root.join(curated_folder(version)))
    registry.record_event("retention", artifact.id, {"dropped": dropped, "from_version": parent_version})
    manifest = {"version": version, "dataset_id": artifact.id, "parent_version": parent_version,
                "lineage_root": registry_root,
                "accepted_rows": keys.num_rows, "dropped": dropped,
                "quality": quality_report(kept, Counter(), now)}
    commit_version(root, root.join(staging), version, manifest)
    return {"dataset_version": version, "dataset_id": artifact.id, "parent_version": parent_version,
            "dropped_rows": sum(dropped.values()), "dropped": dropped, "accepted_rows": keys.num_rows}


def run(config: RetentionConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = apply_retention(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
