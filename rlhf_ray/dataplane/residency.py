"""Residency and retention policies over curated tables: pure checks, no I/O.

Residency: a row tagged with region R may only be written to a destination whose region is allowed
for R. Retention: a row older than its signal type's retention period is dropped by the retention pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc


class ResidencyViolation(ValueError):
    """Rows of some regions may not go to the requested destination."""


def residency_violations(
    regions: Sequence[str], destination_region: str, allowed: Mapping[str, Sequence[str]]
) -> Counter[str]:
    """Row counts per source region that may not be written to `destination_region`."""
    return Counter(r for r in regions if destination_region not in allowed.get(r, ()))


def check_export(regions: Sequence[str], destination_region: str, allowed: Mapping[str, Sequence[str]]) -> None:
    """Raise `ResidencyViolation` naming every offending region, its row count and where it may go."""
    refused = residency_violations(regions, destination_region, allowed)
    if refused:
        parts = [f"{count} rows of region {region!r} (allowed destinations: {sorted(allowed.get(region, ()))})"
                 for region, count in sorted(refused.items())]
        raise ResidencyViolation(f"residency policy forbids writing to destination region {destination_region!r}: "
                                 + "; ".join(parts))


def expired(table: pa.Table, retention_days: int, now: datetime) -> pa.BooleanArray:
    """True where `event_time` is older than `now − retention_days`."""
    cutoff = pa.scalar(now - timedelta(days=retention_days), type=table.schema.field("event_time").type)
    return pc.less(table.column("event_time"), cutoff).combine_chunks()
