"""From raw shard bytes to ingest records: parse, validate, mask, pseudonymize, hash.

Every input row becomes exactly one ingest record, `accepted` or `quarantined` (with a reason, and with
every field masked, pseudonymized or digested: `quarantine_record`);
duplicates are resolved afterwards across the whole input (see `dedup`). A file that cannot be
parsed at all becomes one quarantined record naming the file, so nothing disappears silently.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_ray.contracts import MASKED_FIELDS, PSEUDONYMIZED_FIELDS, SIGNAL_SCHEMAS, SignalType
from rlhf_ray.contracts.validation import Rejection, parse_event_time, reject, validate_row
from rlhf_ray.dataplane.redaction import Redactor, identifier_pii
from rlhf_ray.governance import PiiMasker, Pseudonymizer

_FIELD_NAMES: dict[str, tuple[str, ...]] = {t.value: tuple(SIGNAL_SCHEMAS[t].names) for t in SignalType}
ACCEPTED = "accepted"
QUARANTINED = "quarantined"
DUPLICATE = "duplicate"
FILE_LEVEL_ROW = -1

INGEST_SCHEMA = pa.schema(
    [
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("signal_id", pa.string()),
        pa.field("signal_type", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("row_number", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("event_time", pa.timestamp("ms", tz="UTC")),
        pa.field("record", pa.string()),
        pa.field("pii_counts", pa.string()),
    ]
)


@dataclass(frozen=True)
class RawRow:
    """One row as read from a shard: a parsed object, or the raw text plus why it did not parse."""

    source_file: str
    row_number: int
    value: Any
    parse_error: str | None = None


def read_shard(path: str, data: bytes) -> Iterator[RawRow]:
    """Yield every row of a Parquet or JSONL shard; unreadable parts come back as parse errors."""
    if path.endswith(".parquet"):
        yield from _read_parquet(path, data)
    else:
        yield from _read_jsonl(path, data)


def _read_parquet(path: str, data: bytes) -> Iterator[RawRow]:
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except Exception as error:
        yield RawRow(path, FILE_LEVEL_ROW, None, f"unreadable_file: {type(error).__name__}: {error}")
        return
    first = 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except Exception as error:
            yield RawRow(path, first, None, f"unreadable_row_group {group} ({size} rows): {error}")
        else:
            for offset, row in enumerate(rows):
                yield RawRow(path, first + offset, row)
        first += size


def _read_jsonl(path: str, data: bytes) -> Iterator[RawRow]:
    # JSONL separates records by "\n" only; str.splitlines would also split on U+2028 inside strings.
    for number, line in enumerate(data.decode("utf-8", errors="replace").split("\n")):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield RawRow(path, number, json.loads(line))
        except json.JSONDecodeError as error:
            yield RawRow(path, number, line, f"unparseable_json: {error.msg} at column {error.colno}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return repr(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def content_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()


class FeedbackProcessor:
    """Turns raw rows into ingest records. Picklable, so Ray Data workers each hold one.

    A row is accepted when it satisfies its contract, its region is one of `regions` and no identifier holds
    PII; accepted rows get pseudonymized ids and masked text (`MASKED_FIELDS`). Every other row becomes a
    quarantine record (`quarantine_record`) with every field protected.
    """

    def __init__(self, masker: PiiMasker, pseudonymizer: Pseudonymizer, regions: frozenset[str],
                 now: datetime) -> None:
        self.masker = masker
        self.pseudonymizer = pseudonymizer
        self.regions = regions
        self.now = now
        self.redactor = Redactor(masker, pseudonymizer)

    def process(self, raw: RawRow) -> dict[str, Any]:
        if raw.parse_error is not None:
            code = raw.parse_error.split(":", 1)[0].split(" ", 1)[0]
            return quarantine_record(self.redactor, raw, Rejection(code, None, raw.parse_error))
        rejection = self.check(raw.value)
        if rejection is not None:
            return quarantine_record(self.redactor, raw, rejection)
        row = self._normalize(raw.value)
        counts = self._mask_row(row)
        return _record(raw, ACCEPTED, None, None, canonical_json(row), counts, row)

    def check(self, value: Any) -> Rejection | None:
        """The row's first problem: its contract, then its region, then PII in an identifier; None if none."""
        rejection = validate_row(value, self.now)
        if rejection is None and value["region"] not in self.regions:
            rejection = reject("unknown_region", "region", f"one of {sorted(self.regions)}", value["region"])
        return rejection if rejection is not None else identifier_pii(value, self.masker)

    def _normalize(self, row: dict[str, Any]) -> dict[str, Any]:
        normalized = {name: row.get(name) for name in _FIELD_NAMES[row["signal_type"]]}
        normalized["event_time"] = parse_event_time(row["event_time"])
        for name in PSEUDONYMIZED_FIELDS:
            if normalized.get(name) is not None:
                normalized[name] = self.redactor.pseudonym(name, normalized[name])
        return normalized

    def _mask_row(self, row: dict[str, Any]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for name in MASKED_FIELDS:
            if row.get(name) is not None:
                row[name], found = self.masker.mask_value(row[name])
                counts.update(found)
        return counts


def quarantine_record(redactor: Redactor, raw: RawRow, rejection: Rejection) -> dict[str, Any]:
    """The ingest record of a refused row, with every field protected (`redaction`): the one way any reader
    (ingest, an importer) writes quarantine.

    A row that parsed is protected field by field; text that did not parse is protected literal by literal;
    the reason, detail, source file and the columns copied out of the row are masked, pseudonymized or
    digested like the fields they come from.
    """
    if raw.parse_error is not None:
        text = raw.value if isinstance(raw.value, str) else ""
        record, counts = redactor.text(_storable(text))
        row: dict[str, Any] = {}
    else:
        protected, counts = redactor.row(raw.value)
        record = _storable(canonical_json(protected))
        row = protected if isinstance(protected, dict) else {}
    return _record(raw, QUARANTINED, redactor.reason(rejection), _storable(redactor.detail(rejection)), record,
                   counts, row, source_file=redactor.masker.mask(_storable(raw.source_file))[0])


def _record(raw: RawRow, status: str, reason: str | None, detail: str | None, record: str, counts: Counter[str],
            row: dict[str, Any], source_file: str | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "reason": reason,
        "detail": detail,
        "signal_id": _string_or_none(row.get("signal_id")),
        "signal_type": _string_or_none(row.get("signal_type")),
        # For accepted rows `record` is canonical_json(row), so this equals content_hash(row).
        "content_hash": hashlib.sha256(record.encode()).hexdigest() if status == ACCEPTED else None,
        "source_file": raw.source_file if source_file is None else source_file,
        "row_number": raw.row_number,
        "region": _string_or_none(row.get("region")),
        "event_time": row["event_time"] if status == ACCEPTED else None,
        "record": record,
        "pii_counts": json.dumps(dict(counts), sort_keys=True) if counts else None,
    }


def _string_or_none(value: Any) -> str | None:
    return _storable(value) if isinstance(value, str) else None


def _storable(text: str) -> str:
    """Text Arrow can store: lone surrogates (valid in JSON, not in UTF-8) become visible escapes."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")
