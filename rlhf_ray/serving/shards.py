"""Buffered JSONL shards, each file written atomically: feedback rows and the shadow comparison log.

Rows collect in memory and go out as one file when `flush_rows` are waiting or the oldest has waited
`flush_interval_s`, so traffic makes a handful of files (which ingest reads one per task) instead of one
file per click; each file appears complete or not at all (temporary name, then rename, via `StorageRoot`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from rlhf_ray.storage import StorageRoot


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonlShardBuffer:
    """Rows waiting for the next shard file under `root_uri`; file names are `<UTC time>-<tag>-<uuid>.jsonl`."""

    def __init__(self, root_uri: str, tag: str, flush_rows: int, flush_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = StorageRoot.from_uri(root_uri)
        self.tag = tag
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._rows: list[dict[str, Any]] = []
        self._oldest: float | None = None
        self.files_written = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: dict[str, Any]) -> str | None:
        """Queue a row; writes a shard (and returns its path) when the buffer is full."""
        if self._oldest is None:
            self._oldest = self._clock()
        self._rows.append(row)
        return self.flush() if len(self._rows) >= self.flush_rows else None

    def due(self) -> bool:
        return self._oldest is not None and self._clock() - self._oldest >= self.flush_interval_s

    def flush(self) -> str | None:
        """Write every waiting row as one shard; None when nothing waits."""
        if not self._rows:
            return None
        rows, self._rows, self._oldest = self._rows, [], None
        data = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows).encode()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.root.write_bytes_atomic(data, f"{stamp}-{self.tag}-{uuid.uuid4().hex[:8]}.jsonl")
        self.files_written += 1
        return path
