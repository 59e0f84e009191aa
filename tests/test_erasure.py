"""Forward lineage, erasure and retention as deletion, on a run of the loop's data stages.

The world's texts are templated and shared by many users, so two planted subjects carry unique strings: subject A
(recent rows) is erased, subject B (rows from 2024) expires under retention. Each lands in raw shards (valid,
duplicate, malformed and unparseable rows), a canary's captured feedback (already pseudonymized) and a workbench
shard; the loop's ingest and curate carry them into a dataset version, its quarantine, pairs and the forward index;
stand-in models are registered downstream. After `erase` (killed once mid-way, then re-run) and `retention`, no file
under the run directory, logs included, holds the subject's pseudonym, raw id or unique strings, and the counts
reported per store are the rows planted.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import string
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from rlhf_ray.dataplane.shard_sets import write_shard_manifest
from rlhf_ray.governance import Pseudonymizer
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.forward import ForwardIndex
from rlhf_ray.storage import StorageRoot

KEY = "5a" * 32
TINY = ["shards.rows=300", "shards.rows_per_shard=150", "world.num_prompts=40", "world.population.num_users=20",
        "world.population.num_annotators=5", "wandb.mode=disabled"]
RETENTION_NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(14))


def _last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])


class Subject:
    """A planted person: raw id, pseudonyms, unique strings, and how many rows went where."""

    def __init__(self, name: str, event_time: str, rng: random.Random) -> None:
        self.raw_id = f"user-{name}-{_word(rng)}"
        pseudonyms = Pseudonymizer(bytes.fromhex(KEY))
        self.pseudonym = pseudonyms.pseudonym(self.raw_id)
        self.stored = pseudonyms.pseudonym(self.pseudonym)  # ingest's name for rows that came pseudonymized
        self.event_time = event_time
        self.strings: list[str] = []
        self.rng = rng

    def unique(self) -> str:
        self.strings.append(_word(self.rng))
        return self.strings[-1]

    def secrets(self) -> list[str]:
        return [self.raw_id, self.pseudonym, self.stored, *self.strings]

    def row(self, template: dict[str, Any], actor: str, **fields: Any) -> dict[str, Any]:
        return {**template, "signal_id": str(uuid.uuid4()), "actor_id": actor, "source": "user", "session_id": None,
                "session_position": None, "item_id": None, "guideline_version": None, "confidence": None,
                "event_time": self.event_time, "prompt_id": f"p-{self.unique()}", "prompt": f"how {self.unique()} ?",
                "response": f"try {self.unique()} .", **fields}


def _parsed(line: str) -> Any:
    """A JSONL shard line, or None for one of the simulator's deliberately truncated rows."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _template(shards: Path, signal_type: str) -> dict[str, Any]:
    path = sorted((shards / signal_type).glob("*"))[0]
    rows = (pq.read_table(path).to_pylist() if path.suffix == ".parquet"
            else [_parsed(line) for line in path.read_text().splitlines()])
    row = next(r for r in rows if isinstance(r, dict) and r.get("actor_id"))
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _jsonl(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, default=str)) + "\n" for r in rows))


def _plant(run: Path, subject: Subject, tag: str, unparseable: bool) -> dict[str, int]:
    """Raw shard rows (4 valid: 3 corrections + 1 implicit; 1 redelivery; 1 invalid; [1 unparseable line]), 2 canary
    rows (thumbs, pseudonymized) and 1 workbench row. Returns what each store should lose."""
    shards = run / "feedback" / "shards"
    correction, implicit, rating = (_template(shards, t) for t in ("correction", "implicit", "rating"))
    corrections = [subject.row(correction, subject.raw_id, edited_response=f"do {subject.unique()} .",
                               rationale=f"because {subject.unique()}") for _ in range(3)]
    rows = [*corrections, subject.row(implicit, subject.raw_id), dict(corrections[0]),
            subject.row(correction, subject.raw_id, edited_response=subject.unique(), region="mars")]
    if unparseable:  # no event time to judge it by: only an erasure takes it
        rows.append(f'{{"actor_id": "{subject.raw_id}", "prompt": "{subject.unique()}", broken')
    _jsonl(shards / f"planted-{tag}" / "part-00000.jsonl", rows)
    thumbs = {**rating, "scale": "thumbs", "scores": [{"criterion": "overall", "score": 1.0}]}
    canary = [subject.row(thumbs, subject.pseudonym) for _ in range(2)]
    folder = shards / f"captured-{tag}"
    _jsonl(folder / "feedback-0.jsonl", canary)
    registry = LineageRegistry(run / "lineage")
    deployment = registry.register("deployment", f"canary-{tag}", tag).id
    feedback = registry.register("feedback", f"captured-{tag}", tag, parents=(deployment,), uri=str(folder))
    write_shard_manifest(StorageRoot.from_uri(folder), feedback.id, str(run / "lineage"),
                         [str(folder / "feedback-0.jsonl")], deployment_id=deployment)
    _jsonl(run / "workbench" / "shards" / f"wb-00000000{len(tag)}-00000000{len(tag)}.jsonl",
           [subject.row(correction, subject.pseudonym, edited_response=subject.unique())])
    return {"raw_shards": 6 + unparseable, "canary_shards": 2, "workbench_shards": 1, "curated": 6,
            "quarantine": 1 + unparseable}


def _search(run: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in any file under `run`, Parquet decoded to its rows."""
    found = []
    for path in run.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        if path.suffix == ".parquet" or data[:4] == b"PAR1":
            text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        found += [(str(path.relative_to(run)), n) for n in needles if n in text]
    return found


@pytest.fixture(scope="module")
def planted(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("erasure") / "run"
    rng = random.Random(11)
    subjects = {"erase": Subject("erase", "2026-01-20T10:00:00Z", rng),
                "expire": Subject("expire", "2024-03-01T10:00:00Z", rng)}
    logs = run / "logs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
        args = ["loop", "--config", "configs/quickstart.yaml", f"output_dir={run}", *TINY, "iterations=1"]
        assert main([*args, "stages=[simulate]"]) == 0
        expected = {name: _plant(run, subject, name, unparseable=name == "erase")
                    for name, subject in subjects.items()}
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "stages=[simulate,ingest,curate]"])
    logs.mkdir(exist_ok=True)  # the loop writes its own log there too (quiet console)
    (logs / "loop.log").write_text(out.getvalue() + err.getvalue())  # the loop's output is part of the run
    assert code == 0, err.getvalue()[-3000:]
    summary = _last_json(out.getvalue())
    registry = LineageRegistry(run / "lineage")
    reward_model = registry.register("reward-model", "rm", "rm", parents=(summary["pairs_id"],)).id
    policy = registry.register("policy", "ppo", "ppo", parents=(reward_model,)).id
    registry.record_event("gate", policy, {"verdict": "promote", "win_rate": 0.6})
    deployment = registry.register("deployment", "serve", "serve", parents=(policy,)).id
    return {"run": run, "subjects": subjects, "expected": expected, "summary": summary,
            "models": [reward_model, policy, deployment]}


def _cli(args: list[str], capsys: pytest.CaptureFixture[str], log: Path | None = None) -> dict[str, Any]:
    code = main(args)
    captured = capsys.readouterr()
    if log is not None:
        with log.open("a") as stream:
            stream.write(captured.out + captured.err)
    assert code == 0, captured.err[-3000:]
    return _last_json(captured.out)


def _pairs_with(run: Path, pairs_dir: str, signal_ids: set[str]) -> int:
    table = pq.read_table(pairs_dir, columns=["source_signal_ids"])
    return sum(bool(signal_ids & set(ids)) for ids in table.column("source_signal_ids").to_pylist())


@pytest.mark.ray
def test_forward_lineage_then_erasure_killed_and_rerun_leaves_nothing(planted, capsys, monkeypatch) -> None:
    run, subject, expected = planted["run"], planted["subjects"]["erase"], planted["expected"]["erase"]
    root = str(run / "lineage")
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)

    forward = _cli(["lineage", "--subject", subject.pseudonym, "--root", root], capsys)["forward"]
    by_id = {a["artifact_id"]: a for a in forward["artifacts"]}
    dataset = by_id[planted["summary"]["dataset_id"]]
    assert (dataset["curated_rows"], dataset["quarantine_rows"]) == (expected["curated"], expected["quarantine"])
    assert set(planted["models"]) <= set(by_id)  # models trained on the pairs, the policy, its deployment
    assert any(e["event"] == "gate" for e in by_id[planted["models"][1]]["events"])
    assert _cli(["lineage", "--user", subject.raw_id, "--root", root], capsys)["forward"]["artifacts"] == (
        forward["artifacts"])
    signals = {s for table in ForwardIndex(root).lookup([subject.pseudonym, subject.stored]).values()
               for s in table.column("signal_id").to_pylist()}
    pairs = _pairs_with(run, planted["summary"]["pairs_dir"], signals)
    assert pairs >= 3 and by_id[planted["summary"]["pairs_id"]]["pairs"] == pairs

    # SIGKILL an erase once its plan is journaled (at a random point of carrying it out), then run it again.
    command = [sys.executable, "-m", "jobs.cli", "erase", "--subject", subject.pseudonym, "--root", root,
               "--reason", "ticket 4711 from jane.roe@example.com", f"workbench_dirs=[{run / 'workbench'}]",
               "wandb.mode=disabled"]
    killed_log = run / "logs" / "erase-killed.log"
    with killed_log.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        journals = run / "lineage" / ".erasure"
        deadline = time.monotonic() + 120
        while process.poll() is None and not any(journals.glob("erasure-*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random().uniform(0, 0.15))
        process.send_signal(signal.SIGKILL)
        process.wait()
    _cli(command[3:], capsys, run / "logs" / "erase.log")
    # However far the killed run got, the chain holds one erasure event with the counts of the whole request.
    erasures = [e for e in LineageRegistry(root).events() if e.event == "erasure"]
    assert len(erasures) == 1
    removed = erasures[0].payload["removed"]
    for store, rows in expected.items():
        assert removed[store] == rows, (store, removed)
    assert removed["pairs"] == pairs and removed["forward_index"] > expected["curated"]
    assert not any(journals.glob("*.json"))
    assert _search(run, [*subject.secrets(), "jane.roe@example.com"]) == []

    # Lineage stays readable: the model still explains what it was trained on, and carries the mark.
    model = _cli(["lineage", planted["models"][0], "--root", root, "--verify"], capsys)
    assert model["log_ok"] and planted["summary"]["pairs_id"] in model["ancestors"]
    assert {e["artifact_id"] for e in model["erased_ancestors"]} >= {planted["summary"]["pairs_id"],
                                                                     planted["summary"]["dataset_id"]}
    assert any(e["event"] == "trained_on_erased_data" for e in model["events"])
    assert set(planted["models"]) <= set(erasures[0].payload["marked"])
    assert erasures[0].payload["reason"].startswith("ticket 4711 from ") and "jane" not in erasures[0].payload["reason"]
    assert _cli(["lineage", "--subject", subject.pseudonym, "--root", root], capsys)["forward"]["artifacts"] == []
    again = _cli(command[3:], capsys, run / "logs" / "erase.log")
    assert again["nothing_to_erase"] and not any(again["removed"].values())
    assert _search(run, subject.secrets()) == []


@pytest.mark.ray
def test_retention_deletes_expired_rows_from_every_store(planted, capsys) -> None:
    run, subject, expected = planted["run"], planted["subjects"]["expire"], planted["expected"]["expire"]
    dataset_root = run / "dataset"
    signals = {s for table in ForwardIndex(str(run / "lineage")).lookup([subject.pseudonym, subject.stored]).values()
               for s in table.column("signal_id").to_pylist()}
    pairs_dir = json.loads((run / "curated" / "agreement.json").read_text())["pairs_version"]
    pairs = _pairs_with(run, str(run / "curated" / "pairs" / pairs_dir), signals)
    result = _cli(["retention", "--data", str(dataset_root), f"now={RETENTION_NOW.isoformat()}", "days={}",
                   "default_days=365", f"workbench_dirs=[{run / 'workbench'}]", "wandb.mode=disabled"], capsys,
                  run / "logs" / "retention.log")
    removed = result["removed"]
    for store, rows in expected.items():
        assert removed[store] == rows, (store, removed)
    assert removed["pairs"] == pairs >= 3
    assert result["dropped_rows"] == expected["curated"]
    assert {k: v for k, v in result["dropped"].items() if v} == {"correction": 3, "implicit": 1, "rating": 2}
    assert set(planted["models"]) <= set(result["marked"])  # trained on the rows, whichever version now holds them
    assert _search(run, subject.strings) == []
    registry = LineageRegistry(run / "lineage")
    assert any(e.event == "retention" for e in registry.events(result["dataset_id"]))
    assert (dataset_root / "LATEST").read_text() == result["dataset_version"]
    again = _cli(["retention", "--data", str(dataset_root), f"now={RETENTION_NOW.isoformat()}", "days={}",
                  "default_days=365", "wandb.mode=disabled"], capsys)
    assert not any(again["removed"].values())


# ---- crash at every write: a small run built by hand (no Ray), killed at each write in turn, then re-run -------

class _Crash(BaseException):
    """Stands in for a SIGKILL: not an Exception, so nothing on the way catches it."""


def _small_run(run: Path) -> tuple[Subject, dict[str, int]]:
    """Raw correction shards, one committed dataset version, one pair set, its index entries and a model."""
    from rlhf_ray.annotation.pairs import PairSettings, correction_pairs, merge_pairs
    from rlhf_ray.dataplane.curated import curated_schema
    from rlhf_ray.dataplane.records import content_hash
    from rlhf_ray.dataplane.versions import commit_version
    from rlhf_ray.lineage.forward import dataset_entries, pair_entries
    from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
    from rlhf_ray.sim.shards import build_shard_rows

    pseudonyms = Pseudonymizer(bytes.fromhex(KEY))
    clean = ShardConfig(rows=40, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    built, _ = build_shard_rows(World(WorldConfig(num_prompts=20), 0), clean, ShardSpec("correction", 0, 40, "jsonl"))
    rows = [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in built]
    subject = Subject("crash", "2026-01-20T10:00:00Z", random.Random(5))
    rows += [subject.row(rows[0], subject.raw_id, edited_response=f"do {subject.unique()} .") for _ in range(3)]
    _jsonl(run / "feedback" / "shards" / "part-0.jsonl", rows)
    registry = LineageRegistry(run / "lineage")
    shards = registry.register("shards", "hand", "hand", uri=str(run / "feedback")).id
    curated = []
    for row in rows:
        row = {**row, "actor_id": pseudonyms.pseudonym(row["actor_id"]), "session_id": None}
        curated.append({**row, "event_time": datetime.fromisoformat(str(row["event_time"]).replace("Z", "+00:00")),
                        "content_hash": content_hash(row)})
    table = pa.Table.from_pylist(curated, schema=curated_schema("correction"))
    data = StorageRoot.from_uri(run / "dataset")
    data.write_parquet_atomic(table, ".staging", "curated", "correction", "part-00000.parquet")
    dataset = registry.register("dataset", "ds-hand", "hand", parents=(shards,),
                                uri=data.join("curated", "ds-hand")).id
    commit_version(data, data.join(".staging"), "ds-hand", {"version": "ds-hand", "dataset_id": dataset,
                                                             "accepted_rows": table.num_rows, "quality": {}})
    index = ForwardIndex(str(run / "lineage"))
    index.write(dataset, dataset_entries({"correction": table}, None))
    pairs = merge_pairs(correction_pairs(table, PairSettings()))
    out = StorageRoot.from_uri(run / "curated")
    out.write_parquet_atomic(pairs, "pairs", "pairs-hand", "part-0.parquet")
    pairs_id = registry.register("pairs", "pairs-hand", "hand", parents=(dataset,),
                                 uri=out.join("pairs", "pairs-hand")).id
    index.write(pairs_id, pair_entries(pairs, {"correction": table}))
    registry.register("reward-model", "rm", "rm", parents=(pairs_id,))
    return subject, {"raw_shards": 3, "curated": 3, "pairs": 3}


def test_erasure_killed_at_each_write_finishes_on_rerun(tmp_path: Path, monkeypatch) -> None:
    from jobs.erase import EraseConfig, erase
    from rlhf_ray.config import LineageConfig, WandbConfig

    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("RLHF_RAY_AUDIT_KEY", "ab" * 32)
    original = StorageRoot.write_bytes_atomic
    crash_at = 0
    while True:
        crash_at += 1
        run = tmp_path / f"run-{crash_at}"
        subject, expected = _small_run(run)
        config = EraseConfig(subject=subject.pseudonym, reason="request", lineage=LineageConfig(root=str(
            run / "lineage")), wandb=WandbConfig(mode="disabled"))
        writes = 0

        def crashing(self: StorageRoot, data: bytes, *parts: str, at: int = crash_at) -> str:
            nonlocal writes
            writes += 1
            if writes == at:  # half the bytes at the temporary name, then the process dies
                folder, name = self.join(*parts).rsplit("/", 1)
                self.fs.create_dir(folder, recursive=True)
                with self.fs.open_output_stream(f"{folder}/.tmp-crash-{name}") as stream:
                    stream.write(data[: len(data) // 2])
                raise _Crash
            return original(self, data, *parts)

        monkeypatch.setattr(StorageRoot, "write_bytes_atomic", crashing)
        try:
            erase(config)
            crashed = False
        except _Crash:
            crashed = True
        monkeypatch.setattr(StorageRoot, "write_bytes_atomic", original)
        if crashed:
            erase(config)
        erasures = [e for e in LineageRegistry(run / "lineage").events() if e.event == "erasure"]
        assert len(erasures) == 1, crash_at
        removed = erasures[0].payload["removed"]
        assert {k: removed[k] for k in expected} == expected, crash_at
        assert _search(run, subject.secrets()) == [], crash_at
        assert not [p for p in run.rglob("*") if p.name.startswith((".tmp-", ".staging"))], crash_at
        if not crashed:
            break
    print(f"erasure killed at each of its {crash_at - 1} writes")
    assert crash_at > 10  # the erasure wrote that many files, each a point it was killed at
