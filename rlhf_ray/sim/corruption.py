"""Malformed rows the way real producers emit them, one named kind at a time.

Parquet files carry typed columns, so only value-level faults fit there; JSONL lines can also hold
wrong types and broken JSON. Each kind is recorded so ingest can be checked row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rlhf_ray.contracts import MAX_TEXT_CHARS, SIGNAL_SCHEMAS, SignalType

Row = dict[str, Any]
BROKEN_JSON_MARKER = "__broken_json__"

_OUT_OF_RANGE: dict[str, tuple[str, Any]] = {
    "implicit": ("value", -5.0),
    "safety_flag": ("severity", 7),
}
_UNKNOWN_ENUM: dict[str, tuple[str, str]] = {
    "pairwise": ("choice", "c"),
    "rating": ("scale", "stars"),
    "implicit": ("event", "hover"),
    "safety_flag": ("category", "spam??"),
}
_TEXT_FIELD: dict[str, str] = {"pairwise": "response_a", "ranking": "prompt"}


def _missing_field(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    schema = SIGNAL_SCHEMAS[SignalType(row["signal_type"])]
    required = [f.name for f in schema if not f.nullable and f.name not in ("signal_id", "signal_type")]
    name = str(rng.choice(required))
    if fmt == "jsonl":
        row.pop(name)
    else:
        row[name] = None
    return row


def _wrong_type(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    if rng.random() < 0.5:
        row["confidence"] = "high"
    else:
        row["prompt"] = 12345
    return row


def _out_of_range(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    kind = row["signal_type"]
    if kind == "rating":
        row["scores"] = [{**row["scores"][0], "score": 9.0}, *row["scores"][1:]]
    elif kind in _OUT_OF_RANGE:
        field, value = _OUT_OF_RANGE[kind]
        row[field] = value
    else:
        row["confidence"] = 1.7
    return row


def _unknown_enum(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    field, value = _UNKNOWN_ENUM.get(row["signal_type"], ("source", "robot"))
    if rng.random() < 0.3:
        field, value = "source", "robot"
    row[field] = value
    return row


def _duplicate_id(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    row["signal_id"] = previous_id
    return row


def _inconsistent_ranking(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    ranking = list(row["ranking"])
    row["ranking"] = ranking[:-1] if rng.random() < 0.5 else [ranking[0], *ranking[:-1]]
    return row


def _oversize_text(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    field = _TEXT_FIELD.get(row["signal_type"], "response")
    text = str(row[field])
    row[field] = (text + " ") * (MAX_TEXT_CHARS // max(1, len(text)) + 2)
    return row


def _bad_timestamp(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    if fmt == "jsonl":
        row["event_time"] = str(rng.choice(["not-a-timestamp", "2026-13-45T25:61:00Z", "yesterday"]))
    else:
        row["event_time"] = datetime(2100, 1, 1, tzinfo=UTC)
    return row


def _unsupported_schema_version(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    row["schema_version"] = "0.3"
    return row


def _broken_json(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> Row:
    row[BROKEN_JSON_MARKER] = True
    return row


Corruption = Callable[[Row, np.random.Generator, str, "str | None"], Row]

CORRUPTIONS: dict[str, tuple[Corruption, frozenset[str]]] = {
    "missing_field": (_missing_field, frozenset({"parquet", "jsonl"})),
    "wrong_type": (_wrong_type, frozenset({"jsonl"})),
    "out_of_range": (_out_of_range, frozenset({"parquet", "jsonl"})),
    "unknown_enum": (_unknown_enum, frozenset({"parquet", "jsonl"})),
    "duplicate_id": (_duplicate_id, frozenset({"parquet", "jsonl"})),
    "inconsistent_ranking": (_inconsistent_ranking, frozenset({"parquet", "jsonl"})),
    "oversize_text": (_oversize_text, frozenset({"parquet", "jsonl"})),
    "bad_timestamp": (_bad_timestamp, frozenset({"parquet", "jsonl"})),
    "unsupported_schema_version": (_unsupported_schema_version, frozenset({"parquet", "jsonl"})),
    "broken_json": (_broken_json, frozenset({"jsonl"})),
}


def applicable_kinds(signal_type: str, fmt: str, has_previous: bool) -> list[str]:
    """Corruption kinds that make sense for this row: format, signal type and position allow them."""
    kinds = [name for name, (_, formats) in CORRUPTIONS.items() if fmt in formats]
    if signal_type != "ranking":
        kinds.remove("inconsistent_ranking")
    if not has_previous:
        kinds.remove("duplicate_id")
    return kinds


def corrupt(row: Row, rng: np.random.Generator, fmt: str, previous_id: str | None) -> tuple[Row, str]:
    """Apply one randomly chosen applicable corruption; returns the row and the kind's name."""
    kinds = applicable_kinds(row["signal_type"], fmt, previous_id is not None)
    kind = str(rng.choice(kinds))
    function, _ = CORRUPTIONS[kind]
    return function(dict(row), rng, fmt, previous_id), kind
