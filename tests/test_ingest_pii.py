"""No PII in any field, end to end: shards with PII planted in every field of every signal type (identifiers
included) go through the ingest job on Ray; no planted value survives in any file it writes (curated,
quarantine, manifests, lineage) or in its log."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import planted_pii
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.ingest import IngestConfig, run
from rlhf_ray.config import LineageConfig, WandbConfig
from rlhf_ray.contracts import SignalType
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.shards import build_shard_rows, encode_jsonl, relaxed_schema

pytestmark = pytest.mark.ray
NOW = datetime(2026, 3, 1, tzinfo=UTC)
KEY = "0f" * 32
CLEAN = ShardConfig(rows=100, malformed_fraction=0, duplicate_fraction=0, pii_fraction=0)


def _write_shards(folder: Path) -> dict[str, int]:
    """One JSONL shard (every variant, plus a cut line) and one Parquet shard (the typed variants) per signal
    type; returns how many rows should be accepted and quarantined."""
    world = World(WorldConfig(num_prompts=40), seed=5)
    counts = {"accepted": 0, "quarantined": 0}
    for signal_type in SignalType:
        rows, _ = build_shard_rows(world, CLEAN, ShardSpec(signal_type.value, 0, 2, "jsonl"))
        (folder / signal_type.value).mkdir(parents=True)
        every = planted_pii.variants(rows[0])
        lines = encode_jsonl([row for _, row, _ in every]).decode().splitlines()
        cut = lines[0][: len(lines[0]) * 2 // 3]  # the accepted variant, cut inside its prompt
        (folder / signal_type.value / "part-0.jsonl").write_text("\n".join([*lines, cut]) + "\n")
        typed = [(name, row | {"signal_id": f"{rows[1]['signal_id']}-{i}"} if name == "text" else row, reason)
                 for i, (name, row, reason) in enumerate(planted_pii.variants(rows[1], typed_only=True))]
        table = pa.Table.from_pylist([row for _, row, _ in typed], schema=relaxed_schema(signal_type.value))
        pq.write_table(table, folder / signal_type.value / "part-1.parquet")
        for _, _, reason in every + typed:
            counts["accepted" if reason is None else "quarantined"] += 1
        counts["quarantined"] += 1  # the cut line
    return counts


def _readable(path: Path) -> str:
    blob = path.read_bytes()
    if blob[:4] == b"PAR1":
        return json.dumps(pq.read_table(io.BytesIO(blob)).to_pylist(), default=str, ensure_ascii=False)
    return blob.decode("utf-8", errors="replace")


def test_pii_in_every_field_survives_nowhere(ray_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    expected = _write_shards(tmp_path / "shards")
    out, lineage = tmp_path / "out", tmp_path / "lineage"
    summary = run(IngestConfig(input=str(tmp_path / "shards"), output_dir=str(out), now=NOW,
                               wandb=WandbConfig(mode="disabled"), lineage=LineageConfig(root=str(lineage))))
    log = capfd.readouterr()

    assert (summary["accepted_rows"], summary["quarantined_rows"]) == (expected["accepted"], expected["quarantined"])
    assert summary["pii_masked"]["person"] > 0 and summary["pii_masked"]["address"] > 0
    quarantine = pq.read_table(summary["quarantine_dir"]).to_pylist()
    reasons = {row["reason"].split(":")[0] for row in quarantine}
    assert {"bad_identifier", "pii_in_identifier", "unknown_enum", "wrong_type", "unparseable_json",
            "unknown_field", "bad_timestamp", "unknown_region"} <= reasons
    assert {row["reason"] for row in quarantine} >= {f"bad_identifier:{name}" for name in
                                                     ("signal_id", "item_id", "prompt_id", "policy_version")}

    files = [p for folder in (out, lineage) for p in folder.rglob("*") if p.is_file()]
    assert any("curated" in p.parts for p in files) and any("quarantine" in p.parts for p in files)
    for path in files:
        text = _readable(path)
        assert planted_pii.leaks(text) == [], path
        assert planted_pii.RAW_USER not in text, path
    assert log.out.strip() and planted_pii.leaks(log.out + log.err) == []
