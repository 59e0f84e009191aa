"""The lineage registry: a content-hashed record per artifact, and every event in the tamper-evident log.

Layout under the root (a local directory or any pyarrow filesystem URI):

    artifacts/<id>.json        one immutable record per artifact (kind, name, digest, parents, config, ...)
    events/<seq:012d>.json     the HMAC-chained event log (see `rlhf_ray.lineage.log`; its key:
                               `rlhf_ray.lineage.keys`, by default `<root>/../secrets/audit.key`)

A record is written once: registering the same definition again returns it unchanged, and later facts about
the artifact (new metrics, gate verdicts, promotions, rollbacks) are events, so nothing that was once true
is overwritten. Each `register` event carries the full record, which lets `verify` show a record file
that was edited after the fact.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from rlhf_ray.lineage.hashing import AuditKey, LineageError, artifact_id, canonical_json, check_parents
from rlhf_ray.lineage.keys import load_audit_key
from rlhf_ray.lineage.log import EventLog, LogEntry, VerifyReport, publish_once
from rlhf_ray.storage import StorageRoot

ARTIFACTS = "artifacts"
REGISTER = "register"
METRICS = "metrics"
SHOWN_METRICS = 6


@dataclass(frozen=True)
class ArtifactRecord:
    """What an artifact is (`kind`, `content_digest`, `parents`, `config`: these make its `id`) and what is
    known about it at registration (`name`, `metrics`, `uri`, `created_at`)."""

    id: str
    kind: str
    name: str
    content_digest: str
    parents: tuple[str, ...]
    config: dict[str, Any]
    metrics: dict[str, Any]
    uri: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parents": list(self.parents)}

    @classmethod
    def from_dict(cls, data: Any) -> ArtifactRecord:
        if not isinstance(data, dict):
            raise LineageError(f"artifact record is a {type(data).__name__}; expected a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise LineageError(f"artifact record {data.get('id', '?')!r} lacks field(s) {missing}")
        values = {f.name: data[f.name] for f in fields(cls)}
        return cls(**{**values, "parents": tuple(values["parents"])})


def utc_now() -> datetime:
    return datetime.now(UTC)


class LineageRegistry:
    """Artifacts and events under one root. Cheap to construct: nothing is read or written until asked.

    `clock` returns the current time as a timezone-aware datetime; tests inject a fixed one. `key` is the audit
    chain's HMAC key; by default it is found as `rlhf_ray.lineage.keys` describes (env, key file), when first needed.
    """

    def __init__(self, root: str | os.PathLike[str], clock: Callable[[], datetime] = utc_now,
                 key: bytes | None = None) -> None:
        self._root = StorageRoot.from_uri(root)
        self._clock = clock
        self._given_key = None if key is None else AuditKey(key, "the key passed to LineageRegistry")
        self._log = EventLog(self._root, self._now, self._audit_key)

    def register(
        self,
        kind: str,
        name: str,
        content_digest: str,
        parents: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        uri: str = "",
        created_at: str | None = None,
    ) -> ArtifactRecord:
        """Record an artifact (idempotent) and log a `register` event; returns the stored record.

        Every parent must already be registered. Registering an existing definition returns the stored
        record; if it comes with different metrics, those are logged as a `metrics` event instead.
        """
        for field, value in (("name", name), ("uri", uri), ("created_at", created_at or "")):
            if not isinstance(value, str):
                raise LineageError(f"{field} of {kind} {name!r} is a {type(value).__name__}; "
                                   "expected a string")
        parent_ids = tuple(check_parents(parents))
        config_json, metrics_json = _plain("config", config), _plain("metrics", metrics)
        new_id = artifact_id(kind, content_digest, parent_ids, config_json)
        for parent in parent_ids:
            if not self.has(parent):
                raise LineageError(f"cannot register {kind} {name!r}: parent {parent!r} is not registered "
                                   f"under {self._root.base}")
        if not self.has(new_id):
            self._log.key(create=True)  # a missing key fails here, not between the record and its event
            record = ArtifactRecord(new_id, kind, name, content_digest, parent_ids, config_json, metrics_json,
                                    uri, created_at or self._now())
            if publish_once(self._root, _pretty_json(record.to_dict()), ARTIFACTS, f"{new_id}.json"):
                self._log.append(REGISTER, new_id, _register_payload(record))
                return record
        existing = self.get(new_id)
        if metrics is not None and metrics_json != existing.metrics:
            self._log.append(METRICS, new_id, {"metrics": metrics_json})
        return existing

    def record_event(self, event: str, artifact_id: str | None, payload: dict[str, Any]) -> LogEntry:
        """Log a fact about an artifact (gate verdict, promotion, rollback, export...), or with None
        a fact about no single artifact."""
        target = None if artifact_id is None else self.get(artifact_id).id
        return self._log.append(event, target, payload)

    def has(self, artifact_id: str) -> bool:
        """Whether exactly this id is registered (no prefix matching)."""
        return self._root.exists(ARTIFACTS, f"{artifact_id}.json")

    def get(self, artifact_id: str) -> ArtifactRecord:
        """The record of `artifact_id`, or of the one registered id that starts with it."""
        if not isinstance(artifact_id, str) or not artifact_id:
            raise LineageError(f"artifact id {artifact_id!r} must be a non-empty string")
        if self.has(artifact_id):
            return self._read_record(artifact_id)
        matches = [i for i in self._registered_ids() if i.startswith(artifact_id)]
        if len(matches) == 1:
            return self._read_record(matches[0])
        if matches:
            raise LineageError(f"artifact id prefix {artifact_id!r} is ambiguous: it matches {matches}")
        raise LineageError(f"unknown artifact {artifact_id!r}: no record under {self._root.join(ARTIFACTS)}")

    def ancestors(self, artifact_id: str) -> list[ArtifactRecord]:
        """Every ancestor once, breadth-first (parents in their order, then grandparents, ...)."""
        start = self.get(artifact_id)
        seen, queue, found = {start.id}, deque(start.parents), []
        while queue:
            parent_id = queue.popleft()
            if parent_id in seen:
                continue
            seen.add(parent_id)
            parent = self.get(parent_id)
            found.append(parent)
            queue.extend(parent.parents)
        return found

    def records(self) -> list[ArtifactRecord]:
        """Every registered record, in id order."""
        return [self._read_record(record_id) for record_id in self._registered_ids()]

    def with_content(self, content_digest: str) -> list[ArtifactRecord]:
        """Every record of exactly this content, oldest first: how a directory handed to a job is recognised
        as an artifact an earlier job produced."""
        return sorted((r for r in self.records() if r.content_digest == content_digest), key=lambda r: r.created_at)

    def events(self, artifact_id: str | None = None) -> list[LogEntry]:
        """All log entries in order, or those about one artifact (id or unambiguous prefix)."""
        entries = self._log.entries()
        if artifact_id is None:
            return entries
        target = self.get(artifact_id).id
        return [e for e in entries if e.artifact_id == target]

    def verify(self, anchor: str | None = None) -> VerifyReport:
        """Check the keyed hash chain (and that it still holds the entry of `anchor`, a head hash recorded
        earlier), then that every record file matches the `register` event that logged it."""
        report = self._log.verify(anchor)
        if not report.ok:
            return report
        registered = {e.artifact_id: e for e in self._log.entries() if e.event == REGISTER}
        for record_id in self._registered_ids():
            entry = registered.pop(record_id, None)
            problem = self._record_problem(record_id, entry)
            if problem:
                return replace(report, ok=False, problem_seq=entry.seq if entry else None, problem=problem)
        if registered:
            entry = min(registered.values(), key=lambda e: e.seq)
            problem = f"entry {entry.seq} registers {entry.artifact_id!r} but its record file is gone"
            return replace(report, ok=False, problem_seq=entry.seq, problem=problem)
        return report

    def format_chain(self, artifact_id: str) -> str:
        """The artifact and its parents as an indented tree: kind, name, id and key metrics per line."""
        record = self.get(artifact_id)
        lines = [_describe(record)]
        self._tree_lines(record, "", {record.id}, lines)
        return "\n".join(lines)

    def _tree_lines(self, record: ArtifactRecord, indent: str, shown: set[str], lines: list[str]) -> None:
        for position, parent_id in enumerate(record.parents):
            last = position == len(record.parents) - 1
            branch, extension = ("└── ", "    ") if last else ("├── ", "│   ")
            parent = self.get(parent_id)
            if parent.id in shown:
                lines.append(f"{indent}{branch}{parent.kind}  {parent.name or '-'}  {parent.id}  (see above)")
                continue
            shown.add(parent.id)
            lines.append(f"{indent}{branch}{_describe(parent)}")
            self._tree_lines(parent, indent + extension, shown, lines)

    def _record_problem(self, record_id: str, entry: LogEntry | None) -> str | None:
        if entry is None:
            return f"record {record_id!r} has no register event in the log"
        try:
            record = self._read_record(record_id)
        except LineageError as error:
            return str(error)
        if record.id != record_id or _register_payload(record) != entry.payload:
            return f"record {record_id!r} differs from what entry {entry.seq} registered (record was edited)"
        if artifact_id(record.kind, record.content_digest, record.parents, record.config) != record_id:
            return f"record {record_id!r}: its definition no longer hashes to its id (record was edited)"
        return None

    def _registered_ids(self) -> list[str]:
        paths = self._root.list_files(ARTIFACTS, suffixes=(".json",))
        return [p.rsplit("/", 1)[-1].removesuffix(".json") for p in paths]

    def _read_record(self, record_id: str) -> ArtifactRecord:
        try:
            data = json.loads(self._root.read_bytes(ARTIFACTS, f"{record_id}.json"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LineageError(f"record of {record_id!r} is not valid JSON: {error}") from error
        return ArtifactRecord.from_dict(data)

    def _audit_key(self, create: bool) -> AuditKey:
        return self._given_key or load_audit_key(self._root, create)

    def _now(self) -> str:
        moment = self._clock()
        if moment.tzinfo is None:
            raise LineageError(f"lineage clock returned naive datetime {moment!r}; "
                               "expected a timezone-aware one")
        return moment.isoformat()


def _plain(field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep, JSON-normalised copy (tuples become lists, so a stored record compares equal to a new one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LineageError(f"{field} is a {type(value).__name__}; expected a mapping")
    return json.loads(canonical_json(dict(value)))


def _pretty_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode()


def _register_payload(record: ArtifactRecord) -> dict[str, Any]:
    return {k: v for k, v in record.to_dict().items() if k != "id"}


def _describe(record: ArtifactRecord) -> str:
    scalars = sorted((k, v) for k, v in record.metrics.items() if isinstance(v, str | int | float))
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in scalars[:SHOWN_METRICS])
    more = f" (+{len(scalars) - SHOWN_METRICS} more)" if len(scalars) > SHOWN_METRICS else ""
    return f"{record.kind}  {record.name or '-'}  {record.id}  {shown}{more}".rstrip()
