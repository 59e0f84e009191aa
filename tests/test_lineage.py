"""Lineage registry: content-hashed ids, idempotent records, ancestry, and the keyed, anchored audit chain."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.cli import main
from rlhf_ray.lineage import (
    AUDIT_KEY_ENV,
    AUDIT_KEY_FILE_ENV,
    GENESIS_HASH,
    SCHEME,
    AuditKey,
    LineageError,
    LineageRegistry,
    artifact_id,
    canonical_json,
    default_key_file,
    load_audit_key,
)
from rlhf_ray.storage import StorageRoot

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = bytes.fromhex("a1" * 32)
OTHER_KEY = bytes.fromhex("b2" * 32)


@pytest.fixture(autouse=True)
def _no_audit_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUDIT_KEY_ENV, raising=False)
    monkeypatch.delenv(AUDIT_KEY_FILE_ENV, raising=False)


def _registry(root: Path | str, key: bytes = KEY) -> LineageRegistry:
    return LineageRegistry(str(root), clock=lambda: T0, key=key)


def _entry_path(root: Path, seq: int) -> Path:
    return root / "events" / f"{seq:012d}.json"


def _diamond(registry: LineageRegistry) -> dict[str, str]:
    """shards → (train, eval) datasets → model ← both; policy ← model. Returns name → id."""
    shards = registry.register("shards", "world-seed-0", "d0", config={"seed": 0}, metrics={"rows": 120})
    train = registry.register("dataset", "train", "d1", parents=[shards.id], metrics={"accepted_rows": 100})
    held = registry.register("dataset", "held-out", "d2", parents=[shards.id])
    model = registry.register("model", "tiny", "d3", parents=[train.id, held.id], metrics={"loss": 1.234567})
    policy = registry.register("policy", "ppo-1", "d4", parents=[model.id])
    return {r.name: r.id for r in (shards, train, held, model, policy)}


def test_canonical_json_is_sorted_compact_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": [1, 2.5, (3,)], "a": "é"}) == '{"a":"é","b":[1,2.5,[3]]}'.encode()
    assert canonical_json({"x": 0.1}) == b'{"x":0.1}'
    with pytest.raises(LineageError, match=r"\$\.config\.lr is nan; expected a finite number"):
        canonical_json({"config": {"lr": float("nan")}})
    with pytest.raises(LineageError, match="key 1 at"):
        canonical_json({1: "x"})
    with pytest.raises(LineageError, match=r"\$\.path is a PosixPath"):
        canonical_json({"path": Path("/tmp")})


def test_artifact_id_is_deterministic_and_sensitive_to_the_definition() -> None:
    base = artifact_id("model", "abc", ["dataset-1"], {"lr": 0.1, "size": "tiny"})
    assert base == artifact_id("model", "abc", ("dataset-1",), {"size": "tiny", "lr": 0.1})
    assert base.startswith("model-") and len(base) == len("model-") + 16
    changed = {
        artifact_id("model", "abd", ["dataset-1"], {"lr": 0.1, "size": "tiny"}),
        artifact_id("model", "abc", ["dataset-2"], {"lr": 0.1, "size": "tiny"}),
        artifact_id("model", "abc", ["dataset-1", "shards-1"], {"lr": 0.1, "size": "tiny"}),
        artifact_id("model", "abc", ["dataset-1"], {"lr": 0.2, "size": "tiny"}),
        artifact_id("policy", "abc", ["dataset-1"], {"lr": 0.1, "size": "tiny"}),
    }
    assert base not in changed and len(changed) == 5


@pytest.mark.parametrize("kind", ["Model", "1model", "reward model", "", "model_v2"])
def test_kind_must_be_a_lowercase_slug(kind: str) -> None:
    with pytest.raises(LineageError, match="is not a lowercase slug"):
        artifact_id(kind, "abc", [], {})


def test_parents_must_be_distinct_ids_not_a_string() -> None:
    with pytest.raises(LineageError, match="must be a sequence of artifact ids"):
        artifact_id("model", "abc", "dataset-1", {})
    with pytest.raises(LineageError, match=r"\['dataset-1'\] more than once"):
        artifact_id("model", "abc", ["dataset-1", "dataset-1"], {})


def test_register_is_idempotent_and_new_metrics_become_an_event(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    first = registry.register("shards", "world", "d0", config={"seed": (1, 2)}, metrics={"rows": 10})
    again = registry.register("shards", "world", "d0", config={"seed": [1, 2]}, metrics={"rows": 10})
    assert again == first and first.created_at == T0.isoformat() and first.config == {"seed": [1, 2]}
    assert list((tmp_path / "artifacts").iterdir()) == [tmp_path / "artifacts" / f"{first.id}.json"]
    assert [e.event for e in registry.events()] == ["register"]

    rerun = registry.register("shards", "world", "d0", config={"seed": [1, 2]}, metrics={"rows": 11})
    assert rerun == first
    assert [(e.event, e.payload) for e in registry.events(first.id)] == [
        ("register", {k: v for k, v in first.to_dict().items() if k != "id"}),
        ("metrics", {"metrics": {"rows": 11}}),
    ]
    assert registry.verify().ok


def test_unknown_parent_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    with pytest.raises(LineageError, match="parent 'dataset-0000' is not registered"):
        registry.register("model", "tiny", "d3", parents=["dataset-0000"])
    assert registry.events() == [] and not (tmp_path / "artifacts").exists()


def test_ancestors_are_breadth_first_each_once_through_a_diamond(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    ids = _diamond(registry)
    assert [a.name for a in registry.ancestors(ids["ppo-1"])] == ["tiny", "train", "held-out", "world-seed-0"]
    assert [a.id for a in registry.ancestors(ids["train"])] == [ids["world-seed-0"]]
    assert registry.ancestors(ids["world-seed-0"]) == []


def test_get_accepts_an_unambiguous_prefix_and_names_what_is_wrong(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    ids = _diamond(registry)
    assert registry.get(ids["tiny"][:10]).name == "tiny"
    with pytest.raises(LineageError, match="prefix 'dataset-' is ambiguous"):
        registry.get("dataset-")
    with pytest.raises(LineageError, match="unknown artifact 'model-doesnotexist'"):
        registry.get("model-doesnotexist")
    with pytest.raises(LineageError, match="unknown artifact 'dataset-0000'"):
        registry.record_event("promotion", "dataset-0000", {})
    assert not registry.has(ids["tiny"][:10]) and registry.has(ids["tiny"])
    assert issubclass(LineageError, ValueError)


def test_events_chain_from_genesis_and_verify(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    ids = _diamond(registry)
    verdict = registry.record_event("gate-verdict", ids["ppo-1"][:12], {"win_rate": 0.61, "passed": True})
    registry.record_event("kill-switch", None, {"reason": "drill"})
    entries = registry.events()
    assert [e.seq for e in entries] == list(range(7)) and entries[0].prev_hash == GENESIS_HASH
    assert verdict.artifact_id == ids["ppo-1"] and verdict.time == T0.isoformat()
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    stored = json.loads(_entry_path(tmp_path, 5).read_text())
    assert stored["scheme"] == SCHEME == "hmac-sha256" and stored["key_id"] == AuditKey(KEY, "test").key_id
    body = canonical_json({k: v for k, v in stored.items() if k != "hash"})
    mac = hmac.new(KEY, stored["prev_hash"].encode() + body, hashlib.sha256).hexdigest()
    assert stored["hash"] == mac == verdict.hash
    assert [e.event for e in registry.events(ids["ppo-1"])] == ["register", "gate-verdict"]
    report = registry.verify()
    assert report.ok and report.entries_checked == 7 and report.head_hash == entries[-1].hash
    assert report.problem is None and report.problem_seq is None


def test_empty_root_verifies_and_reports_unknown_ids(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "nothing-yet")
    report = registry.verify()
    assert report.ok and report.entries_checked == 0 and report.head_hash == GENESIS_HASH
    with pytest.raises(LineageError, match="unknown artifact"):
        registry.get("model-1")


def test_bad_event_names_and_payloads_are_refused(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    with pytest.raises(LineageError, match="event name 'Gate Verdict'"):
        registry.record_event("Gate Verdict", None, {})
    with pytest.raises(LineageError, match=r"\$\.score is inf"):
        registry.record_event("gate", None, {"score": float("inf")})


@pytest.fixture
def chain(tmp_path: Path) -> LineageRegistry:
    registry = _registry(tmp_path)
    shards = registry.register("shards", "world", "d0")
    for step in range(5):
        registry.record_event("note", shards.id, {"step": step})
    assert registry.verify().ok
    return registry


def _problem(registry: LineageRegistry) -> tuple[int | None, str]:
    report = registry.verify()
    assert not report.ok
    return report.problem_seq, report.problem or ""


def test_edited_payload_is_detected(tmp_path: Path, chain: LineageRegistry) -> None:
    path = _entry_path(tmp_path, 3)
    path.write_text(path.read_text().replace('"step":2', '"step":9'))
    seq, problem = _problem(chain)
    assert seq == 3 and "hash does not match its content" in problem
    assert chain.verify().entries_checked == 3


def test_deleted_entry_is_detected(tmp_path: Path, chain: LineageRegistry) -> None:
    _entry_path(tmp_path, 2).unlink()
    seq, problem = _problem(chain)
    assert seq == 2 and "entry 2 is missing" in problem


def _forge(path: Path, key: bytes | None, **changes: object) -> dict[str, object]:
    """Rewrite the entry at `path` with `changes` and recompute its hash: HMAC under `key`, or plain sha256."""
    return _write_forged(path, key, {**json.loads(path.read_text()), **changes})


def _write_forged(path: Path, key: bytes | None, entry: dict[str, object]) -> dict[str, object]:
    data = str(entry["prev_hash"]).encode() + canonical_json({k: v for k, v in entry.items() if k != "hash"})
    entry["hash"] = (hmac.new(key, data, hashlib.sha256) if key else hashlib.sha256(data)).hexdigest()
    path.write_bytes(canonical_json(entry))
    return entry


def test_forged_hash_without_the_key_is_detected_at_the_entry(tmp_path: Path, chain: LineageRegistry) -> None:
    _forge(_entry_path(tmp_path, 3), None, payload={"step": 99})
    seq, problem = _problem(chain)
    assert seq == 3 and "does not match its content under the audit key" in problem


def test_forged_hash_with_the_key_is_detected_by_the_next_entry(tmp_path: Path, chain: LineageRegistry) -> None:
    _forge(_entry_path(tmp_path, 3), KEY, payload={"step": 99})
    seq, problem = _problem(chain)
    assert seq == 4 and "prev_hash does not match the hash of entry 3" in problem


def test_swapped_entries_are_detected(tmp_path: Path, chain: LineageRegistry) -> None:
    first, second = _entry_path(tmp_path, 1), _entry_path(tmp_path, 4)
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    seq, problem = _problem(chain)
    assert seq == 1 and "renamed or reordered" in problem


def test_edited_record_is_detected(tmp_path: Path, chain: LineageRegistry) -> None:
    (record_path,) = (tmp_path / "artifacts").iterdir()
    record_path.write_text(record_path.read_text().replace('"name": "world"', '"name": "other"'))
    seq, problem = _problem(chain)
    assert seq == 0 and "differs from what entry 0 registered" in problem


def test_concurrent_writers_leave_one_gapless_chain(tmp_path: Path) -> None:
    tmp_path = tmp_path / "lineage"  # the default key file goes to the folder beside it
    base = LineageRegistry(str(tmp_path)).register("shards", "world", "d0")
    threads, per_thread = 4, 10
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        registry = LineageRegistry(str(tmp_path))
        barrier.wait()
        try:
            for step in range(per_thread):
                if step % 2:
                    registry.record_event("note", base.id, {"worker": worker, "step": step})
                else:
                    registry.register("dataset", f"w{worker}-{step}", f"d-{worker}-{step}", parents=[base.id])
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    registry = LineageRegistry(str(tmp_path))
    report = registry.verify()
    assert report.ok, report.problem
    assert report.entries_checked == 1 + threads * per_thread
    assert [e.seq for e in registry.events()] == list(range(1 + threads * per_thread))
    assert not [p for p in (tmp_path / "events").iterdir() if p.name.startswith(".")]


def test_works_through_a_file_uri(tmp_path: Path) -> None:
    registry = _registry(tmp_path.as_uri())
    ids = _diamond(registry)
    assert registry.get(ids["tiny"]).parents == (ids["train"], ids["held-out"])
    assert registry.verify().ok
    assert _registry(tmp_path).get(ids["ppo-1"][:14]).name == "ppo-1"
    assert (tmp_path / "artifacts" / f"{ids['ppo-1']}.json").is_file()


def test_format_chain_shows_parents_names_ids_and_metrics(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    ids = _diamond(registry)
    text = registry.format_chain(ids["ppo-1"][:12])
    for name, artifact in ids.items():
        assert name in text and artifact in text
    lines = text.splitlines()
    assert lines[0].startswith(f"policy  ppo-1  {ids['ppo-1']}")
    assert "loss=1.235" in text and "accepted_rows=100" in text
    assert sum(ids["world-seed-0"] in line for line in lines) == 2 and "(see above)" in lines[-1]


# -- the audit key -------------------------------------------------------------------------------------------------


def test_default_key_file_is_created_beside_the_root_0600_and_never_logged(tmp_path: Path) -> None:
    root = tmp_path / "run" / "lineage"
    registry = LineageRegistry(str(root))
    assert registry.verify().ok and not (tmp_path / "run" / "secrets").exists()  # verifying creates no key
    registry.register("shards", "world", "d0")
    key_file = tmp_path / "run" / "secrets" / "audit.key"
    assert default_key_file(StorageRoot.from_uri(root)) == str(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) & 0o077 == 0
    key = bytes.fromhex(key_file.read_text().strip())
    (entry,) = registry.events()
    assert entry.key_id == AuditKey(key, "test").key_id and len(entry.key_id) == 16
    assert key.hex() not in _entry_path(root, 0).read_text() and key.hex() not in repr(AuditKey(key, "test"))
    again = LineageRegistry(str(root))  # a later process reads the same key
    again.record_event("note", None, {"n": 1})
    assert again.verify().ok and again.verify().key_id == entry.key_id


def test_key_from_env_or_named_file_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = StorageRoot.from_uri(tmp_path / "lineage")
    monkeypatch.setenv(AUDIT_KEY_ENV, KEY.hex())
    assert load_audit_key(root, create=True).key_id == AuditKey(KEY, "test").key_id
    assert not (tmp_path / "secrets").exists()
    monkeypatch.delenv(AUDIT_KEY_ENV)
    monkeypatch.setenv(AUDIT_KEY_FILE_ENV, str(tmp_path / "absent.key"))
    with pytest.raises(LineageError, match=f"{AUDIT_KEY_FILE_ENV} names .*absent.key.*does not exist"):
        load_audit_key(root, create=True)
    (tmp_path / "short.key").write_text("abcd\n")
    monkeypatch.setenv(AUDIT_KEY_FILE_ENV, str(tmp_path / "short.key"))
    with pytest.raises(LineageError, match="is 2 bytes; expected at least 16"):
        load_audit_key(root, create=True)
    monkeypatch.delenv(AUDIT_KEY_FILE_ENV)
    with pytest.raises(LineageError, match=r"remote lineage root.*RLHF_RAY_AUDIT_KEY"):
        load_audit_key(StorageRoot.from_uri("mock://nowhere/lineage"), create=True)


def test_concurrent_first_writers_agree_on_one_key(tmp_path: Path) -> None:
    root, threads = StorageRoot.from_uri(tmp_path / "lineage"), 6
    barrier, ids = threading.Barrier(threads), []

    def first_write() -> None:
        barrier.wait()
        ids.append(load_audit_key(root, create=True).key_id)

    workers = [threading.Thread(target=first_write) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(ids) == threads and len(set(ids)) == 1
    assert [p.name for p in (tmp_path / "secrets").iterdir()] == ["audit.key"]


def _copied_without_key(tmp_path: Path) -> LineageRegistry:
    """The log under `tmp_path`, copied where no key file is (`tmp_path` itself sits in pytest's shared folder)."""
    root = tmp_path / "copy" / "lineage"
    for folder in ("events", "artifacts"):
        shutil.copytree(tmp_path / folder, root / folder)
    return LineageRegistry(str(root))


def test_verifying_with_the_wrong_key_or_none_says_so(tmp_path: Path, chain: LineageRegistry) -> None:
    key_id = AuditKey(KEY, "test").key_id
    seq, problem = _problem(_registry(tmp_path, OTHER_KEY))
    assert seq == 0 and f"chained with audit key id {key_id!r}" in problem and "the wrong key" in problem
    seq, problem = _problem(_copied_without_key(tmp_path))
    assert seq == 0 and "no audit key" in problem and key_id in problem
    with pytest.raises(LineageError, match=f"cannot append to .*events: entry 5 was chained with audit key id "
                                           f"'{key_id}'"):
        _registry(tmp_path, OTHER_KEY).record_event("note", None, {})


# -- rewrites, anchors -----------------------------------------------------------------------------------------------


def _rechain(root: Path, key: bytes | None, key_id: str | None = None, scheme: str | None = SCHEME) -> None:
    """A wholesale rewrite: entry 2's payload changed and every hash recomputed from genesis, under `key` (plain
    sha256 without one), claiming `key_id` (default: the key's own), with `scheme` (None: no scheme field)."""
    prev_hash = GENESIS_HASH
    for path in sorted((root / "events").glob("*.json")):
        entry = json.loads(path.read_text())
        entry.pop("scheme", None)
        entry.pop("key_id", None)
        if scheme is not None:
            entry.update(scheme=scheme, key_id=key_id or (AuditKey(key, "x").key_id if key else None))
        if entry["seq"] == 2:
            entry["payload"] = {"step": 1000}
        entry["prev_hash"] = prev_hash
        prev_hash = _write_forged(path, key, entry)["hash"]


def _anchor_then(tmp_path: Path, chain: LineageRegistry) -> str:
    anchor = chain.verify().head_hash
    chain.record_event("note", None, {"after": "anchor"})
    report = chain.verify(anchor=anchor)
    assert report.ok and report.anchor_seq == 5 and report.entries_checked == 7
    return anchor


@pytest.mark.parametrize("rewrite", ["other-key", "other-key-claiming-ours", "no-key", "no-key-legacy-format"])
def test_a_wholesale_rewrite_without_the_key_fails(tmp_path: Path, chain: LineageRegistry, rewrite: str) -> None:
    anchor = _anchor_then(tmp_path, chain)
    if rewrite == "other-key":
        _rechain(tmp_path, OTHER_KEY)
        expected = "chained with audit key id"
    elif rewrite == "other-key-claiming-ours":
        _rechain(tmp_path, OTHER_KEY, key_id=AuditKey(KEY, "x").key_id)
        expected = "does not match its content under the audit key"
    else:
        _rechain(tmp_path, None, scheme="sha256" if rewrite == "no-key" else None)
        expected = "chained without a key"
    assert chain.events()[2].payload == {"step": 1000}
    for report in (chain.verify(), chain.verify(anchor=anchor)):
        assert not report.ok and report.problem_seq == 0 and expected in (report.problem or "")


def test_a_rewrite_with_the_key_passes_alone_but_fails_against_the_anchor(tmp_path: Path,
                                                                         chain: LineageRegistry) -> None:
    anchor = _anchor_then(tmp_path, chain)
    _rechain(tmp_path, KEY)
    assert chain.verify().ok  # whoever holds the key can re-chain: only the anchor recorded elsewhere shows it
    report = chain.verify(anchor=anchor)
    assert not report.ok and report.anchor_seq is None
    assert f"anchor {anchor} is not in the chain (7 entries" in (report.problem or "")
    assert "rewritten or truncated at or before the anchored entry" in (report.problem or "")


@pytest.mark.parametrize("regrow", [False, True])
def test_truncation_below_the_anchor_fails(tmp_path: Path, chain: LineageRegistry, regrow: bool) -> None:
    anchor = _anchor_then(tmp_path, chain)
    for seq in (6, 5):
        _entry_path(tmp_path, seq).unlink()
    if regrow:  # truncated, then as many entries appended again: same length, same key
        chain.record_event("note", None, {"step": "replacement"})
        chain.record_event("note", None, {"step": "replacement-2"})
    assert chain.verify().ok
    report = chain.verify(anchor=anchor)
    assert not report.ok and "is not in the chain" in (report.problem or "")
    truncated_above = _registry(tmp_path).verify(anchor=chain.events()[4].hash)
    assert truncated_above.ok and truncated_above.anchor_seq == 4


def test_an_edit_after_the_anchor_keeps_the_anchor_proof(tmp_path: Path, chain: LineageRegistry) -> None:
    anchor = chain.events()[2].hash
    _forge(_entry_path(tmp_path, 4), None, payload={"step": 99})
    report = chain.verify(anchor=anchor)
    assert not report.ok and report.problem_seq == 4 and report.anchor_seq == 2


def test_anchor_must_be_a_head_hash(chain: LineageRegistry) -> None:
    with pytest.raises(LineageError, match="anchor 'model-abc' is not a head hash; expected the 64 hex"):
        chain.verify(anchor="model-abc")
    assert chain.verify(anchor=chain.verify().head_hash.upper()).ok


def test_an_unkeyed_log_reads_but_neither_verifies_nor_takes_entries(tmp_path: Path, chain: LineageRegistry) -> None:
    _rechain(tmp_path, None, scheme=None)  # as written before the chain was keyed
    assert [e.scheme for e in chain.events()] == ["sha256"] * 6 and chain.get(chain.events()[0].artifact_id)
    for registry in (chain, _copied_without_key(tmp_path)):  # with a key, and with none anywhere
        seq, problem = _problem(registry)
        assert seq == 0 and "chained without a key (plain sha256" in problem and "new lineage root" in problem
    with pytest.raises(LineageError, match=r"cannot append to .*entry 5 was chained without a key"):
        chain.record_event("note", None, {})


# -- the command -------------------------------------------------------------------------------------------------


def _last_json(text: str) -> dict[str, object]:
    return json.loads(text.strip().splitlines()[-1])


def test_cli_anchor_then_verify_against_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUDIT_KEY_ENV, KEY.hex())
    root = str(tmp_path)
    assert main(["lineage", "--anchor", "--root", root]) == 1
    assert "nothing to anchor" in capsys.readouterr().err
    registry = _registry(tmp_path)
    shards = registry.register("shards", "world", "d0")
    registry.record_event("note", shards.id, {"step": 0})
    assert main(["lineage", "--anchor", "--root", root]) == 0
    head = _last_json(capsys.readouterr().out)
    assert head["log_ok"] and head["head_seq"] == 1 and head["head_hash"] == registry.events()[-1].hash
    assert head["key_id"] == AuditKey(KEY, "x").key_id and "artifact_id" not in head
    registry.record_event("note", shards.id, {"step": 1})
    assert main(["lineage", "--verify", "--anchor", str(head["head_hash"]), "--root", root]) == 0
    checked = _last_json(capsys.readouterr().out)
    assert checked["anchor_seq"] == 1 and checked["head_seq"] == 2
    assert main(["lineage", shards.id[:10], "--verify", "--anchor", str(head["head_hash"]), "--root", root]) == 0
    assert _last_json(capsys.readouterr().out)["artifact_id"] == shards.id

    _rechain(tmp_path, OTHER_KEY)
    monkeypatch.setenv(AUDIT_KEY_ENV, OTHER_KEY.hex())  # even verified with the rewriter's own key
    assert main(["lineage", "--verify", "--anchor", str(head["head_hash"]), "--root", root]) == 1
    captured = capsys.readouterr()
    assert "the audit log does not verify: anchor" in captured.err and "is not in the chain" in captured.err
    assert _last_json(captured.out)["log_ok"] is False
    assert main(["lineage", "--verify", "--anchor", "not-a-hash", "--root", root]) == 1
    assert "is not a head hash" in capsys.readouterr().err
    assert main(["lineage", "--root", root]) == 1
    assert "name an artifact id" in capsys.readouterr().err
