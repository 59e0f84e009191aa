"""Which rows an erasure removes: a subject's (by pseudonym, raw id or signal id) or expired ones (retention).

A selector answers the same question for every shape a row takes in the stores: an Arrow table (curated rows,
Parquet shards), a JSON object (a JSONL shard line), a line that is not JSON (a malformed shard line), a
quarantined row (its stored record text), a preference pair (its source signal ids) and a forward-index entry.
`collect=True` while planning adds the signal ids of selected rows to `signals`, so pairs built from them
and index entries naming them are removed as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rlhf_ray.contracts.validation import parse_event_time
from rlhf_ray.governance.pseudonyms import Pseudonymizer

# Fields that name the person a row is about: the contract's actor and session, a workbench event's actor, the
# simulator's annotator table.
ACTOR_FIELDS = ("actor_id", "session_id", "actor", "annotator_id")
_FIELD_IN_TEXT = re.compile(r'"(signal_id|actor_id|session_id)"\s*:\s*"([^"]*)"')


class Selector(Protocol):
    signals: set[str]

    def row_mask(self, table: pa.Table, signal_type: str | None = None, collect: bool = False) -> np.ndarray: ...

    def record_matches(self, row: Any, collect: bool = False) -> bool: ...

    def line_matches(self, line: str) -> bool: ...

    def drop_labels(self, labels: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def scrub_keys(self, value: Any) -> Any: ...

    def index_mask(self, entries: pa.Table) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...


def _mask(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _isin(column: pa.ChunkedArray, values: Iterable[str]) -> np.ndarray:
    values = list(values)
    if not values or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return np.zeros(len(column), dtype=bool)
    return _mask(pc.is_in(column, value_set=pa.array(values, column.type)))


def pair_mask(pairs: pa.Table, signals: set[str]) -> np.ndarray:
    """True for each pair any of whose source signals is in `signals`."""
    ids = pairs.column("source_signal_ids")
    flat = pc.list_flatten(ids)
    hits = _isin(pa.chunked_array([flat]), signals)
    parents = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False)
    mask = np.zeros(pairs.num_rows, dtype=bool)
    mask[parents[hits]] = True
    return mask


def quarantine_mask(selector: Selector, table: pa.Table, collect: bool = False) -> np.ndarray:
    """Quarantined rows: by signal id, else by the stored record (a JSON object, or the masked raw line)."""
    mask = _isin(table.column("signal_id"), selector.signals) if "signal_id" in table.column_names else (
        np.zeros(table.num_rows, dtype=bool))
    for position, text in enumerate(table.column("record").to_pylist()):
        if mask[position] or not text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            mask[position] = selector.line_matches(text)
        else:
            mask[position] = selector.record_matches(value, collect)
    return mask


class _Selecting:
    """What both selectors share: `row_mask` / `record_matches` over their own `_table_hits` / `_row_hit`, adding
    the selected rows' signal ids to `signals` when asked to collect."""

    signals: set[str]

    def _table_hits(self, table: pa.Table, signal_type: str | None) -> np.ndarray:
        raise NotImplementedError

    def _row_hit(self, row: dict[str, Any]) -> bool:
        raise NotImplementedError

    def row_mask(self, table: pa.Table, signal_type: str | None = None, collect: bool = False) -> np.ndarray:
        mask = self._table_hits(table, signal_type)
        if collect and "signal_id" in table.column_names:
            self.signals.update(s for s in table.column("signal_id").filter(pa.array(mask)).to_pylist()
                                if isinstance(s, str))
        return mask

    def record_matches(self, row: Any, collect: bool = False) -> bool:
        hit = isinstance(row, dict) and self._row_hit(row)
        if hit and collect and isinstance(row.get("signal_id"), str):
            self.signals.add(row["signal_id"])
        return hit


class SubjectSelector(_Selecting):
    """One subject's rows: any actor/session field naming one of `aliases` (the stored pseudonym forms) — or, with
    the key, a raw id that pseudonymizes to one — and any row whose signal id is among `signals`."""

    def __init__(self, aliases: Iterable[str], signals: Iterable[str] = (),
                 pseudonymizer: Pseudonymizer | None = None) -> None:
        self.aliases = frozenset(aliases)
        self.signals = set(signals)
        self.pseudonymizer = pseudonymizer
        self._seen: dict[str, bool] = {}

    def actor_matches(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        actor = value.split("/", 1)[0]  # a session id starts with its actor
        hit = self._seen.get(actor)
        if hit is None:
            hit = actor in self.aliases or (self.pseudonymizer is not None
                                            and self.pseudonymizer.pseudonym(actor) in self.aliases)
            self._seen[actor] = hit
        return hit

    def _table_hits(self, table: pa.Table, signal_type: str | None) -> np.ndarray:
        mask = np.zeros(table.num_rows, dtype=bool)
        if "signal_id" in table.column_names:
            mask |= _isin(table.column("signal_id"), self.signals)
        for name in ACTOR_FIELDS:
            if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
                values = pc.unique(table.column(name)).drop_null().to_pylist()
                mask |= _isin(table.column(name), [v for v in values if self.actor_matches(v)])
        return mask

    def _row_hit(self, row: dict[str, Any]) -> bool:
        signal_id = row.get("signal_id")
        return (isinstance(signal_id, str) and signal_id in self.signals) or any(
            self.actor_matches(row.get(name)) for name in ACTOR_FIELDS)

    def line_matches(self, line: str) -> bool:
        for field, value in _FIELD_IN_TEXT.findall(line):
            if (value in self.signals) if field == "signal_id" else self.actor_matches(value):
                return True
        return any(alias in line for alias in self.aliases)

    def drop_labels(self, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [label for label in labels if not self.actor_matches(label.get("annotator"))]

    def scrub_keys(self, value: Any) -> Any:
        """A JSON value without any mapping entry keyed by the subject (curate's per-annotator figures)."""
        if isinstance(value, dict):
            return {k: self.scrub_keys(v) for k, v in value.items() if not self.actor_matches(k)}
        if isinstance(value, list):
            return [self.scrub_keys(v) for v in value if not (isinstance(v, str) and self.actor_matches(v))]
        return value

    def index_mask(self, entries: pa.Table) -> np.ndarray:
        return _isin(entries.column("subject"), self.aliases) | _isin(entries.column("signal_id"), self.signals)

    def state(self) -> dict[str, Any]:
        return {"kind": "subject", "aliases": sorted(self.aliases), "signals": sorted(self.signals)}


class ExpirySelector(_Selecting):
    """Rows older than their signal type's retention period (`days`, else `default_days`) at `now`."""

    def __init__(self, days: dict[str, int], default_days: int, now: datetime, signals: Iterable[str] = ()) -> None:
        self.days = dict(days)
        self.default_days = default_days
        self.now = now
        self.signals = set(signals)

    def cutoff(self, signal_type: Any) -> datetime:
        return self.now - timedelta(days=self.days.get(signal_type, self.default_days)
                                    if isinstance(signal_type, str) else self.default_days)

    def _times(self, table: pa.Table) -> pa.ChunkedArray | None:
        if "event_time" not in table.column_names:
            return None
        column = table.column("event_time")
        if pa.types.is_timestamp(column.type):
            return column if column.type.tz else pc.assume_timezone(column, "UTC")
        return pa.chunked_array([pa.array([_time_or_none(v) for v in column.to_pylist()],
                                          pa.timestamp("ms", tz="UTC"))])

    def _table_hits(self, table: pa.Table, signal_type: str | None) -> np.ndarray:
        times = self._times(table)
        mask = np.zeros(table.num_rows, dtype=bool)
        if times is None:
            return mask
        types = (table.column("signal_type").to_pylist() if signal_type is None and "signal_type" in table.column_names
                 else [signal_type] * table.num_rows)
        for kind in set(types):
            cutoff = pa.scalar(self.cutoff(kind), type=pa.timestamp("ms", tz="UTC"))
            older = _mask(pc.less(pc.cast(times, pa.timestamp("ms", tz="UTC")), cutoff))
            mask |= older & np.array([t == kind for t in types], dtype=bool)
        return mask

    def _row_hit(self, row: dict[str, Any]) -> bool:
        moment = _time_or_none(row.get("event_time"))
        return moment is not None and moment < self.cutoff(row.get("signal_type"))

    def line_matches(self, line: str) -> bool:
        return False  # a line that is not JSON has no event time to judge

    def drop_labels(self, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return labels

    def scrub_keys(self, value: Any) -> Any:
        return value

    def index_mask(self, entries: pa.Table) -> np.ndarray:
        return _isin(entries.column("signal_id"), self.signals)

    def state(self) -> dict[str, Any]:
        return {"kind": "expiry", "days": self.days, "default_days": self.default_days, "now": self.now.isoformat(),
                "signals": sorted(self.signals)}


def _time_or_none(value: Any) -> datetime | None:
    try:
        return parse_event_time(value)
    except (TypeError, ValueError):
        return None


def selector_from_state(state: dict[str, Any], pseudonymizer: Pseudonymizer | None) -> Selector:
    """The selector a journal recorded (see `Selector.state`)."""
    if state["kind"] == "subject":
        return SubjectSelector(state["aliases"], state["signals"], pseudonymizer)
    return ExpirySelector(state["days"], state["default_days"], datetime.fromisoformat(state["now"]),
                          state["signals"])
