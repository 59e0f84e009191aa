"""Committed dataset versions on a storage root: where they live and how to read them."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from rlhf_ray.contracts import SignalType
from rlhf_ray.storage import StorageRoot

LATEST = "LATEST"


class DatasetVersionError(ValueError):
    """A dataset root or version that does not exist or was never committed."""


def manifest_path(version: str) -> str:
    return f"versions/{version}.json"


def curated_folder(version: str, signal_type: str | None = None) -> str:
    folder = f"curated/{version}"
    return f"{folder}/{signal_type}" if signal_type else folder


def resolve_version(root: StorageRoot, version: str | None) -> str:
    """`version` if committed, else the root's latest committed version."""
    if version is None:
        if not root.exists(LATEST):
            raise DatasetVersionError(f"{root.base!r} has no committed dataset version (no {LATEST} file); "
                                      "run `rlhf-ray ingest` first")
        version = root.read_bytes(LATEST).decode().strip()
    if not root.exists(manifest_path(version)):
        raise DatasetVersionError(f"dataset version {version!r} is not committed under {root.base!r}")
    return version


def read_manifest(root: StorageRoot, version: str) -> dict[str, Any]:
    return json.loads(root.read_bytes(manifest_path(version)))


def read_curated(root: StorageRoot, folder: str) -> dict[str, pa.Table]:
    """Typed tables per signal type below a curated folder (committed or staged)."""
    tables = {}
    for signal_type in SignalType:
        files = root.list_files(f"{folder}/{signal_type.value}", suffixes=(".parquet",))
        if files:
            tables[signal_type.value] = pa.concat_tables(pq.read_table(f, filesystem=root.fs) for f in files)
    return tables


def commit_version(root: StorageRoot, staging: str, version: str, manifest: dict[str, Any]) -> None:
    """Move a fully written staging folder into place, then write the manifest: the manifest is the commit.

    Readers trust only versions with a manifest, so a crash before it leaves nothing half-visible.
    """
    for folder in ("curated", "quarantine"):
        source = f"{staging}/{folder}"
        if root.fs.get_file_info(source).type == pa.fs.FileType.Directory:
            root.makedirs(folder)
            root.fs.move(source, root.join(f"{folder}/{version}"))
    root.fs.delete_dir(staging)
    root.write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(), manifest_path(version))
    root.write_bytes_atomic(version.encode(), LATEST)
