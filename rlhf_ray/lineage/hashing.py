"""Canonical JSON and content-hashed artifact ids.

An id must be a pure function of what an artifact *is* (its kind, content, parents and config), so the
same definition always hashes the same wherever and whenever it is computed. That needs one byte-exact
encoding: sorted keys, no whitespace, UTF-8, floats as `repr`, and only JSON's own types. Anything that
would make the encoding ambiguous (NaN, non-string keys, arbitrary objects) is refused, naming where it is.

`AuditKey` is the keyed MAC that chains the event log (`rlhf_ray.lineage.log`); where its key comes from is
`rlhf_ray.lineage.keys`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")
ID_DIGEST_CHARS = 16
MIN_KEY_BYTES = 16
KEY_ID_CHARS = 16
_KEY_ID_DOMAIN = b"rlhf-ray audit key id\x00"


class LineageError(ValueError):
    """A lineage request that cannot be honoured; the message names the id or field and what was expected."""


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes of `obj`: sorted keys, no whitespace, UTF-8, floats as `repr`.

    Tuples encode as lists. NaN/inf, non-string keys and non-JSON types raise `LineageError`
    with the path of the offending value.
    """
    _check_encodable(obj, "$")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode()


def _check_encodable(obj: Any, path: str) -> None:
    if obj is None or isinstance(obj, str | bool | int):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise LineageError(f"canonical JSON: {path} is {obj!r}; expected a finite number")
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise LineageError(f"canonical JSON: key {key!r} at {path} is a {type(key).__name__}; "
                                   "expected str")
            _check_encodable(value, f"{path}.{key}")
        return
    if isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            _check_encodable(value, f"{path}[{index}]")
        return
    raise LineageError(f"canonical JSON: {path} is a {type(obj).__name__}; expected a JSON value")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AuditKey:
    """The HMAC-SHA256 key of the audit chain. `key_id` names it in every entry (a keyed digest of a fixed label:
    it tells keys apart and reveals nothing of the key); `source` says where it was read, for error messages.
    Its repr never shows the key."""

    __slots__ = ("_key", "key_id", "source")

    def __init__(self, key: bytes, source: str) -> None:
        if not isinstance(key, bytes | bytearray):
            raise LineageError(f"audit key from {source} is a {type(key).__name__}; expected bytes")
        if len(key) < MIN_KEY_BYTES:
            raise LineageError(f"audit key from {source} is {len(key)} bytes; expected at least {MIN_KEY_BYTES} "
                               "random bytes (e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
        self._key = bytes(key)
        self.source = source
        self.key_id = self.mac(_KEY_ID_DOMAIN)[:KEY_ID_CHARS]

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r}, source={self.source!r})"

    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 of `data` under the key, as 64 hex characters."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


def artifact_id(kind: str, content_digest: str, parents: Sequence[str], config: Mapping[str, Any]) -> str:
    """`<kind>-<16 hex>`: the sha256 of the canonical definition (kind, content digest, parents, config).

    Parent order is part of the definition (a policy's parents are read in order: base model, reward model).
    """
    check_kind(kind)
    if not isinstance(content_digest, str) or not content_digest:
        raise LineageError(f"content_digest of {kind} is {content_digest!r}; expected a non-empty string")
    parent_ids = check_parents(parents)
    if not isinstance(config, Mapping):
        raise LineageError(f"config of {kind} is a {type(config).__name__}; expected a mapping")
    definition = {"kind": kind, "content_digest": content_digest, "parents": parent_ids,
                  "config": dict(config)}
    return f"{kind}-{sha256_hex(canonical_json(definition))[:ID_DIGEST_CHARS]}"


def check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise LineageError(f"artifact kind {kind!r} is not a lowercase slug matching {KIND_PATTERN.pattern}")


def check_parents(parents: Sequence[str]) -> list[str]:
    """Parents as a list of distinct id strings; a bare string is refused (it would split into characters)."""
    if isinstance(parents, str) or not isinstance(parents, Sequence):
        raise LineageError(f"parents {parents!r} must be a sequence of artifact ids")
    parent_ids = list(parents)
    for parent in parent_ids:
        if not isinstance(parent, str) or not parent:
            raise LineageError(f"parent {parent!r} is not an artifact id string")
    duplicates = sorted({p for p in parent_ids if parent_ids.count(p) > 1})
    if duplicates:
        raise LineageError(f"parents list {duplicates} more than once; expected each parent once")
    return parent_ids
