"""Feedback shards: contract format, planted dirt recorded exactly, deterministic bytes."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.simulate import pinned_world
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig, plan_shards
from rlhf_ray.sim.corruption import CORRUPTIONS
from rlhf_ray.sim.pii import luhn_check_digit
from rlhf_ray.sim.shards import build_shard_rows, encode_jsonl, encode_parquet
from rlhf_ray.sim.signals import DEFAULT_START_TIME

WORLD = World(WorldConfig(num_prompts=150), seed=11)
CLEAN = ShardConfig(rows=700, rows_per_shard=400, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
DIRTY = ShardConfig(rows=700, rows_per_shard=400, malformed_fraction=0.1, duplicate_fraction=0.05, pii_fraction=0.2)


def test_plan_covers_every_row_and_rotates_formats() -> None:
    plan = plan_shards(ShardConfig(rows=10_001, rows_per_shard=1000))
    assert sum(s.rows for s in plan) == 10_001
    assert {s.signal_type for s in plan} == {t.value for t in SignalType}
    assert {s.fmt for s in plan} == {"parquet", "jsonl"}
    assert [s.index for s in plan] == list(range(len(plan)))
    assert all(s.rows <= 1000 for s in plan)


@pytest.mark.parametrize("signal_type", [t.value for t in SignalType])
def test_clean_rows_conform_to_the_strict_contract(signal_type: str) -> None:
    rows, result = build_shard_rows(WORLD, CLEAN, ShardSpec(signal_type, 0, 60, "parquet"))
    assert len(rows) == 60 and not result.malformed and not result.duplicates
    table = pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMAS[SignalType(signal_type)])
    table.validate(full=True)
    for field in table.schema:
        if not field.nullable:
            assert table.column(field.name).null_count == 0, field.name
    assert len(set(table.column("signal_id").to_pylist())) == 60


def test_annotator_items_get_several_labels_in_sessions() -> None:
    rows, _ = build_shard_rows(WORLD, CLEAN, ShardSpec("pairwise", 0, 300, "parquet"))
    labels_per_item: dict[str, set[str]] = {}
    for row in rows:
        labels_per_item.setdefault(row["item_id"], set()).add(row["actor_id"])
    assert sum(len(v) == WORLD.config.labels_per_item for v in labels_per_item.values()) >= len(labels_per_item) - 1
    positions = [r["session_position"] for r in rows]
    assert min(positions) == 0 and max(positions) > 5
    assert {r["guideline_version"] for r in rows} <= set(WORLD.config.guideline_versions)


def test_feedback_never_uses_heldout_prompts() -> None:
    for signal_type in ("pairwise", "implicit", "rating"):
        rows, _ = build_shard_rows(WORLD, CLEAN, ShardSpec(signal_type, 0, 200, "jsonl"))
        assert all(WORLD.prompt(r["prompt_id"]).split == "train" for r in rows)


def test_dirt_is_planted_at_the_configured_rates_and_recorded() -> None:
    rows, result = build_shard_rows(WORLD, DIRTY, ShardSpec("ranking", 3, 400, "jsonl"))
    assert len(rows) == 400
    assert len(result.duplicates) == 20
    assert 20 <= len(result.malformed) <= 70
    assert 50 <= len(result.planted_pii) <= 110
    for dup in result.duplicates:
        assert rows[dup["row"]] == rows[dup["row"] - 1]
    kinds = {m["kind"] for m in result.malformed}
    assert len(kinds) >= 5 and kinds <= set(CORRUPTIONS)


def test_planted_pii_is_in_the_written_text_and_cards_pass_luhn() -> None:
    rows, result = build_shard_rows(WORLD, DIRTY, ShardSpec("correction", 5, 300, "jsonl"))
    lines = encode_jsonl(rows).decode().splitlines()
    truncated = {m["row"] for m in result.malformed if m["kind"] == "broken_json"}
    assert result.planted_pii
    for planted in result.planted_pii:
        if planted["row"] not in truncated:
            assert planted["value"] in lines[planted["row"]]
        if planted["kind"] == "card":
            digits = re.sub(r"\D", "", planted["value"])
            assert len(digits) == 16 and luhn_check_digit(digits[:-1]) == digits[-1]


def test_jsonl_malformed_lines_match_ground_truth() -> None:
    rows, result = build_shard_rows(WORLD, DIRTY, ShardSpec("implicit", 2, 400, "jsonl"))
    lines = encode_jsonl(rows).decode().splitlines()
    assert len(lines) == 400
    broken = {m["row"] for m in result.malformed if m["kind"] == "broken_json"}
    for number, line in enumerate(lines):
        if number in broken:
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
        else:
            json.loads(line)


def test_parquet_shard_reads_back_with_contract_columns() -> None:
    rows, result = build_shard_rows(WORLD, DIRTY, ShardSpec("rating", 1, 300, "parquet"))
    table = pq.read_table(io.BytesIO(encode_parquet(rows, "rating")))
    assert table.num_rows == 300
    assert table.schema.names == SIGNAL_SCHEMAS[SignalType.RATING].names
    assert table.schema.metadata[b"schema_version"] == b"1.0"
    assert all(CORRUPTIONS[m["kind"]][1] >= {"parquet"} for m in result.malformed)


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    spec = ShardSpec("pairwise", 4, 200, "parquet")
    first = encode_parquet(build_shard_rows(WORLD, DIRTY, spec)[0], "pairwise")
    second = encode_parquet(build_shard_rows(World(WorldConfig(num_prompts=150), seed=11), DIRTY, spec)[0], "pairwise")
    other = encode_parquet(build_shard_rows(World(WorldConfig(num_prompts=150), seed=12), DIRTY, spec)[0], "pairwise")
    assert first == second
    assert first != other


def test_event_times_follow_the_start_time_and_simulate_pins_it_to_its_own_clock() -> None:
    spec = ShardSpec("implicit", 0, 300, "parquet")

    def event_times(world: World) -> list[datetime]:
        return [row["event_time"] for row in build_shard_rows(world, CLEAN, spec)[0]]

    # Unset (a World built directly, as here): a fixed epoch, so the shards stay a pure function of the seed.
    unset = event_times(World(WorldConfig(num_prompts=150, span_days=2), seed=11))
    assert min(unset) >= DEFAULT_START_TIME and max(unset) <= DEFAULT_START_TIME + timedelta(days=2)
    start = datetime(2027, 3, 1, 12, tzinfo=UTC)
    pinned = event_times(World(WorldConfig(num_prompts=150, span_days=2, start_time=start), seed=11))
    assert [t - start for t in pinned] == [t - DEFAULT_START_TIME for t in unset]  # same draws, shifted
    # `rlhf-ray simulate` resolves an unset start to span_days before it runs, and keeps a pinned one.
    now = datetime(2027, 3, 3, 12, 0, 0, 987654, tzinfo=UTC)
    assert pinned_world(WorldConfig(span_days=2), now).start_time == start
    assert pinned_world(WorldConfig(span_days=2, start_time=DEFAULT_START_TIME), now).start_time == DEFAULT_START_TIME
