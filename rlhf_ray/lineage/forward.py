"""Forward lineage: from a subject (a user's or annotator's pseudonym) or one signal to every artifact it reached.

The registry runs backwards (an artifact → its parents). A privacy request starts at the other end, so ingest
and curate also write an index beside the registry, one Parquet file per data artifact:

    <lineage root>/forward/<artifact id>.parquet              subject, signal_id, signal_type, store, item
    <lineage root>/forward/by_signal/<artifact id>.parquet    the same entries, sorted by signal id

- a dataset version (`ingest`): one entry per curated row (`store` = curated) and per quarantined row whose
  subject could be read (`store` = quarantine);
- a pair set (`curate`): one entry per (pair, source signal) (`store` = pairs, `item` = the pair id), with the
  subject of that signal.

Entries are sorted by subject (and, in the copy, by signal id) in small row groups, so a lookup reads one row
group per file (Parquet statistics skip the rest) instead of every row. What the artifacts reached further
(models trained on a pair set, their sweeps, gate verdicts, deployments) is the registry's descendants of the
indexed artifacts.

`subject` is the pseudonym as stored: ingest pseudonymizes every `actor_id`, including ids that were pseudonyms
already (a canary's captured feedback carries `usr_…` pseudonyms), so a subject is looked up under its aliases
`[P, pseudonym(P)]` when the key is at hand. The index holds pseudonyms: it lives outside the hash chain (which
cannot be edited) and `rlhf-ray erase` rewrites it.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rlhf_ray.governance.pseudonyms import DEFAULT_KEY_ENV, Pseudonymizer, PseudonymSection
from rlhf_ray.lineage.registry import ArtifactRecord, LineageRegistry
from rlhf_ray.storage import StorageRoot

FORWARD = "forward"
BY_SIGNAL = "by_signal"
ROW_GROUP_ROWS = 16_384
DATA_KINDS = frozenset({"shards", "feedback", "dataset", "pairs"})
CURATED, QUARANTINE, PAIRS = "curated", "quarantine", "pairs"
INDEX_SCHEMA = pa.schema([
    pa.field("subject", pa.string()),
    pa.field("signal_id", pa.string()),
    pa.field("signal_type", pa.string()),
    pa.field("store", pa.string()),
    pa.field("item", pa.string()),
])
_ACTOR_IN_TEXT = re.compile(r'"actor_id"\s*:\s*"([^"]*)"')


class ForwardLineageError(ValueError):
    """A forward-lineage question that cannot be answered; the message names the option and what was expected."""


def subject_aliases(subject: str, pseudonymizer: Pseudonymizer | None) -> list[str]:
    """The forms a subject's pseudonym `P` takes in stored data: `P` itself and, with the key, `pseudonym(P)`
    (what ingest makes of rows that arrived already pseudonymized, e.g. a canary's captured feedback)."""
    if not isinstance(subject, str) or not subject.strip():
        raise ForwardLineageError(f"subject {subject!r}: expected a pseudonym such as usr_0123456789abcdef")
    return [subject] if pseudonymizer is None else [subject, pseudonymizer.pseudonym(subject)]


def quarantine_subject(record: str | None) -> str | None:
    """The (pseudonymized) actor of a quarantined row, read from its stored record text; None if it has none."""
    if not record:
        return None
    try:
        value = json.loads(record)
    except ValueError:
        match = _ACTOR_IN_TEXT.search(record)
        return match.group(1) if match else None
    actor = value.get("actor_id") if isinstance(value, dict) else None
    return actor if isinstance(actor, str) else None


def dataset_entries(curated: Mapping[str, pa.Table], quarantine: pa.Table | None) -> pa.Table:
    """Index entries of a dataset version: every curated row, and every quarantined row with a readable actor."""
    parts = [pa.table({"subject": table.column("actor_id").cast(pa.string()),
                       "signal_id": table.column("signal_id").cast(pa.string()),
                       "signal_type": pa.array([signal_type] * table.num_rows, pa.string()),
                       "store": pa.array([CURATED] * table.num_rows, pa.string()),
                       "item": pa.nulls(table.num_rows, pa.string())}, schema=INDEX_SCHEMA)
             for signal_type, table in curated.items()]
    if quarantine is not None and quarantine.num_rows:
        subjects = [quarantine_subject(r) for r in quarantine.column("record").to_pylist()]
        rows = pa.table({"subject": pa.array(subjects, pa.string()),
                         "signal_id": quarantine.column("signal_id").cast(pa.string()),
                         "signal_type": quarantine.column("signal_type").cast(pa.string()),
                         "store": pa.array([QUARANTINE] * quarantine.num_rows, pa.string()),
                         "item": pa.nulls(quarantine.num_rows, pa.string())}, schema=INDEX_SCHEMA)
        parts.append(rows.filter(pc.is_valid(rows.column("subject"))))
    return pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()


def pair_entries(pairs: pa.Table, curated: Mapping[str, pa.Table]) -> pa.Table:
    """Index entries of a pair set: one per (pair, source signal), with the subject who gave that signal."""
    subject_of: dict[str, str] = {}
    type_of: dict[str, str] = {}
    for signal_type, table in curated.items():
        for signal_id, actor in zip(table.column("signal_id").to_pylist(), table.column("actor_id").to_pylist(),
                                    strict=True):
            subject_of[signal_id] = actor
            type_of[signal_id] = signal_type
    lengths = pc.list_value_length(pairs.column("source_signal_ids")).to_numpy(zero_copy_only=False)
    signal_ids = pc.list_flatten(pairs.column("source_signal_ids")).to_pylist()
    items = [pid for pid, n in zip(pairs.column("pair_id").to_pylist(), lengths, strict=True) for _ in range(n)]
    return pa.table({"subject": [subject_of.get(s) for s in signal_ids], "signal_id": signal_ids,
                     "signal_type": [type_of.get(s) for s in signal_ids], "store": [PAIRS] * len(signal_ids),
                     "item": items}, schema=INDEX_SCHEMA)


class ForwardIndex:
    """The index files under `<lineage root>/forward/`."""

    def __init__(self, lineage_root: str) -> None:
        self.root = StorageRoot.from_uri(lineage_root)

    def path(self, artifact_id: str) -> str:
        return self.root.join(FORWARD, f"{artifact_id}.parquet")

    def by_signal_path(self, artifact_id: str) -> str:
        return self.root.join(FORWARD, BY_SIGNAL, f"{artifact_id}.parquet")

    def artifact_ids(self) -> list[str]:
        folder = self.root.join(FORWARD)
        return [p.rsplit("/", 1)[-1].removesuffix(".parquet")
                for p in self.root.list_files(FORWARD, suffixes=(".parquet",)) if p.rsplit("/", 1)[0] == folder]

    def has(self, artifact_id: str) -> bool:
        return self.root.exists(FORWARD, f"{artifact_id}.parquet")

    def write(self, artifact_id: str, entries: pa.Table) -> str:
        """Write (or replace) the artifact's entries atomically in small row groups: sorted by subject, and a copy
        sorted by signal id (`by_signal/`) so that a signal lookup also reads one row group per file. The copy is
        written first: an entry is never findable by subject alone after an erasure removed it."""
        table = entries.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
        for parts, order in (((FORWARD, BY_SIGNAL), "signal_id"), ((FORWARD,), "subject")):
            ordered = table.sort_by([(order, "ascending"), ("subject" if order == "signal_id" else "signal_id",
                                                            "ascending")])
            sink = pa.BufferOutputStream()
            pq.write_table(ordered, sink, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_statistics=True)
            path = self.root.write_bytes_atomic(sink.getvalue().to_pybytes(), *parts, f"{artifact_id}.parquet")
        return path

    def read(self, artifact_id: str) -> pa.Table:
        return pq.read_table(self.path(artifact_id), filesystem=self.root.fs, schema=INDEX_SCHEMA)

    def lookup(self, subjects: Sequence[str] = (), signal_id: str | None = None) -> dict[str, pa.Table]:
        """Entries per artifact id for any of `subjects`, or for one `signal_id`; artifacts without any are left out.

        Either lookup reads only the row groups whose statistics can hold the key (the subject-sorted files for
        subjects, the signal-sorted copies for a signal).
        """
        if bool(subjects) == (signal_id is not None):
            raise ForwardLineageError("lookup: give subjects or a signal_id, exactly one of them")
        expression = (pc.field("subject").isin(list(subjects)) if subjects
                      else pc.field("signal_id") == signal_id)
        found = {}
        for artifact_id in self.artifact_ids():
            path = self.path(artifact_id) if subjects else self.by_signal_path(artifact_id)
            if not subjects and not self.root.fs.get_file_info(path).is_file:
                path = self.path(artifact_id)  # written before the by-signal copy existed: scan it
            table = pq.read_table(path, filesystem=self.root.fs, filters=expression, schema=INDEX_SCHEMA)
            if table.num_rows:
                found[artifact_id] = table
        return found


@dataclass
class Reached:
    """One artifact a subject's signals reached: the indexed counts, or (for a descendant) the path there."""

    record: ArtifactRecord
    signals: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    via: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"artifact_id": self.record.id, "kind": self.record.kind, "name": self.record.name,
                "signals": len(self.signals), **self.counts, **({"via": self.via} if self.via else {})}


def _counts(entries: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for store in pc.unique(entries.column("store")).to_pylist():
        rows = entries.filter(pc.equal(entries.column("store"), store))
        counts[f"{store}_rows" if store != PAIRS else "pairs"] = (
            len(set(rows.column("item").to_pylist())) if store == PAIRS else rows.num_rows)
    return counts


def children_map(records: Iterable[ArtifactRecord]) -> dict[str, list[ArtifactRecord]]:
    """Artifact id → the records that name it as a parent (the registry stores parents only)."""
    children: dict[str, list[ArtifactRecord]] = defaultdict(list)
    for record in records:
        for parent in record.parents:
            children[parent].append(record)
    return children


def descendants(start: Iterable[str], children: Mapping[str, list[ArtifactRecord]]) -> dict[str, list[str]]:
    """Every non-data artifact downstream of `start` (models, sweeps, deployments, ...), each with the ids among
    `start` it descends from. Data artifacts (feedback a deployment captured, the next dataset) are not followed:
    what reached them is asked of the index, not inferred."""
    via: dict[str, set[str]] = defaultdict(set)
    for origin in start:
        queue, seen = deque([origin]), {origin}
        while queue:
            for child in children.get(queue.popleft(), []):
                if child.kind in DATA_KINDS or child.id in seen:
                    continue
                seen.add(child.id)
                via[child.id].add(origin)
                queue.append(child.id)
    return {artifact: sorted(origins) for artifact, origins in via.items()}


def forward_lineage(registry: LineageRegistry, index: ForwardIndex, subjects: Sequence[str] = (),
                    signal_id: str | None = None) -> list[Reached]:
    """Every artifact the subject's (or the signal's) signals reached: indexed data artifacts with their counts,
    then their descendants (models, sweeps, deployments), each with the number of the subject's signals behind
    it. Data artifacts first, in registration order, then descendants in registration order."""
    found = index.lookup(subjects, signal_id)
    records = {r.id: r for r in registry.records()}
    reached: dict[str, Reached] = {}
    for artifact_id, entries in found.items():
        if artifact_id not in records:
            continue  # an index file whose artifact was never registered here: nothing to say about it
        signals = set(entries.column("signal_id").drop_null().to_pylist())
        reached[artifact_id] = Reached(records[artifact_id], signals, _counts(entries))
    downstream = descendants(reached, children_map(records.values()))
    for artifact_id, origins in downstream.items():
        signals = set().union(*(reached[o].signals for o in origins))
        reached[artifact_id] = Reached(records[artifact_id], signals, via=origins)
    data = sorted((r for r in reached.values() if r.record.kind in DATA_KINDS), key=lambda r: r.record.created_at)
    rest = sorted((r for r in reached.values() if r.record.kind not in DATA_KINDS),
                  key=lambda r: r.record.created_at)
    return data + rest


def find_pseudonymizer(lineage_root: str, key_file: str | None = None, key_env: str = DEFAULT_KEY_ENV,
                       required: bool = False) -> Pseudonymizer | None:
    """The pseudonym key ingest used: `key_env` if set, else `key_file`, else the loop's key beside the lineage root
    (`<run>/secrets/pseudonym.key`). None when there is none and it is not `required`."""
    candidates = [key_file] if key_file else []
    local = StorageRoot.from_uri(lineage_root)
    if not key_file and local.is_local:
        candidates.append(os.path.join(os.path.dirname(local.base.rstrip("/")), "secrets", "pseudonym.key"))
    for candidate in candidates or [None]:
        if os.environ.get(key_env, "").strip() or (candidate and os.path.isfile(candidate)):
            return PseudonymSection(key_env=key_env, key_file=candidate).pseudonymizer()
    if required:
        raise ForwardLineageError(f"no pseudonym key: set {key_env} or pass the key file ingest used (tried "
                                  f"{candidates or 'none'}); a raw id can only be matched through its keyed pseudonym")
    return None
