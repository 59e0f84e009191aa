"""Ray Data sinks that write rlhf-ray datasets: one pass, typed files per signal type, atomic parts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from rlhf_ray.dataplane.curated import to_curated_table
from rlhf_ray.dataplane.dedup import apply_changes
from rlhf_ray.dataplane.records import ACCEPTED, QUARANTINED
from rlhf_ray.storage import StorageRoot

QUARANTINE_COLUMNS = ["signal_id", "signal_type", "reason", "detail", "source_file", "row_number", "record"]


class DatasetVersionDatasink(Datasink[dict[str, int]]):
    """Writes ingest records into a staging folder: `curated/<type>/part-<task>.parquet` in each signal
    type's contract schema, and `quarantine/part-<task>.parquet`. Duplicate decisions made on the driver
    (`changed`) are applied on the way, so the data is read once."""

    def __init__(self, root: StorageRoot, staging: str, changed: pa.Table) -> None:
        self.root = root
        self.staging = staging
        self.changed = changed

    def write(self, blocks: Iterable[Block], ctx) -> dict[str, int]:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        if not tables:
            return {}
        records = apply_changes(pa.concat_tables(tables), self.changed)
        part = f"part-{ctx.task_idx:05d}.parquet"
        written: Counter[str] = Counter()
        accepted = records.filter(pc.equal(records.column("status"), ACCEPTED))
        for signal_type in pc.unique(accepted.column("signal_type")).to_pylist():
            rows = accepted.filter(pc.equal(accepted.column("signal_type"), signal_type))
            typed = to_curated_table(rows, signal_type)
            self.root.write_parquet_atomic(typed, self.staging, "curated", signal_type, part)
            written[signal_type] = rows.num_rows
        quarantined = records.filter(pc.equal(records.column("status"), QUARANTINED)).select(QUARANTINE_COLUMNS)
        if quarantined.num_rows:
            self.root.write_parquet_atomic(quarantined, self.staging, "quarantine", part)
            written[QUARANTINED] = quarantined.num_rows
        return dict(written)
