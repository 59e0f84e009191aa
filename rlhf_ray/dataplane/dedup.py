"""Duplicate resolution and dataset versions, over the keys of accepted rows only.

The first delivery of a signal id (in source-file, row order) wins. A later row with the same id and
the same content is a redelivery (`duplicate`); with different content it is a conflicting id and is
quarantined as `duplicate_id`. The dataset version is a hash of what was accepted, so the same input
always gives the same version.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

KEY_COLUMNS = ("signal_id", "content_hash", "source_file", "row_number")
CHANGE_SCHEMA = pa.schema([("source_file", pa.string()), ("row_number", pa.int64()), ("status", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string())])


def resolve_duplicates(keys: pa.Table) -> pa.Table:
    """Rows (source_file, row_number, status, reason, detail) that must change from `accepted`.

    `keys` holds KEY_COLUMNS for every accepted row.
    """
    ordered = keys.sort_by([("signal_id", "ascending"), ("source_file", "ascending"), ("row_number", "ascending")])
    ids = ordered.column("signal_id").to_pylist()
    hashes = ordered.column("content_hash").to_pylist()
    files = ordered.column("source_file").to_pylist()
    rows = ordered.column("row_number").to_pylist()
    changed: dict[str, list] = {name: [] for name in CHANGE_SCHEMA.names}
    first = 0
    for index, signal_id in enumerate(ids):
        if index == 0 or signal_id != ids[index - 1]:
            first = index
            continue
        same = hashes[index] == hashes[first]
        changed["source_file"].append(files[index])
        changed["row_number"].append(rows[index])
        changed["status"].append("duplicate" if same else "quarantined")
        changed["reason"].append("duplicate" if same else "duplicate_id:signal_id")
        changed["detail"].append(
            f"signal_id {signal_id!r} first delivered in {files[first]} row {rows[first]} "
            + ("with the same content" if same else "with different content; expected unique ids")
        )
    return pa.table(changed, schema=CHANGE_SCHEMA)


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
