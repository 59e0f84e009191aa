"""Duplicate resolution and dataset versions, over the keys of accepted rows only.

The first delivery of a signal id (in source-file, row order) wins. A later row with the same id and
the same content is a redelivery (`duplicate`); with different content it is a conflicting id and is
quarantined as `duplicate_id`. A user's feedback counts once per (response, user, kind), whatever its signal
ids: a later row rating the same answer again in the same way is a `duplicate_feedback` (the first, by event
time, stays). The dataset version is a hash of what was accepted, so the same input always gives the same
version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

KEY_COLUMNS = ("signal_id", "content_hash", "source_file", "row_number")
FEEDBACK_KEY_COLUMNS = ("feedback_key", "event_time", "source_file", "row_number")
CHANGE_SCHEMA = pa.schema([("source_file", pa.string()), ("row_number", pa.int64()), ("status", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string())])


def _repeats(ordered: list[str]) -> list[tuple[int, int]]:
    """(index, index of its run's first) of every value of a sorted list that equals the one before it."""
    pairs, first = [], 0
    for index, value in enumerate(ordered):
        if index == 0 or value != ordered[index - 1]:
            first = index
        else:
            pairs.append((index, first))
    return pairs


def _repeat_changes(ordered: pa.Table, key: str,
                    verdict: Callable[[int, int, str], tuple[str, str, str]]) -> pa.Table:
    """Changes (CHANGE_SCHEMA) for every row of `ordered` (sorted by `key` first) whose `key` equals the row
    before's: its (source_file, row_number) and `verdict(index, index of its run's first, where the first was
    delivered)` = (status, reason, detail)."""
    keys = ordered.column(key).to_pylist()
    files = ordered.column("source_file").to_pylist()
    rows = ordered.column("row_number").to_pylist()
    changed: dict[str, list] = {name: [] for name in CHANGE_SCHEMA.names}
    for index, first in _repeats(keys):
        status, reason, detail = verdict(index, first, f"{files[first]} row {rows[first]}")
        for name, value in zip(CHANGE_SCHEMA.names, (files[index], rows[index], status, reason, detail),
                               strict=True):
            changed[name].append(value)
    return pa.table(changed, schema=CHANGE_SCHEMA)


def resolve_duplicates(keys: pa.Table) -> pa.Table:
    """Rows (source_file, row_number, status, reason, detail) that must change from `accepted`.

    `keys` holds KEY_COLUMNS for every accepted row.
    """
    ordered = keys.sort_by([("signal_id", "ascending"), ("source_file", "ascending"), ("row_number", "ascending")])
    ids = ordered.column("signal_id").to_pylist()
    hashes = ordered.column("content_hash").to_pylist()

    def verdict(index: int, first: int, delivered: str) -> tuple[str, str, str]:
        if hashes[index] == hashes[first]:
            return "duplicate", "duplicate", f"signal_id {ids[index]!r} first delivered in {delivered} with the " \
                                             "same content"
        return "quarantined", "duplicate_id:signal_id", f"signal_id {ids[index]!r} first delivered in {delivered} " \
                                                        "with different content; expected unique ids"

    return _repeat_changes(ordered, "signal_id", verdict)


def dataset_version(keys: pa.Table) -> str:
    """`ds-` + sha256 over the sorted (signal_id, content_hash) pairs of the rows kept."""
    ordered = keys.select(["signal_id", "content_hash"]).sort_by([("signal_id", "ascending"),
                                                                  ("content_hash", "ascending")])
    digest = hashlib.sha256()
    for signal_id, row_hash in zip(ordered.column(0).to_pylist(), ordered.column(1).to_pylist(), strict=True):
        digest.update(f"{signal_id}\0{row_hash}\n".encode())
    return f"ds-{digest.hexdigest()[:16]}"


def kept_keys(keys: pa.Table, changed: pa.Table) -> pa.Table:
    """Accepted keys minus the rows `resolve_duplicates` moved out."""
    if changed.num_rows == 0:
        return keys
    moved = pc.binary_join_element_wise(changed["source_file"], pc.cast(changed["row_number"], pa.string()), "\0")
    mine = pc.binary_join_element_wise(keys["source_file"], pc.cast(keys["row_number"], pa.string()), "\0")
    return keys.filter(pc.invert(pc.is_in(mine, value_set=moved)))


def apply_changes(table: pa.Table, changed: pa.Table) -> pa.Table:
    """Overwrite status/reason/detail of the rows named in `changed` (by source_file, row_number)."""
    if changed.num_rows == 0:
        return table
    updates = {
        (f, r): values
        for f, r, *values in zip(*(changed.column(c).to_pylist() for c in CHANGE_SCHEMA.names), strict=True)
    }
    targets = [name for name in ("status", "reason", "detail") if name in table.column_names]
    columns = {name: table.column(name).to_pylist() for name in targets}
    positions = zip(table.column("source_file").to_pylist(), table.column("row_number").to_pylist(), strict=True)
    for index, key in enumerate(positions):
        update = updates.get(key)
        if update is not None:
            for name, value in zip(("status", "reason", "detail"), update, strict=True):
                if name in columns:
                    columns[name][index] = value
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.string()))
    return table


def feedback_key(row: Mapping[str, Any]) -> str | None:
    """`item_id ␀ actor_id ␀ kind` of a user's feedback on one answer (kind: the signal type, and a rating's
    scale, so a thumb and a Likert rating of one answer are two kinds); None for rows that rate no served answer
    (annotators, evaluators, rows without an item id)."""
    if row.get("source") != "user" or not row.get("item_id") or not row.get("actor_id"):
        return None
    kind = str(row.get("signal_type"))
    if kind == "rating":
        kind += f"/{row.get('scale')}"
    return f"{row['item_id']}\0{row['actor_id']}\0{kind}"


def resolve_feedback_repeats(keys: pa.Table) -> pa.Table:
    """Changes (as `resolve_duplicates`) marking every row after the first of its `feedback_key` (by event
    time, then source file and row) a `duplicate_feedback`. `keys` holds FEEDBACK_KEY_COLUMNS of the accepted rows
    that survived `resolve_duplicates`."""
    keyed = keys.filter(pc.is_valid(keys.column("feedback_key")))
    ordered = keyed.sort_by([("feedback_key", "ascending"), ("event_time", "ascending"),
                             ("source_file", "ascending"), ("row_number", "ascending")])
    names = ordered.column("feedback_key").to_pylist()

    def verdict(index: int, first: int, delivered: str) -> tuple[str, str, str]:
        kind = names[index].rsplit(chr(0), 1)[-1]
        return "duplicate", "duplicate_feedback", (f"the same user's {kind} feedback on this response was first "
                                                   f"delivered in {delivered}; expected one per response, user and "
                                                   "kind")

    return _repeat_changes(ordered, "feedback_key", verdict)
