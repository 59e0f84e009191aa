"""Lineage registry: content-hashed ids, idempotent records, ancestry, and the tamper-evident event log."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rlhf_ray.lineage import (
    GENESIS_HASH,
    LineageError,
    LineageRegistry,
    artifact_id,
    canonical_json,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _registry(root: Path | str) -> LineageRegistry:
    return LineageRegistry(str(root), clock=lambda: T0)


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
    body = canonical_json({k: v for k, v in stored.items() if k != "hash"})
    assert stored["hash"] == hashlib.sha256(stored["prev_hash"].encode() + body).hexdigest() == verdict.hash
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


def test_forged_hash_is_detected_by_the_next_entry(tmp_path: Path, chain: LineageRegistry) -> None:
    path = _entry_path(tmp_path, 3)
    entry = json.loads(path.read_text())
    entry["payload"] = {"step": 99}
    body = canonical_json({k: v for k, v in entry.items() if k != "hash"})
    entry["hash"] = hashlib.sha256(entry["prev_hash"].encode() + body).hexdigest()
    path.write_bytes(canonical_json(entry))
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
