"""What survives a restart: the task queue (an atomic JSON snapshot), every event (an append-only log), and
the contract shards written from it.

- `state/queue.json` is written whole to a temporary file and renamed into place: it is old or new, never half.
- `state/events.jsonl` gets one line per label, resolution, comment or session start, flushed and fsync'd
  before the client hears "accepted". Appending keeps a label O(1) instead of rewriting a growing file; a
  crash can only tear the last line, which `replay` cuts off (that label was never acknowledged).
- Shards are named by the range of event numbers they hold (`wb-<first>-<last>.jsonl`) and written atomically,
  so the highest number in a shard name is the watermark: after a restart the rows above it are written
  again under the same name they would have had, and no row is lost or written twice.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf_ray.storage import StorageRoot

SHARD_PATTERN = re.compile(r"^wb-(\d{9})-(\d{9})\.jsonl$")


class StateError(RuntimeError):
    """The state folder is damaged beyond a torn last line; the message names the file and line."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp file in the same folder, fsync, rename: the file is the old or the new version, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class EventLog:
    """Numbered events, one JSON line each; `append` returns once the line is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_seq = 0
        self._handle: Any = None

    def replay(self) -> list[dict[str, Any]]:
        """Every complete event in order; a torn last line (a crash mid-write) is cut from the file."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        events = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise StateError(f"{self.path} line {number} is not JSON ({error.msg}); the event log is damaged"
                                 ) from None
        self.last_seq = events[-1]["seq"] if events else 0
        return events

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        numbered = {**event, "seq": self.last_seq + 1}
        self._handle.write(json.dumps(numbered, ensure_ascii=False, sort_keys=True).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.last_seq = numbered["seq"]
        return numbered

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ShardWriter:
    """Contract rows out as JSONL shards `rlhf-ray ingest` reads, named by the event numbers they hold."""

    def __init__(self, root: StorageRoot) -> None:
        self.root = root
        self.files_written = 0

    def watermark(self) -> int:
        """The highest event number already in a shard (0 when none)."""
        highest = 0
        for path in self.root.list_files(suffixes=(".jsonl",)):
            match = SHARD_PATTERN.match(path.rsplit("/", 1)[-1])
            if match:
                highest = max(highest, int(match.group(2)))
        return highest

    def write(self, rows: Sequence[tuple[int, dict[str, Any]]]) -> str | None:
        if not rows:
            return None
        data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for _, row in rows).encode()
        path = self.root.write_bytes_atomic(data, f"wb-{rows[0][0]:09d}-{rows[-1][0]:09d}.jsonl")
        self.files_written += 1
        return path
