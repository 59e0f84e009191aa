"""Feedback shards as production would deliver them: Parquet and JSONL, dirty on purpose.

Layout under the output root::

    shards/<signal_type>/part-<index>.<parquet|jsonl>    the feedback, in the contract format (train prompts)
    gold/gold_items.jsonl                                the labeling platform's answer key for gold questions
    judge/shards/pairwise/part-<index>.parquet           the judge set: annotator pairs on validation prompts,
    judge/gold/gold_items.jsonl, judge/manifest.json     to train and score judges only, never a policy's reward
    ground_truth/{malformed,duplicates,planted_pii,items,annotators}.jsonl
                                                         simulation-only answers for tests and audits

Each shard is a pure function of (seed, world config, shard config, shard spec), so shards can be
written in parallel and the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.sim.config import ShardConfig
from rlhf_ray.sim.corruption import BROKEN_JSON_MARKER, corrupt
from rlhf_ray.sim.pii import plant_pii
from rlhf_ray.sim.signals import Row, RowFactory
from rlhf_ray.sim.world import STREAM_SHARDS, World, rng_for
from rlhf_ray.storage import StorageRoot

_PII_TEXT_FIELDS = ("prompt", "rationale", "edited_response", "response")
_TYPE_CODES = {t.value: i for i, t in enumerate(SignalType)}


JUDGE_DIR = "judge"
JUDGE_SIGNAL = "pairwise"


@dataclass(frozen=True)
class ShardSpec:
    """One shard: policy feedback on train prompts (`split="train"`) or the judge set's (`"validation"`)."""

    signal_type: str
    index: int
    rows: int
    fmt: str
    split: str = "train"

    @property
    def relative_path(self) -> str:
        folder = "shards" if self.split == "train" else f"{JUDGE_DIR}/shards"
        return f"{folder}/{self.signal_type}/part-{self.index:05d}.{self.fmt}"


@dataclass
class ShardResult:
    path: str
    rows: int
    bytes: int
    malformed: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    planted_pii: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gold(self) -> list[dict[str, Any]]:
        """The answer key a labeling platform keeps for its gold (calibration) questions."""
        return [gold_answer(item) for item in self.items if item["gold"]]


def gold_answer(item: dict[str, Any]) -> dict[str, Any]:
    """Pairwise gold is the better response ("a"/"b"); ranking gold is the full true order."""
    order = item["true_order"]
    answer: Any = ("a" if order[0] == 0 else "b") if item["signal_type"] == "pairwise" else order
    return {"item_id": item["item_id"], "signal_type": item["signal_type"], "answer": answer}


def plan_shards(config: ShardConfig) -> list[ShardSpec]:
    """Split `rows` by the signal mix, then into shards of at most `rows_per_shard`, formats in rotation."""
    mix = config.signal_mix.model_dump()
    counts = {name: int(config.rows * share) for name, share in mix.items()}
    largest = max(mix, key=lambda name: mix[name])
    counts[largest] += config.rows - sum(counts.values())
    specs: list[ShardSpec] = []
    for name, count in counts.items():
        for first in range(0, count, config.rows_per_shard):
            fmt = config.formats[len(specs) % len(config.formats)]
            specs.append(ShardSpec(name, len(specs), min(config.rows_per_shard, count - first), fmt))
    return specs


def plan_judge_shards(config: ShardConfig) -> list[ShardSpec]:
    """The judge set: `judge_rows` annotator pairwise rows on validation prompts, in Parquet shards."""
    return [ShardSpec(JUDGE_SIGNAL, index, min(config.rows_per_shard, config.judge_rows - first), "parquet",
                      "validation") for index, first in enumerate(range(0, config.judge_rows, config.rows_per_shard))]


def build_shard_rows(world: World, config: ShardConfig, spec: ShardSpec) -> tuple[list[Row], ShardResult]:
    """Clean rows; then, row by row, maybe a corruption, maybe planted PII, maybe a redelivered copy."""
    judge = () if spec.split == "train" else (1,)
    rng = rng_for(world.seed, STREAM_SHARDS, _TYPE_CODES[spec.signal_type], spec.index, *judge)
    num_duplicates = round(spec.rows * config.duplicate_fraction)
    factory = RowFactory(world, spec.signal_type, spec.index, rng, config.gold_fraction, spec.split)
    clean = factory.rows(spec.rows - num_duplicates)
    result = ShardResult(spec.relative_path, spec.rows, 0, items=factory.item_truth)
    rows: list[Row] = []
    duplicated = set(rng.choice(len(clean), size=min(num_duplicates, len(clean)), replace=False).tolist())
    remaining = num_duplicates
    last_clean_id: str | None = None
    for position, row in enumerate(clean):
        copies = remaining if position == len(clean) - 1 else int(position in duplicated)
        if copies == 0 and rng.random() < config.malformed_fraction:
            row, kind = corrupt(row, rng, spec.fmt, last_clean_id)
            result.malformed.append(
                {"file": spec.relative_path, "row": len(rows), "signal_id": row.get("signal_id"), "kind": kind}
            )
        else:
            last_clean_id = row["signal_id"]
        if rng.random() < config.pii_fraction:
            _plant(row, rng, result, len(rows))
        rows.append(row)
        for _ in range(copies):
            result.duplicates.append({"file": spec.relative_path, "row": len(rows), "signal_id": row["signal_id"]})
            rows.append(dict(row))
        remaining -= copies
    return rows, result


def _plant(row: Row, rng: np.random.Generator, result: ShardResult, position: int) -> None:
    candidates = [name for name in _PII_TEXT_FIELDS if isinstance(row.get(name), str)]
    if not candidates:
        return
    name = str(rng.choice(candidates))
    row[name], kind, value = plant_pii(row[name], rng)
    result.planted_pii.append(
        {"file": result.path, "row": position, "signal_id": row.get("signal_id"), "field": name, "kind": kind,
         "value": value}
    )


def relaxed_schema(signal_type: str) -> pa.Schema:
    """The contract's columns with every field nullable: producers do not enforce contracts, ingest does."""
    schema = SIGNAL_SCHEMAS[SignalType(signal_type)]
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def encode_parquet(rows: list[Row], signal_type: str) -> bytes:
    table = pa.Table.from_pylist(rows, schema=relaxed_schema(signal_type))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__} in JSONL")


def encode_jsonl(rows: list[Row]) -> bytes:
    lines = []
    for row in rows:
        broken = row.pop(BROKEN_JSON_MARKER, False)
        line = json.dumps(row, ensure_ascii=False, default=_json_default)
        lines.append(line[: len(line) // 2] if broken else line)
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_shard(root: StorageRoot, world: World, config: ShardConfig, spec: ShardSpec) -> ShardResult:
    """Build and atomically write one shard; returns its ground truth."""
    rows, result = build_shard_rows(world, config, spec)
    data = encode_parquet(rows, spec.signal_type) if spec.fmt == "parquet" else encode_jsonl(rows)
    root.write_bytes_atomic(data, spec.relative_path)
    result.bytes = len(data)
    return result
