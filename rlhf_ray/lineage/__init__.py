"""Lineage: content-hashed ids and records for every artifact, and a tamper-evident log of every event.

`LineageRegistry(root)` is the entry point; `root` is a local directory or any pyarrow filesystem URI. The log is
chained with an HMAC key kept outside it (`rlhf_ray.lineage.keys`: `RLHF_RAY_AUDIT_KEY`, `RLHF_RAY_AUDIT_KEY_FILE`
or `<root>/../secrets/audit.key`).
"""

from rlhf_ray.lineage.hashing import AuditKey, LineageError, artifact_id, canonical_json
from rlhf_ray.lineage.keys import AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, default_key_file, load_audit_key
from rlhf_ray.lineage.log import GENESIS_HASH, SCHEME, LogEntry, VerifyReport
from rlhf_ray.lineage.registry import ArtifactRecord, LineageRegistry

__all__ = [
    "AUDIT_KEY_ENV",
    "AUDIT_KEY_FILE_ENV",
    "GENESIS_HASH",
    "SCHEME",
    "ArtifactRecord",
    "AuditKey",
    "LineageError",
    "LineageRegistry",
    "LogEntry",
    "VerifyReport",
    "artifact_id",
    "canonical_json",
    "default_key_file",
    "load_audit_key",
]
