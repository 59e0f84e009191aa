"""Lineage: content-hashed ids and records for every artifact, and a tamper-evident log of every event.

`LineageRegistry(root)` is the entry point; `root` is a local directory or any pyarrow filesystem URI.
"""

from rlhf_ray.lineage.hashing import LineageError, artifact_id, canonical_json
from rlhf_ray.lineage.log import GENESIS_HASH, LogEntry, VerifyReport
from rlhf_ray.lineage.registry import ArtifactRecord, LineageRegistry

__all__ = [
    "GENESIS_HASH",
    "ArtifactRecord",
    "LineageError",
    "LineageRegistry",
    "LogEntry",
    "VerifyReport",
    "artifact_id",
    "canonical_json",
]
