"""Where the audit chain's HMAC key comes from, kept like the pseudonym key: never in the log, never a default.

The first of these that is set wins:

1. `RLHF_RAY_AUDIT_KEY`: the key as hex (at least 16 bytes; e.g. `python -c 'import secrets;
   print(secrets.token_hex(32))'`), or raw text of at least 16 bytes.
2. `RLHF_RAY_AUDIT_KEY_FILE`: a file holding such a key; it must exist.
3. For a local lineage root, `<the root's parent folder>/secrets/audit.key` (next to a run's
   `secrets/pseudonym.key`). The first write to the log creates it when absent: 32 random bytes as hex, mode
   0600, in a folder created 0700, published atomically, so concurrent writers agree on one key. Reports skip
   `secrets/` folders, and nothing copies it with the lineage root, which lies beside it, not around it.

A remote root (`s3://`, `gs://`, ...) has no default key file: set 1 or 2 on every writer and verifier.
Verification never creates a key: without the one the log was chained with, it says which key id it needs.
"""

from __future__ import annotations

import os
import re

from rlhf_ray.lineage.hashing import AuditKey, LineageError
from rlhf_ray.lineage.log import publish_once
from rlhf_ray.storage import StorageRoot

AUDIT_KEY_ENV = "RLHF_RAY_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "RLHF_RAY_AUDIT_KEY_FILE"
SECRETS_DIR = "secrets"
KEY_FILE_NAME = "audit.key"
KEY_FILE_BYTES = 32
SECRETS_DIR_MODE = 0o700
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def default_key_file(root: StorageRoot) -> str | None:
    """`<parent of the root>/secrets/audit.key` for a local root; None for a remote one."""
    if not root.is_local:
        return None
    return os.path.join(os.path.dirname(root.base.rstrip("/")), SECRETS_DIR, KEY_FILE_NAME)


def load_audit_key(root: StorageRoot, create: bool) -> AuditKey:
    """The audit key of the log under `root` (see the module docstring for the order); `create` writes the
    default key file when nothing else names a key (a writer does, a verifier does not)."""
    text = os.environ.get(AUDIT_KEY_ENV, "")
    if text.strip():
        return _decode(text, f"environment variable {AUDIT_KEY_ENV}")
    named = os.environ.get(AUDIT_KEY_FILE_ENV, "").strip()
    path = os.path.expanduser(named) if named else default_key_file(root)
    if path is None:
        raise LineageError(f"no audit key for the remote lineage root {root.base!r}: set {AUDIT_KEY_ENV} (hex) or "
                           f"{AUDIT_KEY_FILE_ENV} (a key file); a remote root has no default key file")
    if not os.path.isfile(path):
        if named:
            raise LineageError(f"{AUDIT_KEY_FILE_ENV} names {path!r}, which does not exist; expected a file holding "
                               f"the audit key as hex (or unset it to use {default_key_file(root)!r})")
        if not create:
            raise LineageError(f"no audit key: {path!r} does not exist and {AUDIT_KEY_ENV} is not set; a log "
                               "is verified with the key it was chained with")
        _create_key_file(path)
    with open(path, encoding="utf-8") as stream:
        return _decode(stream.read(), f"key file {path!r}")


def _decode(text: str, source: str) -> AuditKey:
    """Hex text (an even number of hex digits) decodes to bytes; anything else is used as raw UTF-8."""
    value = text.strip()
    return AuditKey(bytes.fromhex(value) if _HEX.fullmatch(value) else value.encode(), source)


def _create_key_file(path: str) -> None:
    """A new random key at `path` (0600, folder 0700), unless another writer published one first."""
    folder, name = os.path.split(path)
    os.makedirs(folder, mode=SECRETS_DIR_MODE, exist_ok=True)
    publish_once(StorageRoot.from_uri(folder), (os.urandom(KEY_FILE_BYTES).hex() + "\n").encode(), name)
