"""The append-only, tamper-evident event log: one file per entry, chained by HMAC-SHA256 under the audit key.

Entry `n` lives at `events/{n:012d}.json` and holds `{seq, time, event, artifact_id, payload, prev_hash, scheme,
key_id, hash}` with `hash = HMAC-SHA256(key, prev_hash || canonical_json(entry without hash))` (`prev_hash` as
its 64 ASCII hex characters), the first `prev_hash` all zeros, `scheme` "hmac-sha256" and `key_id` the
fingerprint of the key (never the key; `rlhf_ray.lineage.keys` says where the key is kept). One file per entry
rather than one appended file, because object stores cannot append.

Rewriting an entry breaks its own hash, and without the key no one can recompute it; recomputing it with the key
breaks the next entry's `prev_hash`; deleting, renaming or swapping files breaks the gapless `seq` ↔ file-name
correspondence; re-chaining the whole log under another key (or none) shows as entries of another key id or
scheme. What the chain alone cannot show is a wholesale rewrite by a holder of the key, or the loss of its newest
entries: for that, record the head hash elsewhere (`rlhf-ray lineage --anchor`: a manifest, a ticket, a release
note) and verify against it later (`verify(anchor=...)`): the anchored entry must still be in the chain, and
since its hash covers its `seq` and everything before it, nothing up to it changed.

Logs written before the chain was keyed (no `scheme`, plain sha256) still read, but neither verify nor take new
entries: the error says so, naming the entry.

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
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from rlhf_ray.lineage.hashing import AuditKey, LineageError, canonical_json
from rlhf_ray.storage import StorageRoot

EVENTS = "events"
GENESIS_HASH = "0" * 64
EVENT_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")
ENTRY_NAME = re.compile(r"^(\d{12})\.json$")
MAX_APPEND_ATTEMPTS = 1000
SCHEME = "hmac-sha256"
LEGACY_SCHEME = "sha256"  # entries written before the chain was keyed carry no scheme field
ANCHOR_PATTERN = re.compile(r"^[0-9a-f]{64}$")
KeySource = Callable[[bool], AuditKey]  # create-if-absent → the audit key (`rlhf_ray.lineage.keys.load_audit_key`)


@dataclass(frozen=True)
class LogEntry:
    """One event in the chain; `hash` covers every other field and, through `prev_hash`, all before it.
    `scheme` and `key_id` default to those of a log written before the chain was keyed."""

    seq: int
    time: str
    event: str
    artifact_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    scheme: str = LEGACY_SCHEME
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LogEntry:
        if not isinstance(data, dict):
            raise LineageError(f"log entry is a {type(data).__name__}; expected a JSON object")
        required = [f.name for f in fields(cls) if f.name not in ("scheme", "key_id")]
        missing = [name for name in required if name not in data]
        if missing:
            raise LineageError(f"log entry {data.get('seq', '?')} lacks field(s) {missing}")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def body(self) -> dict[str, Any]:
        """The hashed part: everything but `hash` itself."""
        return {k: v for k, v in self.to_dict().items() if k != "hash"}


def entry_hash(key: AuditKey, prev_hash: str, body: dict[str, Any]) -> str:
    return key.mac(prev_hash.encode("ascii") + canonical_json(body))


def check_anchor(anchor: str) -> str:
    """An anchor as given to `verify`: a head hash as `rlhf-ray lineage --anchor` printed it (64 hex)."""
    value = anchor.strip().lower() if isinstance(anchor, str) else anchor
    if not isinstance(value, str) or not ANCHOR_PATTERN.match(value):
        raise LineageError(f"anchor {anchor!r} is not a head hash; expected the 64 hex characters that "
                           "`rlhf-ray lineage --anchor` printed")
    return value


def key_problem(entry: LogEntry, key: AuditKey | None) -> str | None:
    """Why `entry` was not chained with `key` (another scheme, another key id), or None. Without a key, only
    the scheme is checked."""
    if entry.scheme == LEGACY_SCHEME:
        return (f"entry {entry.seq} was chained without a key (plain sha256, written before the audit chain was "
                f"keyed); expected scheme {SCHEME!r}: such a log cannot be verified, start a new lineage root")
    if entry.scheme != SCHEME:
        return f"entry {entry.seq} has scheme {entry.scheme!r}; expected {SCHEME!r}"
    if key is not None and entry.key_id != key.key_id:
        return (f"entry {entry.seq} was chained with audit key id {entry.key_id!r}, but the key in use "
                f"({key.source}) has id {key.key_id!r}: the wrong key, or the log was re-chained under another key")
    return None


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
    key_id: str | None = None
    anchor_seq: int | None = None  # where the anchor given to `verify` was found (None: not given or not found)


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
    """The chain under `<root>/events/`; `now` supplies each entry's ISO-8601 time, `key` the audit key (asked
    with create=True by a writer, False by a verifier; read once, when first needed)."""

    def __init__(self, root: StorageRoot, now: Callable[[], str], key: KeySource) -> None:
        self._root = root
        self._now = now
        self._key_source = key
        self._key: AuditKey | None = None

    def key(self, create: bool) -> AuditKey:
        if self._key is None:
            self._key = self._key_source(create)
        return self._key

    def append(self, event: str, artifact_id: str | None, payload: dict[str, Any]) -> LogEntry:
        """Chain a new entry onto the current tail, retrying on a lost race for the sequence number."""
        if not isinstance(event, str) or not EVENT_PATTERN.match(event):
            raise LineageError(f"event name {event!r} does not match {EVENT_PATTERN.pattern}")
        if not isinstance(payload, dict):
            raise LineageError(f"payload of event {event!r} is a {type(payload).__name__}; expected a dict")
        payload = json.loads(canonical_json(payload))
        key = self.key(create=True)
        for _ in range(MAX_APPEND_ATTEMPTS):
            seq, prev_hash = self._tail(key)
            body = {"seq": seq, "time": self._now(), "event": event, "artifact_id": artifact_id,
                    "payload": payload, "prev_hash": prev_hash, "scheme": SCHEME, "key_id": key.key_id}
            entry = LogEntry(**body, hash=entry_hash(key, prev_hash, body))
            if publish_once(self._root, canonical_json(entry.to_dict()), EVENTS, entry_name(seq)):
                return entry
        raise LineageError(f"could not append event {event!r}: lost the race for a sequence number "
                           f"{MAX_APPEND_ATTEMPTS} times under {self._root.join(EVENTS)}")

    def entries(self) -> list[LogEntry]:
        """All entries in sequence order, parsed but not verified (see `verify`)."""
        return [self._read(path) for path in self._entry_paths()]

    def verify(self, anchor: str | None = None) -> VerifyReport:
        """Walk the chain from the genesis hash under the audit key; stop at the first entry that does not hold.
        With `anchor` (a head hash recorded earlier), the chain must also still hold the entry of that hash."""
        anchor = None if anchor is None else check_anchor(anchor)
        prev_hash, anchor_seq, key = GENESIS_HASH, None, None
        paths = self._root.list_files(EVENTS)
        for seq, path in enumerate(paths):
            try:
                key = key or self._verifying_key(path)
                prev_hash = self._check(seq, path, prev_hash, key)
            except LineageError as error:
                return VerifyReport(ok=False, entries_checked=seq, head_hash=prev_hash, problem_seq=seq,
                                    problem=str(error), key_id=key and key.key_id, anchor_seq=anchor_seq)
            anchor_seq = seq if prev_hash == anchor else anchor_seq
        report = VerifyReport(ok=True, entries_checked=len(paths), head_hash=prev_hash,
                              key_id=key and key.key_id, anchor_seq=anchor_seq)
        if anchor is not None and anchor_seq is None:
            return replace(report, ok=False, problem=(
                f"anchor {anchor} is not in the chain ({len(paths)} entries, head {prev_hash}): the log was "
                "rewritten or truncated at or before the anchored entry"))
        return report

    def _verifying_key(self, first_path: str) -> AuditKey:
        """The key to verify with; without one, say which key id the log needs."""
        try:
            return self.key(create=False)
        except LineageError as error:
            try:
                first = self._read(first_path)
            except LineageError:
                raise LineageError(f"{error} (and the log's first entry does not read)") from None
            raise LineageError(key_problem(first, None) or f"{error} (this log was chained with audit key id "
                                                             f"{first.key_id!r})") from None

    def _check(self, seq: int, path: str, prev_hash: str, key: AuditKey) -> str:
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
        problem = key_problem(entry, key)
        if problem:
            raise LineageError(problem)
        if entry.hash != entry_hash(key, entry.prev_hash, entry.body()):
            raise LineageError(f"entry {seq}: stored hash does not match its content under the audit key "
                               "(entry was modified)")
        if entry.prev_hash != prev_hash:
            raise LineageError(f"entry {seq}: prev_hash does not match the hash of entry {seq - 1} "
                               f"(an earlier entry was rewritten and its hash recomputed)")
        return entry.hash

    def _entry_paths(self) -> list[str]:
        return [p for p in self._root.list_files(EVENTS) if _named_seq(p) is not None]

    def _tail(self, key: AuditKey) -> tuple[int, str]:
        """The next sequence number (after the highest file name) and the hash it must chain onto; refused when
        the tail was chained with another key or scheme (the new entry could never verify with the old ones)."""
        paths = self._entry_paths()
        if not paths:
            return 0, GENESIS_HASH
        tail = self._read(paths[-1])
        problem = key_problem(tail, key)
        if problem:
            raise LineageError(f"cannot append to {self._root.join(EVENTS)}: {problem}")
        return _named_seq(paths[-1]) + 1, tail.hash

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
