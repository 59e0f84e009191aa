"""`rlhf-ray export`: copy a curated dataset version to another location, under the residency policy."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.residency import check_export, residency_violations
from rlhf_ray.dataplane.versions import curated_folder, read_curated, read_manifest, resolve_version
from rlhf_ray.lineage.jobs import lineage_for
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for

NAME = "export"
HELP = "copy a curated dataset version to a destination, refusing rows the residency policy keeps out"


class ExportError(ValueError):
    """The export request itself is incomplete."""


class ExportConfig(JobConfig):
    output_dir: str = Field("runs/ingest", description="the dataset root that `rlhf-ray ingest` wrote")
    version: str | None = Field(None, description="dataset version to export (default: LATEST)")
    destination: str | None = Field(None, description="directory or filesystem URI to write to")
    destination_region: str | None = Field(None, description="the region the destination is in")
    allowed_destinations: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"eu": ("eu",), "us": ("us", "eu"), "apac": ("apac",)},
        description="for each row region, the destination regions its rows may be written to",
    )
    drop_disallowed: bool = Field(False, description="export only the allowed rows instead of refusing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset root written by ingest (sets output_dir)")
    parser.add_argument("--dest", help="destination directory or URI (sets destination)")
    parser.add_argument("--dest-region", help="region of the destination (sets destination_region)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"data": "output_dir", "dest": "destination", "dest_region": "destination_region"}
    return run(resolve_config(ExportConfig, args, flags))


def export(config: ExportConfig) -> dict[str, Any]:
    if not config.destination or not config.destination_region:
        raise ExportError("export needs destination and destination_region (--dest URI --dest-region REGION)")
    source = StorageRoot.from_uri(config.output_dir)
    version = resolve_version(source, config.version)
    tables = read_curated(source, curated_folder(version))
    regions = [r for t in tables.values() for r in t.column("region").to_pylist()]
    refused = residency_violations(regions, config.destination_region, config.allowed_destinations)
    if not config.drop_disallowed:
        check_export(regions, config.destination_region, config.allowed_destinations)
    allowed = pa.array([r for r, dests in config.allowed_destinations.items() if config.destination_region in dests],
                       pa.string())
    destination = StorageRoot.from_uri(config.destination)
    written = 0
    for signal_type, table in tables.items():
        kept = table.filter(pc.is_in(table.column("region"), value_set=allowed))
        if kept.num_rows:
            destination.write_parquet_atomic(kept, signal_type, "part-00000.parquet")
            written += kept.num_rows
    manifest = read_manifest(source, version)
    payload = {"version": version, "destination": config.destination, "destination_region": config.destination_region,
               "rows": written, "refused": dict(refused)}
    destination.write_bytes_atomic(json.dumps(payload, indent=2, sort_keys=True).encode(), "_export.json")
    lineage_for(config, manifest.get("lineage_root")).record_event("export", manifest["dataset_id"], payload)
    return {**payload, "refused_rows": sum(refused.values())}


def run(config: ExportConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = export(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
