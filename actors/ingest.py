"""The ingest pipeline (Ray Data): feedback shards → validated, masked, pseudonymized, versioned dataset.

`rlhf-ray ingest` (`jobs.ingest`) parses its config and runs it; the loop calls `ingest` directly.

Output layout under `output_dir`::

    curated/<v>/<signal_type>/*.parquet   accepted rows in their typed contract (one folder per type)
    quarantine/<v>/*.parquet              refused rows: masked original, reason, source file
    versions/<v>.json                     counts + data quality report: written last, commits <v>
    LATEST                                the newest committed version

A version is a content hash of the accepted rows: ingesting the same shards again finds it committed
and writes nothing. Files land in a staging folder first and are moved into place before the commit.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pydantic import Field

from actors.datasinks import DatasetVersionDatasink
from actors.runtime import ensure_ray
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.contracts import SCHEMA_VERSION
from rlhf_ray.dataplane.dedup import (
    FEEDBACK_KEY_COLUMNS,
    KEY_COLUMNS,
    apply_changes,
    dataset_version,
    feedback_key,
    kept_keys,
    resolve_duplicates,
    resolve_feedback_repeats,
)
from rlhf_ray.dataplane.erasure import read_parquet_folder
from rlhf_ray.dataplane.quality import quality_report
from rlhf_ray.dataplane.records import ACCEPTED, DUPLICATE, INGEST_SCHEMA, QUARANTINED, FeedbackProcessor, read_shard
from rlhf_ray.dataplane.shard_sets import read_shard_manifest
from rlhf_ray.dataplane.versions import (
    LATEST,
    commit_version,
    curated_folder,
    manifest_path,
    read_curated,
    read_manifest,
)
from rlhf_ray.governance import PiiMasker, PiiSection, Pseudonymizer, PseudonymSection
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.forward import ForwardIndex, dataset_entries
from rlhf_ray.lineage.jobs import lineage_for, lineage_root
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.loop_latency import signal_latency_figures

SHARD_SUFFIXES = (".parquet", ".jsonl")
SUMMARY_COLUMNS = ["status", "reason", "signal_id", "content_hash", "source_file", "row_number", "pii_counts",
                   "feedback_key", "event_time"]
# the processor's records plus the (response, user, kind) key of a user's feedback, for `resolve_feedback_repeats`
RECORD_SCHEMA = INGEST_SCHEMA.append(pa.field("feedback_key", pa.string()))


class IngestError(ValueError):
    """The input cannot be ingested at all (as opposed to bad rows, which are quarantined)."""


class ResidencySection(StrictModel):
    regions: tuple[str, ...] = Field(("eu", "us", "apac"), description="regions a row may be tagged with")


class IngestConfig(JobConfig):
    input: str | None = Field(None, description="directory or filesystem URI holding .parquet/.jsonl shards")
    files: list[str] | None = Field(None, description="read only these shards (paths relative to input), e.g. "
                                    "those that had arrived when a loop iteration started; default: every shard")
    output_dir: str = "runs/ingest"
    pii: PiiSection = PiiSection()
    pseudonyms: PseudonymSection = PseudonymSection()
    residency: ResidencySection = ResidencySection()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs per read/validate task")
    now: datetime | None = Field(None, description="reference time for timestamp checks (default: wall clock)")


def _shard_files(config: IngestConfig) -> tuple[StorageRoot, list[str]]:
    if not config.input:
        raise IngestError("input is not set: pass --input DIR (a folder of .parquet/.jsonl shards) or input=...")
    root = StorageRoot.from_uri(config.input)
    files = root.list_files(suffixes=SHARD_SUFFIXES)
    if config.files is not None:
        listed = {root.relative(path): path for path in files}
        if missing := [name for name in config.files if name not in listed]:
            raise IngestError(f"files: {missing[:5]} are not committed .parquet/.jsonl shards under {config.input!r}")
        files = [listed[name] for name in config.files]
    if not files:
        raise IngestError(f"input {config.input!r} holds no .parquet or .jsonl shards"
                          + (" among `files`" if config.files is not None else ""))
    return root, files


def _masker(section: PiiSection) -> PiiMasker:
    """The configured masker; a bad pattern or NER model folder is an input error naming the setting."""
    try:
        return section.masker()
    except ValueError as error:
        raise IngestError(f"pii: {error}") from None


def pseudonymizer_for(section: PseudonymSection) -> Pseudonymizer:
    """The keyed pseudonymizer; a missing key is an input error, never a silent default."""
    if section.create_missing_key_file():
        print(f"[ingest] created a new pseudonym key file {section.key_file} (mode 0600)", file=sys.stderr)
    try:
        return section.pseudonymizer()
    except ValueError as error:
        raise IngestError(str(error)) from None


def _process_files(batch: pa.Table, processor: FeedbackProcessor) -> pa.Table:
    """One Ray Data batch = one shard file (bytes + path) → one ingest record per row."""
    records = [
        processor.process(raw)
        for path, data in zip(batch.column("path").to_pylist(), batch.column("bytes").to_pylist(), strict=True)
        for raw in read_shard(path, data)
    ]
    for record in records:  # an accepted row's record is its canonical JSON, pseudonymized actor id included
        record["feedback_key"] = feedback_key(json.loads(record["record"])) if record["status"] == ACCEPTED else None
    return pa.Table.from_pylist(records, schema=RECORD_SCHEMA)


def _gather(dataset: Any, columns: list[str]) -> pa.Table:
    import ray

    tables = ray.get(dataset.select_columns(columns).to_arrow_refs())
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})


def _counts(summary_columns: pa.Table) -> dict[str, Any]:
    status = Counter(summary_columns.column("status").to_pylist())
    pii: Counter[str] = Counter()
    for text in summary_columns.column("pii_counts").drop_null().to_pylist():
        pii.update(json.loads(text))
    unreadable = pc.filter(summary_columns, pc.equal(summary_columns.column("row_number"), -1))
    return {
        "input_rows": summary_columns.num_rows,
        "accepted_rows": status[ACCEPTED],
        "quarantined_rows": status[QUARANTINED],
        "duplicate_rows": status[DUPLICATE],
        "pii_masked": dict(sorted(pii.items())),
        "unreadable_files": sorted(set(unreadable.column("source_file").to_pylist())),
    }


def _upstream_manifest(root: StorageRoot) -> dict[str, Any]:
    """The simulator's manifest when it sits beside (or above) the shards: it names their artifact and lineage."""
    for folder in (root.base, root.base.rsplit("/", 1)[0]):
        if (manifest := read_shard_manifest(root, folder)) is not None:
            return manifest
    return {}


def _shard_manifests(root: StorageRoot) -> list[tuple[str, dict[str, Any]]]:
    """(folder, manifest) of each shard set that names its own artifact: the simulator's, beside or above the
    input, and one per sub-folder of it (the feedback a canary captured, `rlhf-ray canary`)."""
    folders = [root.base.rsplit("/", 1)[0], root.base]
    selector = pafs.FileSelector(root.base, allow_not_found=True)
    folders += sorted(info.path for info in root.fs.get_file_info(selector) if info.type == pafs.FileType.Directory)
    return [(folder, manifest) for folder in folders if (manifest := read_shard_manifest(root, folder)) is not None]


def _input_parents(config: IngestConfig, root: StorageRoot, files: list[str],
                   registry: LineageRegistry) -> tuple[str, ...]:
    """The lineage parents of the input: each registered shard set (by its manifest) for the files it lists, and
    the files no manifest speaks for (e.g. a folder of new shards dropped in) registered as a `feedback`
    artifact — so a dataset built on a canary's captured feedback traces back to that deployment."""
    parents, covered = [], set()
    for folder, manifest in _shard_manifests(root):
        if not registry.has(manifest.get("artifact_id", "")):
            continue
        listed = ({f"{folder}/{entry['path']}" for entry in manifest["files"]} if "files" in manifest
                  else {path for path in files if path.startswith(f"{folder}/")})
        if mine := listed & set(files) - covered:
            parents.append(manifest["artifact_id"])
            covered |= mine
    if rest := [path for path in files if path not in covered]:
        parents.append(registry.register("feedback", config.input or "", digest_files(root, rest),
                                         metrics={"shards": len(rest)}, uri=config.input or "").id)
    return tuple(dict.fromkeys(parents))


def ingest(config: IngestConfig) -> dict[str, Any]:
    """Read → validate/mask/pseudonymize (parallel) → resolve duplicates → write a version → commit."""
    import ray

    started = time.perf_counter()
    ingested_at = config.now or datetime.now(UTC)
    root, files = _shard_files(config)
    processor = FeedbackProcessor(
        _masker(config.pii),
        pseudonymizer_for(config.pseudonyms),
        frozenset(config.residency.regions),
        ingested_at,
    )
    ensure_ray(config.ray)
    raw = ray.data.read_binary_files(files, include_paths=True, filesystem=root.fs, override_num_blocks=len(files))
    records = raw.map_batches(_process_files, batch_size=1, batch_format="pyarrow", fn_args=(processor,),
                              num_cpus=config.task_cpus).materialize()

    # Duplicates need the whole input: decide on the driver from the small key columns, apply while writing.
    summary = _gather(records, SUMMARY_COLUMNS)
    accepted = summary.filter(pc.equal(summary.column("status"), ACCEPTED))
    by_signal = resolve_duplicates(accepted.select(list(KEY_COLUMNS)))
    kept = kept_keys(accepted.select(list(dict.fromkeys(KEY_COLUMNS + FEEDBACK_KEY_COLUMNS))), by_signal)
    changed = pa.concat_tables([by_signal, resolve_feedback_repeats(kept.select(list(FEEDBACK_KEY_COLUMNS)))])
    version = dataset_version(kept_keys(accepted.select(list(KEY_COLUMNS)), changed))
    summary = apply_changes(summary, changed)
    counts = _counts(summary)
    reasons = Counter(pc.filter(summary.column("reason"), pc.equal(summary.column("status"), QUARANTINED))
                      .to_pylist())

    out = StorageRoot.from_uri(config.output_dir)
    reused = out.exists(manifest_path(version))
    if not reused:
        staging = f".staging-{uuid.uuid4().hex}"
        records.write_datasink(DatasetVersionDatasink(out, staging, changed))
        curated = read_curated(out, f"{staging}/curated")
        report = quality_report(curated, reasons, ingested_at)
        upstream = _upstream_manifest(root)
        registry = lineage_for(config, upstream.get("lineage_root"))
        artifact = registry.register(
            "dataset", version, version.removeprefix("ds-"),
            parents=_input_parents(config, root, files, registry),
            config={"schema_version": SCHEMA_VERSION, "pii": config.pii.model_dump(),
                    "residency": config.residency.model_dump(mode="json")},
            metrics={k: v for k, v in counts.items() if isinstance(v, int)}, uri=out.join(curated_folder(version)),
        )
        manifest = {"version": version, "dataset_id": artifact.id, "input": config.input,
                    "lineage_root": lineage_root(config, upstream.get("lineage_root")), **counts,
                    "quality": report}
        # The forward index (subject → signals → this version) is in place before the version is committed.
        ForwardIndex(manifest["lineage_root"]).write(
            artifact.id, dataset_entries(curated, read_parquet_folder(out, f"{staging}/quarantine")))
        commit_version(out, out.join(staging), version, manifest)
    else:
        manifest = read_manifest(out, version)
        out.write_bytes_atomic(version.encode(), LATEST)

    seconds = time.perf_counter() - started
    return {
        **counts,
        "dataset_version": version,
        "dataset_id": manifest["dataset_id"],
        "reused_version": reused,
        "curated_dir": out.join(curated_folder(version)),
        "quarantine_dir": out.join(f"quarantine/{version}"),
        "report": out.join(manifest_path(version)),
        "rows_per_s": round(counts["input_rows"] / seconds, 1),
        **signal_latency_figures(manifest.get("quality", {})),
        "timing/ingest": round(seconds, 2),
    }
