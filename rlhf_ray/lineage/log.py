"""The append-only, tamper-evident event log: one file per entry, chained by sha256.

Entry `n` lives at `events/{n:012d}.json` and holds `{seq, time, event, artifact_id, payload, prev_hash,
hash}` with `hash = sha256(prev_hash || canonical_json(entry without hash))` (`prev_hash` as its 64 ASCII
hex characters) and the first `prev_hash` all zeros. One file per entry rather than one appended file,
because object stores cannot append.

Rewriting an entry breaks its own hash; recomputing that hash breaks the next entry's `prev_hash`;
deleting, renaming or swapping files breaks the gapless `seq` ↔ file-name correspondence. What a chain
cannot show by itself is the loss of its newest entries: `VerifyReport.head_hash` is the value to anchor
elsewhere (a manifest, a release note) when that matters.

Concurrency: on a local filesystem a writer builds the complete entry in a temporary file and hard-links
it onto the next sequence number, which fails if the name exists (an exclusive create, like
`O_CREAT|O_EXCL`, but the file is never visible half-written); the loser re-reads the tail and retries,
so concurrent writers (threads or processes) leave one gapless chain. Remote filesystems (s3://, gs://...)
have no exclusive create in pyarrow: there the log assumes a single writer at a time, and only checks
that the next name is still free just before its atomic write.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from rlhf_ray.lineage.hashing import LineageError, canonical_json, sha256_hex
from rlhf_ray.storage import StorageRoot

EVENTS = "events"
GENESIS_HASH = "0" * 64
EVENT_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")
ENTRY_NAME = re.compile(r"^(\d{12})\.json$")
MAX_APPEND_ATTEMPTS = 1000


@dataclass(frozen=True)
class LogEntry:
    """One event in the chain; `hash` covers every other field and, through `prev_hash`, all before it."""

    seq: int
    time: str
    event: str
    artifact_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LogEntry:
        if not isinstance(data, dict):
            raise LineageError(f"log entry is a {type(data).__name__}; expected a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise LineageError(f"log entry {data.get('seq', '?')} lacks field(s) {missing}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def body(self) -> dict[str, Any]:
        """The hashed part: everything but `hash` itself."""
        return {k: v for k, v in self.to_dict().items() if k != "hash"}


def entry_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return sha256_hex(prev_hash.encode("ascii") + canonical_json(body))


def entry_name(seq: int) -> str:
    return f"{seq:012d}.json"


@dataclass(frozen=True)
class VerifyReport:
    """Result of walking the chain: `entries_checked` entries passed before the first problem, if any."""

    ok: bool
    entries_checked: int
    head_hash: str
    problem_seq: int | None = None
    problem: str | None = None


def publish_once(root: StorageRoot, data: bytes, *parts: str) -> bool:
    """Write `data` at `parts` unless something is already there; False when the name was taken.

    Local: complete temp file, then `os.link` (atomic and exclusive). Remote: best effort under the
    single-writer assumption (existence check, then temp-then-rename).
    """
    if not root.is_local:
        if root.exists(*parts):
            return False
        root.write_bytes_atomic(data, *parts)
        return True
    path = root.join(*parts)
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{name}", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(temp_path, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temp_path)


class EventLog:
    """The chain under `<root>/events/`; `now` supplies each entry's ISO-8601 time."""

    def __init__(self, root: StorageRoot, now: Callable[[], str]) -> None:
        self._root = root
        self._now = now

    def append(self, event: str, artifact_id: str | None, payload: dict[str, Any]) -> LogEntry:
        """Chain a new entry onto the current tail, retrying on a lost race for the sequence number."""
        if not isinstance(event, str) or not EVENT_PATTERN.match(event):
            raise LineageError(f"event name {event!r} does not match {EVENT_PATTERN.pattern}")
        if not isinstance(payload, dict):
            raise LineageError(f"payload of event {event!r} is a {type(payload).__name__}; expected a dict")
        payload = json.loads(canonical_json(payload))
        for _ in range(MAX_APPEND_ATTEMPTS):
            seq, prev_hash = self._tail()
            body = {"seq": seq, "time": self._now(), "event": event, "artifact_id": artifact_id,
                    "payload": payload, "prev_hash": prev_hash}
            entry = LogEntry(**body, hash=entry_hash(prev_hash, body))
            if publish_once(self._root, canonical_json(entry.to_dict()), EVENTS, entry_name(seq)):
                return entry
        raise LineageError(f"could not append event {event!r}: lost the race for a sequence number "
                           f"{MAX_APPEND_ATTEMPTS} times under {self._root.join(EVENTS)}")

    def entries(self) -> list[LogEntry]:
        """All entries in sequence order, parsed but not verified (see `verify`)."""
        return [self._read(path) for path in self._entry_paths()]

    def verify(self) -> VerifyReport:
        """Walk the chain from the genesis hash; stop at the first entry that does not hold."""
        prev_hash = GENESIS_HASH
        paths = self._root.list_files(EVENTS)
        for seq, path in enumerate(paths):
            try:
                prev_hash = self._check(seq, path, prev_hash)
            except LineageError as error:
                return VerifyReport(ok=False, entries_checked=seq, head_hash=prev_hash, problem_seq=seq,
                                    problem=str(error))
        return VerifyReport(ok=True, entries_checked=len(paths), head_hash=prev_hash)

    def _check(self, seq: int, path: str, prev_hash: str) -> str:
        """The hash of entry `seq` stored at `path`, after checking it against its name and predecessor."""
        name = path.rsplit("/", 1)[-1]
        named_seq = _named_seq(path)
        if named_seq is None:
            raise LineageError(f"unexpected file {name!r} in the log where entry {seq} was expected")
        if named_seq != seq:
            raise LineageError(f"entry {seq} is missing: the next file is {name} (deleted or renamed)")
        entry = self._read(path)
        if entry.seq != seq:
            raise LineageError(f"file {name} holds entry seq {entry.seq!r}: entries were renamed or "
                               "reordered")
        if entry.hash != entry_hash(entry.prev_hash, entry.body()):
            raise LineageError(f"entry {seq}: stored hash does not match its content (entry was modified)")
        if entry.prev_hash != prev_hash:
            raise LineageError(f"entry {seq}: prev_hash does not match the hash of entry {seq - 1} "
                               f"(an earlier entry was rewritten and its hash recomputed)")
        return entry.hash

    def _entry_paths(self) -> list[str]:
        return [p for p in self._root.list_files(EVENTS) if _named_seq(p) is not None]

    def _tail(self) -> tuple[int, str]:
        """The next sequence number (after the highest file name) and the hash it must chain onto."""
        paths = self._entry_paths()
        if not paths:
            return 0, GENESIS_HASH
        return _named_seq(paths[-1]) + 1, self._read(paths[-1]).hash

    def _read(self, path: str) -> LogEntry:
        try:
            with self._root.fs.open_input_stream(path) as stream:
                data = json.loads(stream.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LineageError(f"log entry {path} is not valid JSON: {error}") from error
        return LogEntry.from_dict(data)


def _named_seq(path: str) -> int | None:
    """The sequence number in an entry's file name, or None for a file that is not an entry."""
    match = ENTRY_NAME.match(path.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None
