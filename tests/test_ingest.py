"""The feedback data plane end to end: simulated dirty shards → Ray Data ingest → curated + quarantine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.ingest import IngestConfig, ingest
from jobs.export import ExportConfig, export
from jobs.simulate import SimulateConfig, generate
from rlhf_ray.config import LineageConfig, WandbConfig
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.dataplane.residency import ResidencyViolation
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.sim import PopulationConfig, ShardConfig, WorldConfig

pytestmark = pytest.mark.ray
NOW = datetime(2026, 3, 1, tzinfo=UTC)
START = datetime(2026, 1, 5, tzinfo=UTC)  # the simulated feedback's clock, pinned before NOW
KEY = "0f" * 32


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def feedback(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feedback")
    generate(SimulateConfig(
        output_dir=str(out), seed=3, wandb=WandbConfig(mode="disabled"),
        world=WorldConfig(num_prompts=80, population=PopulationConfig(num_users=40, num_annotators=8),
                          start_time=START),
        shards=ShardConfig(rows=2400, rows_per_shard=400, malformed_fraction=0.05, duplicate_fraction=0.03,
                           pii_fraction=0.1),
    ))
    return out


def _config(feedback: Path, out: Path, lineage: Path | None = None) -> IngestConfig:
    root = str(lineage or feedback / "lineage")
    return IngestConfig(input=str(feedback / "shards"), output_dir=str(out), now=NOW,
                        wandb=WandbConfig(mode="disabled"), lineage=LineageConfig(root=root))


@pytest.fixture(scope="module")
def ingested(feedback: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
        out = tmp_path_factory.mktemp("ingested")
        return out, ingest(_config(feedback, out))


def test_counts_reconcile_exactly_with_ground_truth(feedback: Path, ingested: tuple[Path, dict]) -> None:
    _, summary = ingested
    manifest = json.loads((feedback / "manifest.json").read_text())
    assert summary["input_rows"] == manifest["rows"] == 2400
    assert summary["input_rows"] == summary["accepted_rows"] + summary["quarantined_rows"] + summary["duplicate_rows"]
    assert summary["duplicate_rows"] == manifest["duplicate_rows"]
    assert summary["quarantined_rows"] == manifest["malformed_rows"]
    assert summary["unreadable_files"] == []
    assert sum(summary["pii_masked"].values()) >= manifest["planted_pii"]


def test_every_planted_malformed_row_is_quarantined_with_its_reason(feedback: Path, ingested) -> None:
    _, summary = ingested
    quarantine = pq.read_table(summary["quarantine_dir"]).to_pylist()
    positions = {(q["source_file"].split("/shards/", 1)[1], q["row_number"]): q for q in quarantine}
    truth = _jsonl(feedback / "ground_truth" / "malformed.jsonl")
    assert len(positions) == len(truth)
    expected_code = {"broken_json": "unparseable_json"}
    for planted in truth:
        relative = planted["file"].removeprefix("shards/")
        row = positions[(relative, planted["row"])]
        assert row["reason"].split(":")[0] == expected_code.get(planted["kind"], planted["kind"])
        assert row["detail"] and row["record"]


def test_no_planted_pii_or_raw_id_anywhere_in_the_output(feedback: Path, ingested) -> None:
    out, _ = ingested
    planted = [p["value"] for p in _jsonl(feedback / "ground_truth" / "planted_pii.jsonl")]
    assert planted
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    blobs += [p.read_bytes() for p in (feedback / "lineage").rglob("*") if p.is_file()]
    assert blobs
    for blob in blobs:
        text = _decoded_parquet_or_text(blob)
        for value in planted:
            assert value not in text
        assert "annotator-0" not in text and "user-0" not in text


def _decoded_parquet_or_text(blob: bytes) -> str:
    if blob[:4] == b"PAR1":
        import io

        return json.dumps(pq.read_table(io.BytesIO(blob)).to_pylist(), default=str)
    return blob.decode("utf-8", errors="replace")


def test_curated_partitions_follow_the_typed_contract(ingested) -> None:
    _, summary = ingested
    total = 0
    for signal_type in SignalType:
        files = sorted((Path(summary["curated_dir"]) / signal_type.value).glob("*.parquet"))
        table = pa.concat_tables(pq.read_table(f) for f in files)
        expected = [*SIGNAL_SCHEMAS[signal_type].names, "content_hash"]
        assert [n for n in table.schema.names if n in expected] == expected
        assert table.column("actor_id")[0].as_py().startswith(("ann_", "usr_", "id_"))
        total += table.num_rows
    assert total == summary["accepted_rows"]


def test_quality_report_covers_every_signal_type(ingested) -> None:
    _, summary = ingested
    report = json.loads(Path(summary["report"]).read_text())["quality"]
    assert set(report["signal_types"]) == {t.value for t in SignalType}
    assert report["top_quarantine_reasons"][0]["rows"] > 0
    pairwise = report["signal_types"]["pairwise"]
    assert set(pairwise["choice_balance"]) <= {"a", "b", "tie"}
    assert pairwise["signal_latency_seconds"]["p50"] > 0


def test_reingest_is_idempotent(feedback: Path, ingested, monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = ingested
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    before = sorted(p for p in out.rglob("*") if p.is_file())
    again = ingest(_config(feedback, out))
    assert again["dataset_version"] == first["dataset_version"] and again["reused_version"]
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before
    lineage = LineageRegistry(str(feedback / "lineage"))
    dataset = lineage.get(first["dataset_id"])
    assert [a.kind for a in lineage.ancestors(dataset.id)] == ["shards"]


def test_broken_files_are_quarantined_not_fatal(tmp_path: Path, feedback: Path, monkeypatch) -> None:
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    shards = tmp_path / "shards"
    shards.mkdir()
    good = next((feedback / "shards" / "task_success").glob("*"))
    (shards / good.name).write_bytes(good.read_bytes())
    parquet = next((feedback / "shards").rglob("*.parquet")).read_bytes()
    (shards / "truncated.parquet").write_bytes(parquet[: len(parquet) // 2])
    (shards / "garbage.jsonl").write_text('{"signal_id": "x"\nnot json at all\n\n[1, 2]\n')
    summary = ingest(_config(shards.parent, tmp_path / "out", tmp_path / "lin"))
    assert summary["unreadable_files"] == [str(shards / "truncated.parquet")]
    assert summary["input_rows"] == summary["accepted_rows"] + summary["quarantined_rows"] + summary["duplicate_rows"]
    reasons = {r["reason"] for r in pq.read_table(summary["quarantine_dir"]).to_pylist()}
    assert {"unparseable_json", "unreadable_file", "wrong_type"} <= reasons


def test_missing_key_is_a_clear_error(tmp_path: Path, feedback: Path, monkeypatch) -> None:
    monkeypatch.delenv("RLHF_RAY_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="RLHF_RAY_PSEUDONYM_KEY"):
        ingest(_config(feedback, tmp_path / "out"))


def test_export_refuses_rows_the_residency_policy_keeps_out(feedback: Path, ingested, tmp_path: Path) -> None:
    out, first = ingested
    common = dict(output_dir=str(out), version=first["dataset_version"], destination=str(tmp_path / "us-bucket"),
                  destination_region="us", lineage=LineageConfig(root=str(feedback / "lineage")),
                  wandb=WandbConfig(mode="disabled"))
    with pytest.raises(ResidencyViolation, match="region 'apac'"):
        export(ExportConfig(**common))
    assert not (tmp_path / "us-bucket").exists()
    result = export(ExportConfig(**common, drop_disallowed=True))
    assert result["refused_rows"] > 0 and result["rows"] > 0
    written = [r for f in (tmp_path / "us-bucket").rglob("*.parquet") for r in pq.read_table(f)["region"].to_pylist()]
    assert set(written) <= {"us"}


def test_input_and_output_accept_filesystem_uris(feedback: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    config = IngestConfig(input=f"file://{feedback}/shards", output_dir=f"file://{tmp_path}/out", now=NOW,
                          wandb=WandbConfig(mode="disabled"), lineage=LineageConfig(root=f"file://{tmp_path}/lin"))
    summary = ingest(config)
    assert summary["input_rows"] == 2400
    assert (tmp_path / "out" / "versions" / f"{summary['dataset_version']}.json").exists()


def test_a_fresh_simulation_reads_a_signal_latency_of_its_span_not_of_a_calendar(ray_cluster, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Unpinned, `simulate` starts the world's clock span_days before it runs: simulate → ingest now reads an event →
    ingest latency within the simulated day plus the pipeline's own seconds (it read ~3e7 s with a fixed 2026-01-05
    start), and no event lies in the future of the ingest."""
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    began = datetime.now(UTC)
    clean = ShardConfig(rows=400, rows_per_shard=400, judge_rows=0, malformed_fraction=0.0, duplicate_fraction=0.0)
    simulated = generate(SimulateConfig(
        output_dir=str(tmp_path / "feedback"), seed=3, wandb=WandbConfig(mode="disabled"), shards=clean,
        world=WorldConfig(num_prompts=60, span_days=1, population=PopulationConfig(num_users=20, num_annotators=6))))
    start = datetime.fromisoformat(simulated["world_start_time"])
    assert began - timedelta(days=1, seconds=1) <= start <= began - timedelta(days=1) + timedelta(minutes=5)
    manifest = json.loads((tmp_path / "feedback" / "manifest.json").read_text())
    assert datetime.fromisoformat(manifest["world"]["start_time"].replace("Z", "+00:00")) == start  # to pin a rerun
    summary = ingest(IngestConfig(input=str(tmp_path / "feedback" / "shards"), output_dir=str(tmp_path / "out"),
                                  wandb=WandbConfig(mode="disabled"), lineage=LineageConfig(root=str(tmp_path))))
    elapsed = (datetime.now(UTC) - began).total_seconds()
    assert summary["quarantined_rows"] == 0 and summary["accepted_rows"] == 400
    p50, worst = summary["signal_latency_seconds/p50"], summary["signal_latency_seconds/max"]
    assert 0 < p50 < worst <= 86_400 + elapsed, (p50, worst)
