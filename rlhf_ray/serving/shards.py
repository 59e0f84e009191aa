"""Buffered JSONL shards, each file written atomically: feedback rows and the shadow comparison log.

Rows collect in memory and go out as one file when `flush_rows` are waiting or the oldest has waited
`flush_interval_s`, so traffic makes a handful of files (which ingest reads one per task) instead of one
file per click; each file appears complete or not at all (temporary name, then rename, via `StorageRoot`).

On a local or mounted (POSIX) filesystem the buffer also keeps a journal, so that a writer killed between
accepting a row and writing its shard (a router replica SIGKILLed, OOM-killed, its node lost) loses nothing:

    add(row)   appends the row's line to the journal segment `.journal-<shard name>.wal` beside the shards
               (one `write`, before `add` returns) and holds an exclusive `flock` on the segment while it lives
    flush()    writes the shard `<shard name>` atomically, then deletes the segment
    recover()  (at start, and whenever the owner calls it) any segment nobody holds a lock on belongs to a dead
               writer: its complete lines become the shard it names — unless that shard already exists, i.e. the
               writer died between writing it and deleting the segment — and the segment is deleted

A segment names its shard, so recovering it twice, or recovering one whose shard was written, writes that one
file again at most: no row twice. A line cut off by the kill was never acknowledged (`add` had not returned)
and is dropped. Journals are hidden files (leading dot, `.wal`), which ingest and `list_files` skip. On an
object store (`s3://`, `gs://`) there is no journal: rows buffered when the writer dies are lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf_ray.storage import StorageRoot

logger = logging.getLogger(__name__)
JOURNAL_PREFIX = ".journal-"
JOURNAL_SUFFIX = ".wal"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, default=_json_default) + "\n").encode()


def _complete_lines(data: bytes) -> list[bytes]:
    """The whole JSON lines of a journal segment; a last line cut off mid-write is dropped."""
    lines = []
    for raw in data.split(b"\n")[:-1]:  # what follows the last newline never completed
        try:
            json.loads(raw)
        except ValueError:
            logger.warning("shard journal: dropping a damaged line (%d bytes)", len(raw))
            continue
        lines.append(raw + b"\n")
    return lines


class _Segment:
    """One journal file: the rows of one future shard, locked by its writer for as long as it lives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for _ in range(5):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a recoverer is looking at the new, empty file: it will delete it
                os.close(fd)
                time.sleep(0.01)
                continue
            except OSError:  # no locks on this filesystem
                os.close(fd)
                raise
            try:  # the file we locked may be one a recoverer deleted meanwhile: then start again
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self.fd = fd
                return
            os.close(fd)
        raise OSError(f"could not create and lock the journal segment {path}")

    def append(self, line: bytes) -> None:
        written = os.write(self.fd, line)
        while written < len(line):  # a regular file takes it in one call; loop for the odd short write
            written += os.write(self.fd, line[written:])

    def close(self, delete: bool) -> None:
        """Delete (while still locked, so no recoverer reads it half-gone) and/or release the segment."""
        if delete:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


class JsonlShardBuffer:
    """Rows waiting for the next shard file under `root_uri`; file names are `<UTC time>-<tag>-<uuid>.jsonl`
    (the time of the shard's first row). `journal`: keep the crash journal (local/mounted filesystems only)."""

    def __init__(self, root_uri: str, tag: str, flush_rows: int, flush_interval_s: float,
                 clock: Callable[[], float] = time.monotonic, journal: bool = True) -> None:
        self.root = StorageRoot.from_uri(root_uri)
        self.tag = tag
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._lock = threading.Lock()  # add() runs on the event loop, flush() also in a worker thread
        self._rows: list[bytes] = []
        self._name: str | None = None
        self._segment: _Segment | None = None
        self._oldest: float | None = None
        self.files_written = 0
        self.files_recovered = 0
        self.journal_dir = Path(self.root.base) if journal and self.root.is_local else None
        if self.journal_dir is not None:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            self.recover()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: dict[str, Any]) -> str | None:
        """Queue a row (journaled before this returns); writes a shard (and returns its path) when the buffer
        is full."""
        line = _line(row)
        with self._lock:
            if self._name is None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                self._name = f"{stamp}-{self.tag}-{uuid.uuid4().hex[:8]}.jsonl"
            if self.journal_dir is not None:
                if self._segment is None:
                    self._segment = self._open_segment(self._name)
                if self._segment is not None:
                    self._segment.append(line)
            if self._oldest is None:
                self._oldest = self._clock()
            self._rows.append(line)
            full = len(self._rows) >= self.flush_rows
        return self.flush() if full else None

    def due(self) -> bool:
        return self._oldest is not None and self._clock() - self._oldest >= self.flush_interval_s

    def flush(self) -> str | None:
        """Write every waiting row as one shard; None when nothing waits. If the write fails the error is
        raised and the rows are not kept in memory; their journal segment (if any) is released instead, so the
        next `recover()` writes them."""
        with self._lock:
            if not self._rows:
                return None
            lines, name, segment = self._rows, self._name, self._segment
            self._rows, self._name, self._segment, self._oldest = [], None, None, None
        assert name is not None
        try:
            path = self.root.write_bytes_atomic(b"".join(lines), name)
        except BaseException:
            if segment is not None:
                segment.close(delete=False)
            raise
        if segment is not None:
            segment.close(delete=True)
        self.files_written += 1
        return path

    def recover(self) -> list[str]:
        """Write the shards of journal segments left by dead writers (see the module doc); their paths."""
        if self.journal_dir is None:
            return []
        written = []
        for path in sorted(self.journal_dir.glob(f"{JOURNAL_PREFIX}*{JOURNAL_SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # its writer (or another recoverer) just deleted it
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it (our own segments included: each open is locked apart)
                if os.fstat(fd).st_nlink == 0:
                    continue  # deleted between our open and our lock: done by someone else
                lines = _complete_lines(path.read_bytes())
                name = path.name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
                if lines and not self.root.exists(name):
                    written.append(self.root.write_bytes_atomic(b"".join(lines), name))
                    logger.warning("shard journal: recovered %d rows of a dead writer into %s", len(lines), name)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        self.files_recovered += len(written)
        return written

    def _open_segment(self, name: str) -> _Segment | None:
        assert self.journal_dir is not None
        try:
            return _Segment(self.journal_dir / f"{JOURNAL_PREFIX}{name}{JOURNAL_SUFFIX}")
        except OSError as error:  # e.g. a filesystem without locks: carry on without the journal
            logger.warning("shard journal off for %s: %s", self.journal_dir, error)
            self.journal_dir = None
            return None
