"""Shard-set manifests: the `manifest.json` beside a folder of feedback shards that names the lineage artifact
the shards belong to and lists them ({"artifact_id", "lineage_root", "files": [{"path": relative}, ...]}).

`simulate` writes one for its shards, a canary for the feedback it captured; `ingest` reads them to give a
dataset version the right lineage parents. Manifests are written last and atomically: a listed shard exists.
"""

from __future__ import annotations

import json
from typing import Any

from rlhf_ray.storage import StorageRoot

SHARD_MANIFEST = "manifest.json"


def read_shard_manifest(root: StorageRoot, folder: str) -> dict[str, Any] | None:
    """The manifest in `folder` (a path on `root`'s filesystem), or None if there is none."""
    path = f"{folder.rstrip('/')}/{SHARD_MANIFEST}"
    if not root.fs.get_file_info(path).is_file:
        return None
    with root.fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def write_shard_manifest(root: StorageRoot, artifact_id: str, lineage_root: str, files: list[str],
                         **extra: Any) -> str:
    """Commit the manifest of the shards `files` (paths on `root`) under `root`; returns its path."""
    manifest = {"artifact_id": artifact_id, "lineage_root": lineage_root,
                "files": [{"path": root.relative(path)} for path in files], **extra}
    return root.write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(), SHARD_MANIFEST)
