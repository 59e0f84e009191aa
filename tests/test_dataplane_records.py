"""From shard bytes to ingest records: parsing, quarantine, masking, pseudonyms, hashes, dedup, curated tables."""

from __future__ import annotations

import copy
import io
import json
import random
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import planted_pii
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_ray.contracts import SignalType
from rlhf_ray.contracts.validation import validate_row
from rlhf_ray.dataplane.curated import curated_schema, to_curated_table
from rlhf_ray.dataplane.dedup import KEY_COLUMNS, dataset_version, kept_keys, resolve_duplicates
from rlhf_ray.dataplane.records import (
    ACCEPTED,
    FILE_LEVEL_ROW,
    INGEST_SCHEMA,
    QUARANTINED,
    FeedbackProcessor,
    RawRow,
    content_hash,
    read_shard,
)
from rlhf_ray.governance import PiiMasker, Pseudonymizer
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.shards import build_shard_rows, encode_jsonl, encode_parquet, relaxed_schema

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
KEY = b"k" * 32
REGIONS = frozenset({"eu", "us", "apac"})
SIGNAL_TYPES = [t.value for t in SignalType]
CLEAN = ShardConfig(rows=100, malformed_fraction=0, duplicate_fraction=0, pii_fraction=0)
EMAIL = "a.b@example.com"
RAW_USER = "user-000123"


@cache
def _rows(signal_type: str) -> tuple[dict[str, Any], ...]:
    world = World(WorldConfig(num_prompts=60), seed=1)
    rows, _ = build_shard_rows(world, CLEAN, ShardSpec(signal_type, 0, 12, "jsonl"))
    return tuple(rows)


def rows_of(signal_type: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rows(signal_type)))


def clean(signal_type: str = "pairwise") -> dict[str, Any]:
    """A clean row with a session (the first annotator row for pairwise/ranking/rating)."""
    return rows_of(signal_type)[0]


@pytest.fixture(scope="module")
def processor() -> FeedbackProcessor:
    return FeedbackProcessor(PiiMasker(), Pseudonymizer(KEY), REGIONS, NOW)


PSEUDONYMS = Pseudonymizer(KEY)


def raw(value: Any, row_number: int = 0, source_file: str = "shards/x/part-00000.jsonl") -> RawRow:
    return RawRow(source_file, row_number, value)


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _all_text(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


# --- read_shard: JSONL -------------------------------------------------------------------------------


def test_jsonl_rows_empty_truncated_and_non_json_lines() -> None:
    good = json.dumps({"signal_id": "s1", "n": 1})
    other = json.dumps({"signal_id": "s2", "n": [1, 2]})
    data = jsonl(good, "", good[: len(good) // 2], "this is not json", "   ", other)
    rows = list(read_shard("shards/pairwise/part-00001.jsonl", data))
    assert [r.row_number for r in rows] == [0, 2, 3, 5]
    assert all(r.source_file == "shards/pairwise/part-00001.jsonl" for r in rows)
    assert rows[0] == RawRow(rows[0].source_file, 0, {"signal_id": "s1", "n": 1}, None)
    assert rows[3] == RawRow(rows[3].source_file, 5, {"signal_id": "s2", "n": [1, 2]}, None)
    truncated, garbage = rows[1], rows[2]
    assert truncated.value == good[: len(good) // 2] and truncated.parse_error.startswith("unparseable_json: ")
    assert garbage.value == "this is not json" and garbage.parse_error.startswith("unparseable_json: ")
    assert "column 1" in garbage.parse_error


def test_jsonl_crlf_no_trailing_newline_and_non_object_values() -> None:
    data = b'{"a": 1}\r\n[1, 2]\r\nnull\r\n"text"\r\n{"b": 2}'
    rows = list(read_shard("f.jsonl", data))
    assert [(r.row_number, r.value, r.parse_error) for r in rows] == [
        (0, {"a": 1}, None), (1, [1, 2], None), (2, None, None), (3, "text", None), (4, {"b": 2}, None)]


def test_jsonl_invalid_utf8_is_a_parse_error_not_a_crash() -> None:
    data = b'{"a": 1}\n{"b": "\xff\xfe' + b"\n" + b'{"c": 3}\n'
    rows = list(read_shard("f.jsonl", data))
    assert [r.row_number for r in rows] == [0, 1, 2]
    assert rows[1].parse_error is not None and rows[2].value == {"c": 3}


def test_empty_jsonl_yields_nothing() -> None:
    assert list(read_shard("f.jsonl", b"")) == []
    assert list(read_shard("f.jsonl", b"\n\n  \n")) == []


def test_jsonl_written_by_the_simulator_reads_back_row_for_row() -> None:
    rows = rows_of("ranking")
    read = list(read_shard("x.jsonl", encode_jsonl(copy.deepcopy(rows))))
    assert [r.row_number for r in read] == list(range(len(rows)))
    assert all(r.parse_error is None and validate_row(r.value, NOW) is None for r in read)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_jsonl_line_with_a_unicode_line_separator_in_a_string_is_one_row(separator: str) -> None:
    rows = rows_of("pairwise")[:3]
    rows[1]["prompt"] = f"first line{separator}second line"
    read = list(read_shard("x.jsonl", encode_jsonl(rows)))
    assert [(r.row_number, r.parse_error) for r in read] == [(0, None), (1, None), (2, None)]
    assert read[1].value["prompt"] == f"first line{separator}second line"


# --- read_shard: Parquet -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_valid_parquet_yields_every_row(signal_type: str) -> None:
    rows = rows_of(signal_type)
    read = list(read_shard("shards/x/part-00002.parquet", encode_parquet(copy.deepcopy(rows), signal_type)))
    assert [r.row_number for r in read] == list(range(len(rows)))
    assert all(r.parse_error is None for r in read)
    assert [r.value for r in read] == rows
    assert all(validate_row(r.value, NOW) is None for r in read)


@pytest.mark.parametrize("cut", [0, 3, 100, 0.5, -1])
def test_truncated_parquet_is_one_file_level_parse_error(cut: float) -> None:
    data = encode_parquet(rows_of("rating"), "rating")
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    read = list(read_shard("shards/rating/part-00003.parquet", data[:end]))
    assert len(read) == 1
    (only,) = read
    assert only.row_number == FILE_LEVEL_ROW == -1
    assert only.value is None and only.parse_error.startswith("unreadable_file: ")
    assert only.source_file == "shards/rating/part-00003.parquet"


def test_parquet_row_numbers_continue_across_row_groups_and_a_broken_group_is_one_error() -> None:
    rows = rows_of("rating")
    table = pa.Table.from_pylist(copy.deepcopy(rows), schema=relaxed_schema("rating"))
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=4, compression="zstd")
    data = sink.getvalue()
    assert [r.row_number for r in read_shard("a.parquet", data)] == list(range(len(rows)))

    broken = bytearray(data)
    column = next(c for c in (pq.ParquetFile(io.BytesIO(data)).metadata.row_group(1).column(i)
                              for i in range(table.num_columns)) if c.path_in_schema == "prompt")
    start = column.dictionary_page_offset or column.data_page_offset
    broken[start: start + column.total_compressed_size] = b"\xab" * column.total_compressed_size
    read = list(read_shard("a.parquet", bytes(broken)))
    errors = [r for r in read if r.parse_error is not None]
    assert len(errors) == 1 and errors[0].row_number == 4 and errors[0].parse_error.startswith("unreadable_row_group 1")
    assert [r.row_number for r in read if r.parse_error is None] == [0, 1, 2, 3, *range(8, len(rows))]


# --- FeedbackProcessor -------------------------------------------------------------------------------


def test_clean_row_is_accepted_with_pseudonymized_ids(processor: FeedbackProcessor) -> None:
    row = clean("pairwise")
    actor, session = row["actor_id"], row["session_id"]
    assert actor.startswith("annotator-") and session.startswith(actor + "/")
    out = processor.process(raw(row, 7, "shards/pairwise/part-00000.jsonl"))
    assert set(out) == set(INGEST_SCHEMA.names)
    assert out["status"] == ACCEPTED and out["reason"] is None and out["detail"] is None
    assert (out["signal_id"], out["signal_type"], out["region"]) == (row["signal_id"], "pairwise", row["region"])
    assert (out["source_file"], out["row_number"]) == ("shards/pairwise/part-00000.jsonl", 7)
    assert out["event_time"] == row["event_time"]
    record = json.loads(out["record"])
    assert record["actor_id"] == PSEUDONYMS.pseudonym(actor) and record["actor_id"].startswith("ann_")
    assert record["session_id"] == PSEUDONYMS.pseudonymize_session(session)
    assert actor not in _all_text(out)
    assert out["pii_counts"] is None
    assert out["content_hash"] == content_hash(record | {"event_time": row["event_time"]})
    pa.Table.from_pylist([out], schema=INGEST_SCHEMA)  # fits the ingest schema


def test_accepted_record_holds_exactly_the_contract_fields(processor: FeedbackProcessor) -> None:
    row = clean("implicit")
    del row["item_id"]  # optional and absent: still a key of the record, as null
    record = json.loads(processor.process(raw(row))["record"])
    assert list(record) == sorted(relaxed_schema("implicit").names)
    assert record["item_id"] is None
    assert record["event_time"].endswith("Z")


def test_pii_in_the_prompt_is_masked_and_counted(processor: FeedbackProcessor) -> None:
    row = clean("pairwise") | {"prompt": f"my email is {EMAIL} ."}
    out = processor.process(raw(row))
    assert out["status"] == ACCEPTED
    assert json.loads(out["record"])["prompt"] == "my email is <EMAIL> ."
    assert json.loads(out["pii_counts"]) == {"email": 1}
    assert EMAIL not in _all_text(out)


def test_pii_in_every_free_text_field_is_masked(processor: FeedbackProcessor) -> None:
    row = clean("ranking")
    row["rationale"] = f"write to {EMAIL}"
    row["responses"][1] = f"call +1 415 555 0100 or {EMAIL}"
    out = processor.process(raw(row))
    assert out["status"] == ACCEPTED
    assert EMAIL not in out["record"] and "555 0100" not in out["record"]
    assert json.loads(out["pii_counts"]) == {"email": 2, "phone": 1}


def test_malformed_row_is_quarantined_masked_and_pseudonymized(processor: FeedbackProcessor) -> None:
    row = clean("pairwise") | {"confidence": 1.5, "prompt": f"my email is {EMAIL} ."}
    actor, session = row["actor_id"], row["session_id"]
    out = processor.process(raw(row, 3))
    assert out["status"] == QUARANTINED
    assert out["reason"] == "out_of_range:confidence" and "1.5" in out["detail"]
    assert out["content_hash"] is None and out["event_time"] is None
    assert out["signal_id"] == row["signal_id"] and out["row_number"] == 3
    record = json.loads(out["record"])
    assert record["actor_id"] == PSEUDONYMS.pseudonym(actor)
    assert record["session_id"] == PSEUDONYMS.pseudonymize_session(session)
    assert record["prompt"] == "my email is <EMAIL> ."
    assert json.loads(out["pii_counts"]) == {"email": 1}
    text = _all_text(out)
    assert EMAIL not in text and actor not in text
    pa.Table.from_pylist([out], schema=INGEST_SCHEMA)


def test_quarantine_detail_shows_a_bad_enum_value_only_as_a_keyed_digest(processor: FeedbackProcessor) -> None:
    row = clean("pairwise") | {"choice": EMAIL}
    out = processor.process(raw(row))
    assert out["status"] == QUARANTINED and out["reason"] == "unknown_enum:choice"
    digest = PSEUDONYMS.digest(EMAIL)
    assert EMAIL not in _all_text(out) and digest in out["detail"] and "'a', 'b', 'tie'" in out["detail"]
    assert json.loads(out["record"])["choice"] == digest


@pytest.mark.parametrize("value", [[1, 2], "a string", None, 42])
def test_a_non_object_json_value_is_quarantined(processor: FeedbackProcessor, value: Any) -> None:
    out = processor.process(raw(value))
    assert out["status"] == QUARANTINED and out["reason"] == "wrong_type"
    assert out["signal_id"] is None and out["content_hash"] is None
    assert json.loads(out["record"]) == value


def _broken_line() -> str:
    row = {"signal_id": "s-9", "signal_type": "correction", "actor_id": RAW_USER,
           "session_id": f"{RAW_USER}/s0-1", "prompt": f"reach me at {EMAIL} please", "confidence": 0.5}
    line = json.dumps(row)
    return line[: line.index('"confidence"') + 16]  # cut mid-value: not JSON


def test_broken_json_line_is_quarantined_without_raw_ids_or_pii(processor: FeedbackProcessor) -> None:
    line = _broken_line()
    (read,) = read_shard("shards/correction/part-00004.jsonl", (line + "\n").encode())
    assert read.parse_error is not None
    out = processor.process(read)
    assert out["status"] == QUARANTINED and out["reason"] == "unparseable_json"
    assert out["detail"] == read.parse_error
    assert (out["row_number"], out["signal_id"], out["content_hash"]) == (0, None, None)
    text = _all_text(out)
    assert RAW_USER not in text and EMAIL not in text
    assert PSEUDONYMS.pseudonym(RAW_USER) in out["record"]
    assert PSEUDONYMS.pseudonymize_session(f"{RAW_USER}/s0-1") in out["record"]
    assert "<EMAIL>" in out["record"] and json.loads(out["pii_counts"]) == {"email": 1}


def test_broken_json_cut_anywhere_never_leaks_the_full_raw_id(processor: FeedbackProcessor) -> None:
    line = _broken_line()
    for end in range(1, len(line)):
        out = processor.process(RawRow("f.jsonl", 0, line[:end], "unparseable_json: cut"))
        assert out["status"] == QUARANTINED
        assert RAW_USER not in _all_text(out), line[:end]


def test_unreadable_parquet_file_is_one_quarantined_record(processor: FeedbackProcessor) -> None:
    (read,) = read_shard("shards/pairwise/part-00005.parquet", b"PAR1 not really parquet")
    out = processor.process(read)
    assert out["status"] == QUARANTINED and out["reason"] == "unreadable_file"
    assert out["row_number"] == FILE_LEVEL_ROW and out["source_file"] == "shards/pairwise/part-00005.parquet"
    assert out["record"] == ""


@pytest.mark.parametrize("region", ["mars", "EU", ""])
def test_unknown_region_is_quarantined(processor: FeedbackProcessor, region: str) -> None:
    row = clean("task_success") | {"region": region}
    out = processor.process(raw(row))
    assert out["status"] == QUARANTINED and out["reason"] == "unknown_region:region"
    assert repr(region) in out["detail"] and "'apac'" in out["detail"]
    assert out["region"] == region
    assert row["actor_id"] not in _all_text(out)


def test_content_hash_is_identical_for_identical_rows(processor: FeedbackProcessor) -> None:
    row = clean("rating")
    first = processor.process(raw(row, 0, "a.jsonl"))
    again = processor.process(raw(copy.deepcopy(row), 9, "b.parquet"))  # position is not content
    from_json = processor.process(raw(json.loads(json.dumps(row, default=_iso)), 1, "c.jsonl"))
    other_processor = FeedbackProcessor(PiiMasker(), Pseudonymizer(KEY), REGIONS, NOW + timedelta(days=1))
    assert first["status"] == again["status"] == from_json["status"] == ACCEPTED
    assert first["content_hash"] == again["content_hash"] == from_json["content_hash"]
    assert first["content_hash"] == other_processor.process(raw(row))["content_hash"]
    assert first["record"] == from_json["record"]


def test_content_hash_is_the_same_from_parquet_and_jsonl(processor: FeedbackProcessor) -> None:
    for signal_type in SIGNAL_TYPES:
        rows = rows_of(signal_type)
        via_jsonl = [processor.process(r) for r in read_shard("a.jsonl", encode_jsonl(copy.deepcopy(rows)))]
        via_parquet = [processor.process(r) for r in read_shard("a.parquet", encode_parquet(rows, signal_type))]
        assert [r["status"] for r in via_jsonl + via_parquet] == [ACCEPTED] * (2 * len(rows))
        assert [r["content_hash"] for r in via_jsonl] == [r["content_hash"] for r in via_parquet]
        assert [r["record"] for r in via_jsonl] == [r["record"] for r in via_parquet]


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_VARIANTS: dict[str, Any] = {
    "signal_id": lambda v: v + "0",
    "event_time": lambda v: v + timedelta(seconds=1),
    "source": lambda v: "user" if v != "user" else "evaluator",
    "actor_id": lambda v: v + "9",
    "item_id": lambda v: "item-other" if v != "item-other" else "item-x",
    "session_id": lambda v: (v or "annotator-000/s0-0") + "9",
    "session_position": lambda v: (v or 0) + 1,
    "prompt_id": lambda v: v + "9",
    "prompt": lambda v: v + " x",
    "topic": lambda v: (v or "") + "x",
    "segment": lambda v: (v or "") + "x",
    "policy_version": lambda v: v + "b",
    "guideline_version": lambda v: (v or "gl-0") + "b",
    "region": lambda v: "apac" if v != "apac" else "eu",
    "confidence": lambda v: 0.5 if v != 0.5 else 0.25,
    "response_a": lambda v: v + " x",
    "response_b": lambda v: v + " x",
    "choice": lambda v: "tie" if v != "tie" else "a",
    "rationale": lambda v: (v or "") + "x",
    "responses": lambda v: [v[0] + " x", *v[1:]],
    "ranking": lambda v: [v[1], v[0], *v[2:]],
    "response": lambda v: v + " x",
    "scale": None,  # changes with scores, below
    "scores": lambda v: [{**v[0], "score": 1.0 if v[0]["score"] != 1.0 else 0.0}, *v[1:]],
    "edited_response": lambda v: v + " x",
    "event": lambda v: "copy" if v != "copy" else "retry",
    "value": lambda v: v + 1,
    "flagged": lambda v: not v,
    "category": lambda v: "privacy" if v != "privacy" else "harassment",
    "severity": lambda v: 2 if v != 2 else 3,
    "success": lambda v: not v,
}


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_content_hash_differs_when_any_field_differs(processor: FeedbackProcessor, signal_type: str) -> None:
    base = clean(signal_type)
    base_hash = processor.process(raw(base))["content_hash"]
    hashes = {base_hash}
    for field in relaxed_schema(signal_type).names:
        if field in ("signal_type", "schema_version", "scale"):
            continue
        variant = copy.deepcopy(base)
        variant[field] = _VARIANTS[field](variant.get(field))
        if field == "severity" and not variant.get("flagged"):
            variant |= {"flagged": True, "category": "privacy"}
        out = processor.process(raw(variant))
        assert out["status"] == ACCEPTED, (field, out["reason"], out["detail"])
        assert out["content_hash"] not in hashes, field
        hashes.add(out["content_hash"])


def test_content_hash_differs_for_a_different_rating_scale(processor: FeedbackProcessor) -> None:
    base = clean("rating") | {"scale": "likert5", "scores": [{"criterion": "overall", "score": 1.0}]}
    thumbs = base | {"scale": "thumbs"}
    hashes = {processor.process(raw(row))["content_hash"] for row in (base, thumbs)}
    assert len(hashes) == 2 and None not in hashes


def test_processor_is_picklable_and_deterministic(processor: FeedbackProcessor) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(processor))
    row = clean("safety_flag")
    assert clone.process(raw(copy.deepcopy(row))) == processor.process(raw(row))


def test_processing_does_not_modify_the_input_row(processor: FeedbackProcessor) -> None:
    for row in (clean("ranking") | {"prompt": f"mail {EMAIL}"}, clean("ranking") | {"confidence": 2.0}):
        before = copy.deepcopy(row)
        processor.process(raw(row))
        assert row == before


def test_a_lone_surrogate_in_text_does_not_crash_the_processor(processor: FeedbackProcessor) -> None:
    line = json.dumps(clean("correction") | {"prompt": "\ud800 broken"}, default=_iso)  # ensure_ascii: "\\ud800"
    (read,) = read_shard("f.jsonl", line.encode())
    assert read.parse_error is None
    out = processor.process(read)
    assert out["status"] in (ACCEPTED, QUARANTINED)


# --- dedup -------------------------------------------------------------------------------------------

_FILES = ["shards/a/part-00000.jsonl", "shards/a/part-00001.parquet", "shards/b/part-00002.jsonl"]


@st.composite
def key_tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    positions = draw(st.lists(st.tuples(st.sampled_from(_FILES), st.integers(0, 50)), unique=True, max_size=40))
    ids = st.sampled_from([f"sig-{i}" for i in range(8)])
    hashes = st.sampled_from(["h0", "h1", "h2"])
    return [{"signal_id": draw(ids), "content_hash": draw(hashes), "source_file": f, "row_number": n}
            for f, n in positions]


def _keys(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([("signal_id", pa.string()), ("content_hash", pa.string()), ("source_file", pa.string()),
                        ("row_number", pa.int64())])
    assert schema.names == list(KEY_COLUMNS)
    return pa.Table.from_pylist(rows, schema=schema)


@settings(max_examples=200, deadline=None)
@given(key_tables(), st.randoms(use_true_random=False))
def test_dedup_partitions_the_input_and_keeps_each_id_once(rows: list[dict[str, Any]], rnd: random.Random) -> None:
    keys = _keys(rows)
    changed = resolve_duplicates(keys)
    kept = kept_keys(keys, changed)
    position = lambda r: (r["source_file"], r["row_number"])  # noqa: E731
    kept_at = [position(r) for r in kept.to_pylist()]
    changed_at = [position(r) for r in changed.to_pylist()]
    assert kept.num_rows + changed.num_rows == keys.num_rows
    assert sorted(kept_at + changed_at) == sorted(position(r) for r in rows)
    kept_ids = kept.column("signal_id").to_pylist()
    assert sorted(kept_ids) == sorted({r["signal_id"] for r in rows})

    first = {}
    for r in sorted(rows, key=position):
        first.setdefault(r["signal_id"], r)
    assert sorted(kept_at) == sorted(position(r) for r in first.values())
    by_position = {position(r): r for r in rows}
    for change in changed.to_pylist():
        row = by_position[position(change)]
        same = row["content_hash"] == first[row["signal_id"]]["content_hash"]
        expected = ("duplicate", "duplicate") if same else ("quarantined", "duplicate_id:signal_id")
        assert (change["status"], change["reason"]) == expected
        assert repr(row["signal_id"]) in change["detail"]

    shuffled = list(rows)
    rnd.shuffle(shuffled)
    keys2 = _keys(shuffled)
    kept2 = kept_keys(keys2, resolve_duplicates(keys2))
    assert dataset_version(kept2) == dataset_version(kept)
    assert dataset_version(kept.take(pa.array(reversed(range(kept.num_rows)), pa.int64()))) == dataset_version(kept)
    assert dataset_version(kept).startswith("ds-") and len(dataset_version(kept)) == 19


def test_dataset_version_changes_with_content() -> None:
    rows = [{"signal_id": "s1", "content_hash": "h1", "source_file": "f", "row_number": 0},
            {"signal_id": "s2", "content_hash": "h2", "source_file": "f", "row_number": 1}]
    base = dataset_version(_keys(rows))
    assert dataset_version(_keys([rows[0]])) != base
    assert dataset_version(_keys([rows[0], rows[1] | {"content_hash": "h3"}])) != base
    assert dataset_version(_keys([rows[0], rows[1] | {"source_file": "g", "row_number": 5}])) == base


def test_no_duplicates_means_no_changes() -> None:
    keys = _keys([{"signal_id": f"s{i}", "content_hash": "h", "source_file": "f", "row_number": i} for i in range(5)])
    changed = resolve_duplicates(keys)
    assert changed.num_rows == 0 and kept_keys(keys, changed).equals(keys)
    empty = _keys([])
    assert resolve_duplicates(empty).num_rows == 0 and kept_keys(empty, resolve_duplicates(empty)).num_rows == 0


# --- curated tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_curated_table_round_trip(processor: FeedbackProcessor, signal_type: str) -> None:
    rows = rows_of(signal_type)
    rows[0]["prompt"] = f"my email is {EMAIL} ."
    records = [processor.process(raw(copy.deepcopy(row), i)) for i, row in enumerate(rows)]
    assert {r["status"] for r in records} == {ACCEPTED}
    table = pa.Table.from_pylist(records, schema=INGEST_SCHEMA)
    curated = to_curated_table(table, signal_type)
    assert curated.schema.equals(curated_schema(signal_type))
    assert curated.schema.names == [*relaxed_schema(signal_type).names, "content_hash"]
    curated.validate(full=True)
    assert curated.num_rows == len(rows)
    assert curated.column("content_hash").to_pylist() == [r["content_hash"] for r in records]
    got = curated.to_pylist()
    for original, row in zip(rows, got, strict=True):
        assert row["signal_id"] == original["signal_id"]
        assert row["event_time"] == original["event_time"]
        assert row["actor_id"] == PSEUDONYMS.pseudonym(original["actor_id"])
        for name in ("prompt_id", "region", "policy_version", "confidence", "session_position"):
            assert row[name] == original[name]
    assert got[0]["prompt"] == "my email is <EMAIL> ."
    for row in got:  # curated rows satisfy the contract again and hash back to the same content hash
        body = {k: v for k, v in row.items() if k != "content_hash"}
        assert validate_row(body, NOW) is None
        assert content_hash(body) == row["content_hash"]


def test_an_accepted_record_always_fits_the_curated_table(processor: FeedbackProcessor) -> None:
    out = processor.process(raw(clean("pairwise") | {"session_position": 2**31}))
    if out["status"] == ACCEPTED:
        to_curated_table(pa.Table.from_pylist([out], schema=INGEST_SCHEMA), "pairwise")
    else:
        assert out["reason"] == "out_of_range:session_position"


# --- no PII in any field -----------------------------------------------------------------------------


@pytest.mark.parametrize("signal_type", SIGNAL_TYPES)
def test_pii_in_every_field_never_reaches_a_record(processor: FeedbackProcessor, signal_type: str) -> None:
    for name, row, reason in planted_pii.variants(clean(signal_type)):
        out = processor.process(raw(row))
        assert planted_pii.leaks(_all_text(out)) == [], name
        if reason is None:
            assert out["status"] == ACCEPTED, (name, out["reason"], out["detail"])
            record = json.loads(out["record"])
            assert record["actor_id"].startswith("usr_") and "<EMAIL>" in record["prompt"]
        else:
            assert out["status"] == QUARANTINED and out["reason"].startswith(reason), (name, out["reason"])
            pa.Table.from_pylist([out], schema=INGEST_SCHEMA)


@pytest.mark.parametrize("field", ["signal_id", "item_id", "prompt_id", "policy_version", "guideline_version"])
def test_an_identifier_holding_free_text_is_quarantined_and_kept_only_as_a_digest(processor: FeedbackProcessor,
                                                                                   field: str) -> None:
    row = clean("pairwise")
    value = f"{row['signal_id']} reach me at {EMAIL}"
    out = processor.process(raw(row | {field: value}))
    assert out["status"] == QUARANTINED and out["reason"] == f"bad_identifier:{field}"
    assert "whitespace" in out["detail"] and PSEUDONYMS.digest(value) in out["detail"]
    assert json.loads(out["record"])[field] == PSEUDONYMS.digest(value)
    assert EMAIL not in _all_text(out) and row["signal_id"] + " " not in _all_text(out)
    if field == "signal_id":
        assert out["signal_id"] == PSEUDONYMS.digest(value)


def test_a_well_formed_identifier_that_is_pii_is_quarantined(processor: FeedbackProcessor) -> None:
    out = processor.process(raw(clean("rating") | {"prompt_id": "10.20.30.40"}))
    assert out["status"] == QUARANTINED and out["reason"] == "pii_in_identifier:prompt_id"
    assert "ipv4" in out["detail"] and "10.20.30.40" not in _all_text(out)


def test_a_cut_line_with_pii_in_every_field_leaks_nothing_wherever_it_is_cut(processor: FeedbackProcessor) -> None:
    for signal_type in ("ranking", "safety_flag"):
        row = planted_pii.variants(clean(signal_type))[0][1]
        line = json.dumps(row, default=_iso)
        for end in range(1, len(line), 3):
            out = processor.process(RawRow("f.jsonl", 0, line[:end], "unparseable_json: cut"))
            assert out["status"] == QUARANTINED
            assert planted_pii.leaks(_all_text(out)) == [] and planted_pii.RAW_USER not in _all_text(out), line[:end]


def test_an_unknown_field_name_holding_pii_is_stored_as_a_digest(processor: FeedbackProcessor) -> None:
    key = f"note from Zorblat Quenby {EMAIL}"
    out = processor.process(raw(clean("implicit") | {key: "x"}))
    assert out["status"] == QUARANTINED and out["reason"] == f"unknown_field:{PSEUDONYMS.digest(key)}"
    assert PSEUDONYMS.digest(key) in json.loads(out["record"]) and planted_pii.leaks(_all_text(out)) == []


def test_names_and_addresses_in_free_text_are_masked_in_accepted_rows(processor: FeedbackProcessor) -> None:
    row = clean("correction") | {"rationale": "Please ship it to 42 Quenby Avenue.\nThanks,\nZorblat"}
    out = processor.process(raw(row))
    assert out["status"] == ACCEPTED
    assert json.loads(out["record"])["rationale"] == "Please ship it to <ADDRESS>.\nThanks,\n<PERSON>"
    assert json.loads(out["pii_counts"]) == {"address": 1, "person": 1}


@pytest.mark.parametrize(("signal_type", "field", "value"),
                         [("pairwise", "choice", "Zorblat"), ("rating", "scale", "stars"), ("implicit", "event", "x"),
                          ("safety_flag", "category", "Quenby"), ("task_success", "source", "robot")])
def test_a_value_outside_a_closed_vocabulary_is_kept_only_as_a_digest(processor: FeedbackProcessor, signal_type: str,
                                                                     field: str, value: str) -> None:
    out = processor.process(raw(clean(signal_type) | {field: value}))
    assert out["status"] == QUARANTINED and out["reason"] == f"unknown_enum:{field}"
    assert json.loads(out["record"])[field] == PSEUDONYMS.digest(value)
    assert repr(value) not in _all_text(out)


def test_an_unknown_rubric_criterion_is_kept_only_as_a_digest(processor: FeedbackProcessor) -> None:
    row = clean("rating")
    row["scores"] = [{"criterion": "Zorblat", "score": 3.0}]
    out = processor.process(raw(row))
    assert out["status"] == QUARANTINED and out["reason"] == "unknown_enum:scores.criterion"
    assert json.loads(out["record"])["scores"] == [{"criterion": PSEUDONYMS.digest("Zorblat"), "score": 3.0}]
    assert "Zorblat" not in _all_text(out)
