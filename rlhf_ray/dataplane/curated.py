"""Curated rows back into typed Arrow tables: the contract's schema plus the row's content hash."""

from __future__ import annotations

import json

import pyarrow as pa

from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.contracts.validation import parse_event_time


def curated_schema(signal_type: str) -> pa.Schema:
    schema = SIGNAL_SCHEMAS[SignalType(signal_type)]
    return schema.append(pa.field("content_hash", pa.string(), nullable=False))


def to_curated_table(records: pa.Table, signal_type: str) -> pa.Table:
    """Decode the accepted `record` JSON of one signal type into its typed contract table."""
    rows = []
    for text, row_hash in zip(records.column("record").to_pylist(), records.column("content_hash").to_pylist(),
                              strict=True):
        row = json.loads(text)
        row["event_time"] = parse_event_time(row["event_time"])
        row["content_hash"] = row_hash
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=curated_schema(signal_type))
