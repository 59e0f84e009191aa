"""`rlhf-ray import`: a public preference or feedback file → feedback shards in the signal contracts, which
`rlhf-ray ingest --input OUT` then validates, masks, pseudonymizes and versions like any other shards.

Output layout under `output_dir`::

    <signal_type>/part-00000.jsonl   contract rows, one folder per signal type
    manifest.json                    the shard set's lineage artifact and files (`rlhf_ray.dataplane.shard_sets`)
    _quarantine.parquet              refused records: line number, reason, masked content (ingest's quarantine
                                     schema); the leading `_` keeps ingest from reading it as a shard
    _import.json                     the summary

Every file is written to a temporary sibling and renamed into place; the manifest goes last.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pydantic import Field

from actors.ingest import pseudonymizer_for
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.redaction import Redactor
from rlhf_ray.dataplane.shard_sets import write_shard_manifest
from rlhf_ray.governance import PiiSection, PseudonymSection
from rlhf_ray.inputs.formats import FORMATS, ImportFormatError, quarantine_table, read_import
from rlhf_ray.lineage.jobs import lineage_for, lineage_root
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "import"
HELP = ("turn a preference/feedback file (OpenAI, TRL, HH-RLHF, UltraFeedback, Label Studio, Argilla, JSONL logs) "
        "into feedback shards for ingest; bad records quarantined, masked")
QUARANTINE_FILE = "_quarantine.parquet"
SUMMARY_FILE = "_import.json"
SHARD_NAME = "part-00000.jsonl"


class ImportConfig(JobConfig):
    format: str | None = Field(None, description=f"input format: one of {', '.join(sorted(FORMATS))}")
    input: str | None = Field(None, description="the file to import (.jsonl, .json or .parquet)")
    output_dir: str = "runs/import"
    field_map: dict[str, str] = Field(default_factory=dict, description="format key → input field (--map key=field)")
    region: str = Field("eu", description="residency region of the imported rows (the formats carry none)")
    policy_version: str = Field("imported", description="policy version recorded on every row")
    confidence: float | None = Field(None, ge=0, le=1, description="label confidence recorded on rows whose "
                                     "format gives none; curate uses it as the weight of single-label pairs")
    pii: PiiSection = PiiSection()
    pseudonyms: PseudonymSection = PseudonymSection()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", help=f"input format (sets format): {', '.join(sorted(FORMATS))}")
    parser.add_argument("--input", help="file to import (sets input)")
    parser.add_argument("--out", help="shard directory to write (sets output_dir)")
    parser.add_argument("--map", nargs="+", action="extend", metavar="KEY=FIELD", default=[],
                        help="field map, e.g. --map prompt=question response=answer rating=thumb user=uid time=ts "
                             "(put KEY=VALUE config overrides before --map)")
    add_config_arguments(parser)


def parse_field_map(pairs: list[str]) -> dict[str, str]:
    """`["prompt=question", ...]` → {"prompt": "question"}; a pair without `=` is an error naming it."""
    mapping = {}
    for pair in pairs:
        key, sep, field_name = pair.partition("=")
        if not sep or not key or not field_name:
            raise ImportFormatError(f"--map {pair!r}: expected KEY=FIELD, e.g. prompt=question")
        mapping[key] = field_name
    return mapping


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = resolve_config(ImportConfig, args, {"format": "format", "input": "input", "out": "output_dir"})
    if args.map:
        config = config.model_copy(update={"field_map": {**config.field_map, **parse_field_map(args.map)}})
    return run(config)


def import_feedback(config: ImportConfig) -> dict[str, Any]:
    """Read and convert (pure), then write the shards, the masked quarantine, the summary and the manifest."""
    if not config.format or not config.input:
        raise ImportFormatError("import needs --format F and --input FILE; formats: " + ", ".join(sorted(FORMATS)))
    started = time.perf_counter()
    redactor = Redactor(config.pii.masker(), pseudonymizer_for(config.pseudonyms))  # no key → fails before writing
    result = read_import(config.format, config.input, config.field_map, region=config.region,
                         policy_version=config.policy_version, confidence=config.confidence)
    out = StorageRoot.from_uri(config.output_dir)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        by_type.setdefault(row["signal_type"], []).append(row)
    written = [out.write_bytes_atomic("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                              for r in rows).encode(), kind, SHARD_NAME)
               for kind, rows in sorted(by_type.items())]
    for stale in set(out.list_files(suffixes=(".jsonl", ".parquet"))) - set(written):
        out.fs.delete_file(stale)  # a rerun must not leave the previous run's other signal types behind
    out.write_parquet_atomic(quarantine_table(result, redactor, config.input, config.field_map), QUARANTINE_FILE)
    summary = {"format": config.format, **result.summary(), "skipped": result.skipped,
               "shards": [out.relative(path) for path in written],
               "quarantine": out.join(QUARANTINE_FILE)}
    out.write_bytes_atomic(json.dumps(summary, indent=2, sort_keys=True).encode(), SUMMARY_FILE)
    artifact = lineage_for(config).register(
        "shards", f"import-{config.format}", digest_files(out, written),
        config={"format": config.format, "field_map": config.field_map, "region": config.region},
        metrics={k: v for k, v in summary.items() if isinstance(v, int)}, uri=config.output_dir)
    write_shard_manifest(out, artifact.id, lineage_root(config), written, format=config.format)
    return {**summary, "shards_dir": config.output_dir, "shards_id": artifact.id,
            "timing/import": round(time.perf_counter() - started, 2)}


def run(config: ImportConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    figures = import_feedback(config)
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
