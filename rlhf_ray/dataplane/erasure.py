"""Erasure as deletion, for a subject's rows (`rlhf-ray erase`) or expired ones (`rlhf-ray retention`).

Every store that holds rows is found through the lineage registry (shard folders, dataset roots, curate output
folders; workbench folders are named) and rewritten without the selected rows:

    raw / canary / workbench shards   each file rewritten in place (temporary file, then rename)
    dataset versions                  a successor version without the rows (a new `dataset` artifact, parent: the
                                      old one); the old version's files are then deleted, its manifest replaced by
                                      `superseded/<version>.json`, LATEST follows its successor
    quarantine                        part of the version; rewritten in place when no curated row changed
    pair sets                         a successor without every pair built from a removed signal (a new `pairs`
                                      artifact); adjudication queue, annotator table and QA report scrubbed
    forward index                     entries of removed signals (and of the subject) dropped

The lineage chain gets an `erased` event on every superseded artifact (naming its successor), a
`trained_on_erased_data` event on every model, sweep or deployment downstream of one, and one summary event
(`erasure` or `retention`) with counts per store. Chain payloads hold ids and counts only: never a subject.

Crash safety: the whole plan (what to remove, the counts, each successor's version) is computed before anything
changes and journaled at `<lineage root>/.erasure/<erasure id>.json`; each step is idempotent (filtering an
already filtered file removes nothing, a committed successor is found and kept, an event already logged is not
logged again), so a re-run after a kill at any point finishes the journaled plan and deletes the journal. The
journal holds the subject's pseudonyms until then; nothing else the erasure writes does.

Assumes no ingest, curate or workbench writes the same stores while it runs.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlhf_ray.dataplane.dedup import dataset_version
from rlhf_ray.dataplane.quality import quality_report
from rlhf_ray.dataplane.selectors import Selector, pair_mask, quarantine_mask, selector_from_state
from rlhf_ray.dataplane.versions import LATEST, commit_version, curated_folder, manifest_path, read_curated
from rlhf_ray.governance.pseudonyms import Pseudonymizer
from rlhf_ray.lineage.forward import FORWARD, ForwardIndex, children_map, descendants
from rlhf_ray.lineage.registry import ArtifactRecord, LineageRegistry
from rlhf_ray.storage import StorageRoot

JOURNALS = ".erasure"
SUPERSEDED = "superseded"
ERASED_EVENT = "erased"
MARK_EVENT = "trained_on_erased_data"
SHARD_SUFFIXES = (".jsonl", ".parquet")
RAW, CANARY, WORKBENCH = "raw_shards", "canary_shards", "workbench_shards"
STORES = (RAW, CANARY, WORKBENCH, "curated", "quarantine", "pairs", "adjudication_labels", "annotators",
          "forward_index")
PairsVersion = Callable[[pa.Table], str]


class ErasureError(RuntimeError):
    """An erasure that cannot go on; the message names the store or file and what was expected."""


@dataclass
class Stores:
    """Where rows live: shard folders (path → store name), dataset roots and curate output folders."""

    shards: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    curated: list[str] = field(default_factory=list)

    def with_dataset_root(self, folder: str) -> Stores:
        """These stores and one more dataset root (once, however its path is spelled)."""
        return Stores(self.shards, sorted({*self.datasets, _location(folder)}), self.curated)


def _location(folder: str) -> str:
    """One spelling per folder: local paths absolute, without a trailing slash; URIs as given."""
    return folder.rstrip("/") if "://" in folder else os.path.abspath(folder)


def discover_stores(registry: LineageRegistry, workbench_dirs: Iterable[str] = (),
                    shard_dirs: Iterable[str] = ()) -> Stores:
    """Every store the registry's artifacts live in: `shards`/`feedback` folders (canary's captured feedback when
    the artifact's parent is a deployment), dataset roots and curate folders; plus the named extra folders."""
    records = {r.id: r for r in registry.records()}
    stores = Stores()
    for record in records.values():
        if not record.uri:
            continue
        if record.kind in ("shards", "feedback"):
            canary = any(records.get(p) is not None and records[p].kind == "deployment" for p in record.parents)
            stores.shards.setdefault(record.uri.rstrip("/"), CANARY if canary else RAW)
        elif record.kind == "dataset" and "/curated/" in record.uri:
            stores.datasets.append(record.uri.rsplit("/curated/", 1)[0])
        elif record.kind == "pairs" and "/pairs/" in record.uri:
            stores.curated.append(record.uri.rsplit("/pairs/", 1)[0])
    for folder in shard_dirs:
        stores.shards[_location(folder)] = RAW
    for folder in workbench_dirs:
        stores.shards[f"{_location(folder)}/shards"] = WORKBENCH
    stores.shards = {_location(folder): store for folder, store in stores.shards.items()}
    stores.datasets = sorted({_location(folder) for folder in stores.datasets})
    stores.curated = sorted({_location(folder) for folder in stores.curated})
    return stores


def shard_files(stores: Stores) -> list[tuple[str, str, str]]:
    """(path, store, store folder) of every .jsonl/.parquet file below the shard folders, each under its innermost
    folder; hidden files and folders and anything inside a dataset root or curate folder are left out."""
    skip = [f"{StorageRoot.from_uri(p).base}/" for p in [*stores.datasets, *stores.curated]]
    found: dict[str, tuple[str, str]] = {}
    for folder, store in sorted(stores.shards.items(), key=lambda item: -len(item[0])):
        root = StorageRoot.from_uri(folder)
        for path in root.list_files(suffixes=SHARD_SUFFIXES):
            hidden = any(part.startswith((".", "_")) for part in root.relative(path).split("/"))
            if not hidden and path not in found and not any(path.startswith(s) for s in skip):
                found[path] = (store, folder)
    return [(path, store, folder) for path, (store, folder) in sorted(found.items())]


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name


def _file_root(store_dir: str, path: str) -> tuple[StorageRoot, str]:
    """A storage root on the store's filesystem whose base is the file's folder, and the file name."""
    folder, name = _split(path)
    return StorageRoot(StorageRoot.from_uri(store_dir).fs, folder), name


def _read_parquet(root: StorageRoot, path: str) -> pa.Table | None:
    try:
        return pq.read_table(path, filesystem=root.fs)
    except (OSError, pa.ArrowException):
        return None


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _kept_lines(data: bytes, selector: Selector, collect: bool) -> tuple[bytes, int]:
    lines = data.split(b"\n")
    kept, removed = [], 0
    for line in lines:
        text = line.decode("utf-8", errors="replace")
        if text.strip():
            try:
                value = json.loads(text)
            except ValueError:
                hit = selector.line_matches(text)
            else:
                hit = selector.record_matches(value, collect)
            if hit:
                removed += 1
                continue
        kept.append(line)
    return b"\n".join(kept), removed


def filter_shard(store_dir: str, path: str, selector: Selector, write: bool, collect: bool = False) -> int:
    """Rows of one shard file the selector picks (rewritten without them when `write`); -1 if unreadable."""
    root, name = _file_root(store_dir, path)
    if root.fs.get_file_info(path).type == pafs.FileType.NotFound:
        return 0
    if name.endswith(".jsonl"):
        data, removed = _kept_lines(root.read_bytes(name), selector, collect)
        if removed and write:
            root.write_bytes_atomic(data, name)
        return removed
    table = _read_parquet(root, path)
    if table is None:
        print(f"[erasure] {path}: unreadable Parquet, left as it is (ingest quarantines it whole)", file=sys.stderr)
        return -1
    mask = selector.row_mask(table, collect=collect)
    if mask.any() and write:
        root.write_bytes_atomic(_parquet_bytes(table.filter(pa.array(~mask))), name)
    return int(mask.sum())


# ---- dataset versions ----------------------------------------------------------------------------------------

def committed_versions(root: StorageRoot) -> list[str]:
    return [p.rsplit("/", 1)[-1].removesuffix(".json") for p in root.list_files("versions", suffixes=(".json",))]


def read_parquet_folder(root: StorageRoot, folder: str) -> pa.Table | None:
    """Every Parquet file below `folder` as one table; None when there is none."""
    files = root.list_files(folder, suffixes=(".parquet",))
    return pa.concat_tables(pq.read_table(f, filesystem=root.fs) for f in files) if files else None


@dataclass
class VersionCut:
    """A dataset version's tables with the selected rows removed, and how many went."""

    curated: dict[str, pa.Table]
    quarantine: pa.Table | None
    removed_curated: int
    removed_quarantine: int
    removed_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def version(self) -> str:
        keys = [t.select(["signal_id", "content_hash"]) for t in self.curated.values()]
        table = pa.concat_tables(keys) if keys else pa.table({"signal_id": pa.array([], pa.string()),
                                                              "content_hash": pa.array([], pa.string())})
        return dataset_version(table)


def cut_version(root: StorageRoot, version: str, selector: Selector, collect: bool = False) -> VersionCut:
    kept, by_type = {}, {}
    for signal_type, table in read_curated(root, curated_folder(version)).items():
        mask = selector.row_mask(table, signal_type, collect)
        kept[signal_type] = table.filter(pa.array(~mask))
        by_type[signal_type] = int(mask.sum())
    quarantine = read_parquet_folder(root, f"quarantine/{version}")
    gone = 0
    if quarantine is not None:
        mask = quarantine_mask(selector, quarantine, collect)
        quarantine, gone = quarantine.filter(pa.array(~mask)), int(mask.sum())
    return VersionCut(kept, quarantine, sum(by_type.values()), gone, by_type)


# ---- pair sets -----------------------------------------------------------------------------------------------

def pair_versions(root: StorageRoot) -> list[str]:
    selector = pafs.FileSelector(root.join("pairs"), allow_not_found=True)
    return sorted(info.base_name for info in root.fs.get_file_info(selector)
                  if info.type == pafs.FileType.Directory and not info.base_name.startswith("."))


def _scrub_adjudication(table: pa.Table, selector: Selector) -> tuple[pa.Table, int]:
    rows, removed = [], 0
    for row in table.to_pylist():
        labels = selector.drop_labels(row.get("labels") or [])
        removed += len(row.get("labels") or []) - len(labels)
        if labels:
            rows.append({**row, "labels": labels})
    return pa.Table.from_pylist(rows, schema=table.schema), removed


def _annotator_mask(table: pa.Table, selector: Selector) -> np.ndarray:
    if "annotator" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return selector.row_mask(table.rename_columns(["actor" if c == "annotator" else c for c in table.column_names]))


# ---- the plan ------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """Everything an erasure will do, fixed before anything changes; journaled for crash safety."""

    erasure_id: str
    cause: str
    reason: str
    selector: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    pair_sets: list[dict[str, Any]] = field(default_factory=list)
    curate_dirs: list[dict[str, Any]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    primary: str | None = None  # a dataset root: the summary event is about its LATEST version('s successor)

    def counts(self) -> dict[str, int]:
        removed: Counter[str] = Counter()
        for entry in self.files:
            removed[entry["store"]] += entry["rows"]
        for entry in self.datasets:
            removed["curated"] += entry["curated_rows"]
            removed["quarantine"] += entry["quarantine_rows"]
        for entry in self.pair_sets:
            removed["pairs"] += entry["pairs"]
        for entry in self.curate_dirs:
            removed["adjudication_labels"] += entry["labels"]
            removed["annotators"] += entry["annotators"]
        removed["forward_index"] += sum(self.index.values())
        return {store: removed[store] for store in STORES}

    def empty(self) -> bool:
        return not any(self.counts().values())

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def plan_erasure(lineage_root: str, stores: Stores, selector: Selector, cause: str, reason: str,
                 pairs_version: PairsVersion, extra: dict[str, Any] | None = None, primary: str | None = None) -> Plan:
    """Read every store (twice: first to collect the signal ids of every selected row, then to count with all of
    them) and fix what the erasure will write. Changes nothing."""
    files = shard_files(stores)
    for path, _, folder in files:  # pass 1: the selected rows' signal ids, so pairs and index entries can follow them
        filter_shard(folder, path, selector, write=False, collect=True)
    for folder in stores.datasets:
        root = StorageRoot.from_uri(folder)
        for version in committed_versions(root):
            cut_version(root, version, selector, collect=True)
    plan = Plan(f"erasure-{uuid.uuid4().hex[:16]}", cause, reason, selector.state(), extra=extra or {},
                primary=primary)
    for path, store, folder in files:
        rows = filter_shard(folder, path, selector, write=False)
        if rows > 0:
            plan.files.append({"path": path, "store": store, "dir": folder, "rows": rows})
    for folder in stores.datasets:
        root = StorageRoot.from_uri(folder)
        if root.exists(LATEST):
            plan.latest[folder] = root.read_bytes(LATEST).decode().strip()
        for version in committed_versions(root):
            cut = cut_version(root, version, selector)
            if cut.removed_curated or cut.removed_quarantine:
                manifest = json.loads(root.read_bytes(manifest_path(version)))
                successor = cut.version if cut.removed_curated else version
                plan.datasets.append({"root": folder, "version": version, "dataset_id": manifest["dataset_id"],
                                      "successor": successor, "curated_rows": cut.removed_curated,
                                      "quarantine_rows": cut.removed_quarantine, "by_type": cut.removed_by_type})
    pair_records = {r.uri.rstrip("/"): r for r in LineageRegistry(lineage_root).records() if r.kind == "pairs"}
    for folder in stores.curated:
        _plan_curate_dir(plan, folder, selector, pairs_version, pair_records)
    index = ForwardIndex(lineage_root)
    for artifact_id in index.artifact_ids():
        removed = int(selector.index_mask(index.read(artifact_id)).sum())
        if removed:
            plan.index[artifact_id] = removed
    plan.selector = selector.state()
    return plan


def _plan_curate_dir(plan: Plan, folder: str, selector: Selector, pairs_version: PairsVersion,
                     records: dict[str, ArtifactRecord]) -> None:
    root = StorageRoot.from_uri(folder)
    for version in pair_versions(root):
        pairs = read_parquet_folder(root, f"pairs/{version}")
        if pairs is None:
            continue
        mask = pair_mask(pairs, selector.signals)
        if mask.any():
            record = records.get(root.join("pairs", version))  # unregistered: rewritten in place, no successor
            plan.pair_sets.append({"dir": folder, "version": version, "pairs_id": record.id if record else None,
                                   "successor": pairs_version(pairs.filter(pa.array(~mask))) if record else version,
                                   "pairs": int(mask.sum())})
    labels = 0
    for path in root.list_files("adjudication", suffixes=(".parquet",)):
        labels += _scrub_adjudication(pq.read_table(path, filesystem=root.fs), selector)[1]
    annotators = 0
    if root.exists("annotators.parquet"):
        annotators = int(_annotator_mask(pq.read_table(root.join("annotators.parquet"), filesystem=root.fs),
                                         selector).sum())
    report_changes = root.exists("agreement.json") and (
        selector.scrub_keys(json.loads(root.read_bytes("agreement.json"))) != json.loads(
            root.read_bytes("agreement.json")))
    if labels or annotators or report_changes:
        plan.curate_dirs.append({"dir": folder, "labels": labels, "annotators": annotators})


# ---- carrying a plan out --------------------------------------------------------------------------------------

class ErasureRun:
    """Carries out one journaled plan; every step may run again after a crash."""

    def __init__(self, lineage_root: str, plan: Plan, selector: Selector, pairs_version: PairsVersion) -> None:
        self.registry = LineageRegistry(lineage_root)
        self.plan = plan
        self.selector = selector
        self.pairs_version = pairs_version
        self.lineage = StorageRoot.from_uri(lineage_root)
        self.index = ForwardIndex(lineage_root)
        self.successors: dict[str, str] = {}  # old artifact id → successor artifact id
        self.logged = self._logged_events()

    # journal
    def journal(self) -> None:
        self.lineage.write_bytes_atomic(json.dumps(self.plan.to_dict(), sort_keys=True).encode(), JOURNALS,
                                        f"{self.plan.erasure_id}.json")

    def _logged_events(self) -> set[tuple[str, str | None]]:
        return {(e.event, e.artifact_id) for e in self.registry.events()
                if e.payload.get("erasure_id") == self.plan.erasure_id}

    def _event_once(self, event: str, artifact_id: str | None, payload: dict[str, Any]) -> None:
        if (event, artifact_id) not in self.logged:
            self.registry.record_event(event, artifact_id, {"erasure_id": self.plan.erasure_id, **payload})
            self.logged.add((event, artifact_id))

    def run(self) -> dict[str, Any]:
        for entry in self.plan.files:
            filter_shard(entry["dir"], entry["path"], self.selector, write=True)
        for entry in self.plan.datasets:
            self._supersede_dataset(entry)
        for folder, latest in self.plan.latest.items():
            self._follow_latest(folder, latest)
        for entry in self.plan.pair_sets:
            self._supersede_pairs(entry)
        for entry in [*self.plan.curate_dirs, *({"dir": p["dir"]} for p in self.plan.pair_sets)]:
            self._scrub_curate_dir(entry["dir"])
        for artifact_id in self.plan.index:
            if self.index.has(artifact_id):
                self._write_index(artifact_id, artifact_id)
        marked = self._mark_models()
        summary = {"cause": self.plan.cause, "reason": self.plan.reason, "removed": self.plan.counts(),
                   "superseded": dict(sorted(self.successors.items())), "marked": marked, **self.plan.extra}
        self._event_once(self.plan.cause, self.primary_artifact(), summary)
        self.lineage.fs.delete_file(self.lineage.join(JOURNALS, f"{self.plan.erasure_id}.json"))
        versions = [{k: e[k] for k in ("version", "successor", "curated_rows", "quarantine_rows", "by_type")}
                    for e in self.plan.datasets]
        return {"erasure_id": self.plan.erasure_id, **summary, "dataset_versions": versions}

    def primary_artifact(self) -> str | None:
        """The dataset the summary event is about: the primary root's LATEST version (its successor if superseded)."""
        if self.plan.primary is None:
            return None
        root = StorageRoot.from_uri(self.plan.primary)
        latest = root.read_bytes(LATEST).decode().strip() if root.exists(LATEST) else None
        if latest is None or not root.exists(manifest_path(latest)):
            return None
        return json.loads(root.read_bytes(manifest_path(latest)))["dataset_id"]

    def _write_index(self, source_id: str, target_id: str) -> None:
        entries = self.index.read(source_id)
        mask = self.selector.index_mask(entries)
        if mask.any() or source_id != target_id:
            self.index.write(target_id, entries.filter(pa.array(~mask)))

    def _supersede_dataset(self, entry: dict[str, Any]) -> None:
        root = StorageRoot.from_uri(entry["root"])
        old, new, old_id = entry["version"], entry["successor"], entry["dataset_id"]
        if old == new:  # only quarantined rows went: the curated rows, and so the version, are unchanged
            self._rewrite_quarantine_in_place(root, old)
            self._event_once(ERASED_EVENT, old_id, {"in_place": ["quarantine"], "rows": entry["quarantine_rows"]})
            return
        if root.exists(manifest_path(new)):
            new_id = json.loads(root.read_bytes(manifest_path(new)))["dataset_id"]
        else:
            new_id = self._commit_successor(root, old, new, old_id, entry)
        self.successors[old_id] = new_id
        if self.index.has(old_id):
            self._write_index(old_id, new_id)
        self._event_once(ERASED_EVENT, old_id, {"successor": new_id, "successor_version": new,
                                                "rows": entry["curated_rows"] + entry["quarantine_rows"]})
        tombstone = {"version": old, "dataset_id": old_id, "superseded_by": new, "successor_id": new_id,
                     "erasure_id": self.plan.erasure_id, "cause": self.plan.cause}
        root.write_bytes_atomic(json.dumps(tombstone, indent=2, sort_keys=True).encode(), SUPERSEDED, f"{old}.json")
        for folder in (curated_folder(old), f"quarantine/{old}"):
            if root.exists(folder):
                root.fs.delete_dir(root.join(folder))
        if root.exists(manifest_path(old)):
            root.fs.delete_file(root.join(manifest_path(old)))

    def _commit_successor(self, root: StorageRoot, old: str, new: str, old_id: str, entry: dict[str, Any]) -> str:
        if not root.exists(manifest_path(old)):
            raise ErasureError(f"dataset version {old!r} under {root.base!r} is gone but its successor {new!r} was "
                               "never committed; expected one of them (restore the old version from a backup)")
        cut = cut_version(root, old, self.selector)
        manifest = json.loads(root.read_bytes(manifest_path(old)))
        staging = f".staging-{self.plan.erasure_id}-{old}"
        for leftover in (staging, curated_folder(new), f"quarantine/{new}"):  # an earlier, killed attempt
            if root.exists(leftover):
                root.fs.delete_dir(root.join(leftover))
        for signal_type, table in cut.curated.items():
            if table.num_rows:
                root.write_parquet_atomic(table, staging, "curated", signal_type, "part-00000.parquet")
        if cut.quarantine is not None and cut.quarantine.num_rows:
            root.write_parquet_atomic(cut.quarantine, staging, "quarantine", "part-00000.parquet")
        accepted = sum(t.num_rows for t in cut.curated.values())
        quarantined = 0 if cut.quarantine is None else cut.quarantine.num_rows
        removed = entry["curated_rows"] + entry["quarantine_rows"]
        record = self.registry.register(
            "dataset", new, new.removeprefix("ds-"), parents=(old_id,),
            config={"erasure_id": self.plan.erasure_id, "cause": self.plan.cause, "supersedes": old},
            metrics={"accepted_rows": accepted, "quarantined_rows": quarantined, "removed_rows": removed},
            uri=root.join(curated_folder(new)))
        reasons = Counter() if cut.quarantine is None else Counter(cut.quarantine.column("reason").to_pylist())
        ingested_at = manifest.get("quality", {}).get("ingested_at")
        moment = datetime.fromisoformat(ingested_at) if ingested_at else datetime.now(UTC)
        manifest.update(version=new, dataset_id=record.id, accepted_rows=accepted, quarantined_rows=quarantined,
                        input_rows=max(0, manifest.get("input_rows", 0) - removed), supersedes=old,
                        erasure_id=self.plan.erasure_id, quality=quality_report(cut.curated, reasons, moment))
        if not root.exists(staging):
            root.makedirs(staging)
        commit_version(root, root.join(staging), new, manifest)
        return record.id

    def _rewrite_quarantine_in_place(self, root: StorageRoot, version: str) -> None:
        for path in root.list_files(f"quarantine/{version}", suffixes=(".parquet",)):
            table = pq.read_table(path, filesystem=root.fs)
            mask = quarantine_mask(self.selector, table)
            if mask.any():
                folder, name = _split(path)
                StorageRoot(root.fs, folder).write_bytes_atomic(_parquet_bytes(table.filter(pa.array(~mask))), name)

    def _follow_latest(self, folder: str, latest: str) -> None:
        """LATEST names what it named before, or that version's successor (commit_version moved it meanwhile)."""
        root = StorageRoot.from_uri(folder)
        successor = next((e["successor"] for e in self.plan.datasets
                          if e["root"] == folder and e["version"] == latest), latest)
        if not root.exists(LATEST) or root.read_bytes(LATEST).decode().strip() != successor:
            root.write_bytes_atomic(successor.encode(), LATEST)

    def _supersede_pairs(self, entry: dict[str, Any]) -> None:
        root = StorageRoot.from_uri(entry["dir"])
        old, new, old_id = entry["version"], entry["successor"], entry["pairs_id"]
        if old_id is None:  # a pair set no registry knows: filtered in place
            for path in root.list_files(f"pairs/{old}", suffixes=(".parquet",)):
                table = pq.read_table(path, filesystem=root.fs)
                mask = pair_mask(table, self.selector.signals)
                if mask.any():
                    StorageRoot(root.fs, _split(path)[0]).write_bytes_atomic(
                        _parquet_bytes(table.filter(pa.array(~mask))), _split(path)[1])
            return
        pairs = read_parquet_folder(root, f"pairs/{old}")
        if pairs is not None and not root.list_files(f"pairs/{new}", suffixes=(".parquet",)):
            kept = pairs.filter(pa.array(~pair_mask(pairs, self.selector.signals)))
            root.write_parquet_atomic(kept, "pairs", new, "part-00000.parquet")
        old_record = self.registry.get(old_id)
        parents = [self.successors.get(p, p) for p in old_record.parents]
        record = self.registry.register(
            "pairs", new, new.removeprefix("pairs-"), parents=tuple(dict.fromkeys([*parents, old_id])),
            config={"erasure_id": self.plan.erasure_id, "cause": self.plan.cause, "supersedes": old},
            metrics={"removed_pairs": entry["pairs"]}, uri=root.join("pairs", new))
        self.successors[old_id] = record.id
        if self.index.has(old_id):
            self._write_index(old_id, record.id)
        for folder in ("adjudication", "active_learning"):
            if root.exists(folder, f"{old}.parquet"):
                table = pq.read_table(root.join(folder, f"{old}.parquet"), filesystem=root.fs)
                root.write_bytes_atomic(_parquet_bytes(table), folder, f"{new}.parquet")
                root.fs.delete_file(root.join(folder, f"{old}.parquet"))
        if root.exists("agreement.json"):
            report = json.loads(root.read_bytes("agreement.json"))
            if report.get("pairs_version") == old:
                report.update(pairs_version=new, pairs_id=record.id)
                dataset_parent = self.successors.get(old_record.parents[0]) if old_record.parents else None
                if dataset_parent:
                    report["dataset_version"] = self.registry.get(dataset_parent).name
                root.write_bytes_atomic(json.dumps(report, indent=2, sort_keys=True, default=str).encode(),
                                        "agreement.json")
        self._event_once(ERASED_EVENT, old_id, {"successor": record.id, "successor_version": new,
                                                "pairs": entry["pairs"]})
        tombstone = {"version": old, "pairs_id": old_id, "superseded_by": new, "successor_id": record.id,
                     "erasure_id": self.plan.erasure_id, "cause": self.plan.cause}
        root.write_bytes_atomic(json.dumps(tombstone, indent=2, sort_keys=True).encode(), SUPERSEDED, f"{old}.json")
        if root.exists("pairs", old):
            root.fs.delete_dir(root.join("pairs", old))

    def _scrub_curate_dir(self, folder: str) -> None:
        root = StorageRoot.from_uri(folder)
        for path in root.list_files("adjudication", suffixes=(".parquet",)):
            table, removed = _scrub_adjudication(pq.read_table(path, filesystem=root.fs), self.selector)
            if removed:
                StorageRoot(root.fs, _split(path)[0]).write_bytes_atomic(_parquet_bytes(table), _split(path)[1])
        if root.exists("annotators.parquet"):
            table = pq.read_table(root.join("annotators.parquet"), filesystem=root.fs)
            mask = _annotator_mask(table, self.selector)
            if mask.any():
                root.write_bytes_atomic(_parquet_bytes(table.filter(pa.array(~mask))), "annotators.parquet")
        if root.exists("agreement.json"):
            report = json.loads(root.read_bytes("agreement.json"))
            scrubbed = self.selector.scrub_keys(report)
            if scrubbed != report:
                root.write_bytes_atomic(json.dumps(scrubbed, indent=2, sort_keys=True, default=str).encode(),
                                        "agreement.json")

    def _mark_models(self) -> list[str]:
        """`trained_on_erased_data` on every non-data artifact downstream of a superseded version or of any version
        it had itself superseded earlier (those held the rows too)."""
        records = {r.id: r for r in self.registry.records()}
        current = {}  # every superseded version and its predecessors → the successor written now
        for old, new in self.successors.items():
            for version in _predecessors(old, records):
                current[version] = new
        downstream = descendants(current, children_map(records.values()))
        for artifact_id, origins in sorted(downstream.items()):
            self._event_once(MARK_EVENT, artifact_id, {"via": origins,
                                                       "successors": sorted({current[o] for o in origins})})
        return sorted(downstream)


def _predecessors(artifact_id: str, records: dict[str, ArtifactRecord]) -> list[str]:
    """The artifact and the versions an earlier erasure or retention replaced with it, newest first."""
    chain = [artifact_id]
    while (record := records.get(chain[-1])) is not None and "erasure_id" in record.config and record.parents:
        same_kind = [p for p in record.parents if records.get(p) is not None and records[p].kind == record.kind]
        if not same_kind or same_kind[-1] in chain:
            break
        chain.append(same_kind[-1])
    return chain


def pending_journals(lineage_root: str) -> list[Plan]:
    """Plans a killed erasure left behind, oldest first."""
    root = StorageRoot.from_uri(lineage_root)
    selector = pafs.FileSelector(root.join(JOURNALS), allow_not_found=True)
    infos = [i for i in root.fs.get_file_info(selector) if i.type == pafs.FileType.File
             and i.base_name.startswith("erasure-") and i.base_name.endswith(".json")]
    plans = []
    for info in sorted(infos, key=lambda i: i.mtime or 0):
        with root.fs.open_input_stream(info.path) as stream:
            plans.append(Plan(**json.loads(stream.read())))
    return plans


def remove_temporaries(plan: Plan, stores: Stores, lineage_root: str) -> int:
    """Delete the temporary files (`.tmp-*`) and erasure staging folders a killed run left in the folders this
    plan writes to; their content may be a half-written copy of a file the plan rewrites."""
    lineage = StorageRoot.from_uri(lineage_root)
    folders = {(e["dir"], _split(e["path"])[0]) for e in plan.files}
    folders |= {(f, StorageRoot.from_uri(f).base) for f in [*stores.datasets, *stores.curated]}
    folders |= {(lineage_root, lineage.join(part)) for part in (FORWARD, JOURNALS)}
    removed = 0
    for store_dir, folder in sorted(folders):
        fs = StorageRoot.from_uri(store_dir).fs
        found = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        for info in sorted(found, key=lambda i: i.path):
            if fs.get_file_info(info.path).type == pafs.FileType.NotFound:
                continue  # inside a staging folder deleted just before
            if info.type == pafs.FileType.File and info.base_name.startswith(".tmp-"):
                fs.delete_file(info.path)
                removed += 1
            elif info.type == pafs.FileType.Directory and info.base_name.startswith(f".staging-{plan.erasure_id}"):
                fs.delete_dir(info.path)
                removed += 1
    return removed



def scrub_reason(reason: str, selector: Selector, mask: Callable[[str], str]) -> str:
    """The operator's reason as the chain may keep it: PII masked (`mask`), the subject's pseudonyms replaced."""
    text = mask(reason)
    for alias in selector.state().get("aliases", []):
        text = text.replace(alias, "[subject]")
    return text


def erase_rows(lineage_root: str, stores: Stores, selector: Selector, cause: str, reason: str,
               pairs_version: PairsVersion, pseudonymizer: Pseudonymizer | None = None,
               extra: dict[str, Any] | None = None, primary: str | None = None) -> dict[str, Any]:
    """Finish any erasure a killed run journaled, then plan, journal and carry out this one. Returns its summary
    (`nothing_to_erase` when no store holds a selected row), with `resumed` naming the plans finished first."""
    journals = StorageRoot.from_uri(lineage_root)
    for info in journals.fs.get_file_info(pafs.FileSelector(journals.join(JOURNALS), allow_not_found=True)):
        if info.base_name.startswith(".tmp-"):  # a journal killed while being written: nothing acted on it
            journals.fs.delete_file(info.path)
    resumed, same = [], []
    for pending in pending_journals(lineage_root):
        remove_temporaries(pending, stores, lineage_root)
        run = ErasureRun(lineage_root, pending, selector_from_state(pending.selector, pseudonymizer), pairs_version)
        resumed.append(run.run())
        if pending.cause == cause and pending.selector.get("aliases") == selector.state().get("aliases"):
            same.append(resumed[-1])  # this very request, killed before: finished now
    plan = plan_erasure(lineage_root, stores, selector, cause, reason, pairs_version, extra, primary)
    if plan.empty():
        if same:
            return {**same[-1], "resumed": [r["erasure_id"] for r in resumed]}
        return {"erasure_id": None, "cause": cause, "nothing_to_erase": True, "removed": plan.counts(),
                "superseded": {}, "marked": [], "resumed": [r["erasure_id"] for r in resumed]}
    run = ErasureRun(lineage_root, plan, selector, pairs_version)
    run.journal()
    return {**run.run(), "resumed": [r["erasure_id"] for r in resumed]}
