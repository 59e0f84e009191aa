"""From raw shard bytes to ingest records: parse, validate, mask, pseudonymize, hash.

Every input row becomes exactly one ingest record, `accepted` or `quarantined` (with a reason);
duplicates are resolved afterwards across the whole input (see `dedup`). A file that cannot be
parsed at all becomes one quarantined record naming the file, so nothing disappears silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_ray.contracts import FREE_TEXT_FIELDS, SIGNAL_SCHEMAS, SignalType
from rlhf_ray.contracts.validation import Rejection, parse_event_time, validate_row
from rlhf_ray.governance import PiiMasker, Pseudonymizer

_FIELD_NAMES: dict[str, tuple[str, ...]] = {t.value: tuple(SIGNAL_SCHEMAS[t].names) for t in SignalType}
_ID_FIELDS = frozenset({"actor_id", "session_id"})
_ID_IN_TEXT = re.compile(r'"(actor_id|session_id)"\s*:\s*"([^"]*)')
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
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return repr(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def content_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()


class FeedbackProcessor:
    """Turns raw rows into ingest records. Picklable, so Ray Data workers each hold one."""

    def __init__(self, masker: PiiMasker, pseudonymizer: Pseudonymizer, regions: frozenset[str],
                 now: datetime) -> None:
        self.masker = masker
        self.pseudonymizer = pseudonymizer
        self.regions = regions
        self.now = now

    def process(self, raw: RawRow) -> dict[str, Any]:
        if raw.parse_error is not None:
            line = raw.value if isinstance(raw.value, str) else ""
            text, counts = self.masker.mask_value(self._protect_text(line))
            code = raw.parse_error.split(":", 1)[0].split(" ", 1)[0]
            return self._record(raw, QUARANTINED, Rejection(code, None, raw.parse_error), text, counts)
        rejection = validate_row(raw.value, self.now)
        if rejection is None and raw.value["region"] not in self.regions:
            got = f"field 'region': got {raw.value['region']!r}"
            rejection = Rejection("unknown_region", "region", f"{got}, expected one of {sorted(self.regions)}")
        if rejection is not None:
            if rejection.field in _ID_FIELDS:
                rejection = Rejection(rejection.code, rejection.field,
                                      f"field {rejection.field!r}: value withheld (an identifier), "
                                      f"expected {rejection.expected}", rejection.expected)
            row = self._protect(raw.value) if isinstance(raw.value, dict) else raw.value
            text, counts = self.masker.mask_value(_storable(canonical_json(row)))
            return self._record(raw, QUARANTINED, rejection, text, counts, row if isinstance(row, dict) else None)
        row = self._normalize(raw.value)
        counts = self._mask_row(row)
        return self._record(raw, ACCEPTED, None, canonical_json(row), counts, row)

    def _protect(self, row: dict[str, Any]) -> dict[str, Any]:
        """Pseudonymize ids even in quarantine: no raw user or annotator id leaves ingest, whatever its type."""
        protected = dict(row)
        for name, convert in (("actor_id", self.pseudonymizer.pseudonym),
                              ("session_id", self.pseudonymizer.pseudonymize_session)):
            if protected.get(name) is not None:
                protected[name] = _pseudonymize_any(protected[name], convert)
        return protected

    def _protect_text(self, text: str) -> str:
        """The same for a line that did not parse: pseudonymize whatever follows an id key."""

        def replace(match: re.Match[str]) -> str:
            pseudonyms = self.pseudonymizer
            convert = pseudonyms.pseudonym if match[1] == "actor_id" else pseudonyms.pseudonymize_session
            return f'"{match[1]}": "{convert(match[2])}'

        return _ID_IN_TEXT.sub(replace, text)

    def _normalize(self, row: dict[str, Any]) -> dict[str, Any]:
        normalized = {name: row.get(name) for name in _FIELD_NAMES[row["signal_type"]]}
        normalized["event_time"] = parse_event_time(row["event_time"])
        return self._protect(normalized)

    def _mask_row(self, row: dict[str, Any]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for name in FREE_TEXT_FIELDS:
            if row.get(name) is not None:
                row[name], found = self.masker.mask_value(row[name])
                counts.update(found)
        return counts

    def _record(self, raw: RawRow, status: str, rejection: Rejection | None, record: str,
                counts: Counter[str], row: dict[str, Any] | None = None) -> dict[str, Any]:
        row = row or {}
        event_time = None
        if status == ACCEPTED:
            event_time = row["event_time"]
        return {
            "status": status,
            "reason": None if rejection is None else rejection.reason,
            "detail": None if rejection is None else self.masker.mask(_storable(rejection.detail))[0],
            "signal_id": _string_or_none(row.get("signal_id")),
            "signal_type": _string_or_none(row.get("signal_type")),
            # For accepted rows `record` is canonical_json(row), so this equals content_hash(row).
            "content_hash": hashlib.sha256(record.encode()).hexdigest() if status == ACCEPTED else None,
            "source_file": raw.source_file,
            "row_number": raw.row_number,
            "region": _string_or_none(row.get("region")),
            "event_time": event_time,
            "record": record,
            "pii_counts": json.dumps(dict(counts), sort_keys=True) if counts else None,
        }


def _string_or_none(value: Any) -> str | None:
    return _storable(value) if isinstance(value, str) else None


def _storable(text: str) -> str:
    """Text Arrow can store: lone surrogates (valid in JSON, not in UTF-8) become visible escapes."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _pseudonymize_any(value: Any, convert: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, list | tuple):
        return [_pseudonymize_any(item, convert) for item in value]
    if isinstance(value, dict):
        return {key: _pseudonymize_any(item, convert) for key, item in value.items()}
    return convert(canonical_json(value))
