"""`rlhf-ray import`: each public format's documented shape (fixtures in tests/fixtures/formats, with bad records
added) becomes contract rows whose preference points the right way; bad records are quarantined with their line
number and reason, masked; single-label imported pairs pass curate without adjudication; import → ingest runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf_ray.annotation.curate import CurateSettings, curate
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.contracts.validation import parse_event_time
from rlhf_ray.dataplane.redaction import Redactor
from rlhf_ray.governance import PiiMasker, Pseudonymizer
from rlhf_ray.inputs.formats import ImportFormatError, preference_pairs, quarantine_table, read_import

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
KEY = "ab" * 32
LOG_MAP = {"prompt": "question", "response": "answer", "rating": "thumb", "user": "uid", "time": "ts"}

# format, fixture, field map, {line number: reason} of the bad records, (prompt, chosen, rejected) it must state
CASES = [
    ("openai-preference", "openai_preference.jsonl", None,
     {3: "missing_field:non_preferred_output", 4: "empty_text:preferred_output[0].content", 5: "unparseable_json"},
     ("User: Can you tell me about the rise of the Roman Empire?", "Rome grew", "The Roman Empire was big.")),
    ("trl-preference", "trl_preference.jsonl", None,
     {6: "missing_field:rejected", 7: "empty_text:prompt", 8: "unparseable_json"},
     ("The sky is", " blue.", " green.")),
    ("hh-rlhf", "hh_rlhf.jsonl", None,
     {3: "missing_field:rejected", 4: "empty_text:chosen", 5: "mismatched_prompt:rejected", 6: "unparseable_json"},
     ("User: Somewhere warm in December.", "The Canary Islands", "Try Iceland.")),
    ("ultrafeedback", "ultrafeedback.jsonl", None,
     {4: "missing_field:fine-grained_score", 5: "empty_text:instruction", 6: "unparseable_json"},
     ("Explain in one sentence why the sky is blue.", "Air molecules scatter", "Because the ocean")),
    ("label-studio", "label_studio_pairwise.json", None,
     {3: "missing_field:text2", 4: "unknown_enum:annotations[0].result[0].value.selected",
      5: "missing_field:completed_by"},
     ("Which reply is more polite?", "Sorry, I cannot help", "Go away.")),
    ("label-studio", "label_studio_ranker.json", None,
     {2: "inconsistent_ranking:annotations[0].result[0].value.ranker", 3: "empty_text:data.items[1].body"},
     ("What is the capital of France?", "The capital of France is Paris", "France's capital is Lyon.")),
    ("argilla", "argilla_ranking.json", None,
     {3: "inconsistent_ranking:responses.preference[0].value", 4: "empty_text:fields.reply-1"},
     ("Write a greeting for a new colleague.", "Welcome aboard", "Hi.")),
    ("argilla", "argilla_label.jsonl", None,
     {3: "unknown_enum:responses.label[0].value", 4: "missing_field:prompt", 5: "unparseable_json"},
     ("2+2?", "4", "5")),
    ("jsonl", "production_logs.jsonl", LOG_MAP,
     {4: "empty_text:answer", 5: "missing_field:question", 6: "wrong_type:thumb", 7: "unparseable_json"},
     ("How do I reset my password?", "Open Settings", "No idea.")),
]


@pytest.mark.parametrize("fmt, fixture, field_map, bad, stated", CASES, ids=[c[1] for c in CASES])
def test_each_format_quarantines_bad_records_and_points_pairs_the_right_way(fmt, fixture, field_map, bad, stated):
    result = read_import(fmt, FIXTURES / fixture, field_map)
    assert {record.number: rejection.reason for record, rejection in result.quarantine} == bad
    good = result.input_rows - len(bad)
    assert result.rows and len({r["signal_id"] for r in result.rows}) == len(result.rows)
    assert result.summary()["quarantined_rows"] == len(bad) and result.input_rows >= good > 0
    prompt, chosen, rejected = stated
    pairs = preference_pairs(result.rows)
    assert any(p["prompt"].endswith(prompt) and p["chosen"].startswith(chosen) and p["rejected"].startswith(rejected)
               for p in pairs), pairs
    assert not any(p["prompt"].endswith(prompt) and p["chosen"].startswith(rejected)
                   and p["rejected"].startswith(chosen) for p in pairs)


def test_multi_turn_prompts_keep_their_history():
    rows = read_import("trl-preference", FIXTURES / "trl_preference.jsonl").rows
    assert ("System: You are terse.\n\nUser: What color is the sky?\n\nAssistant: Blue.\n\nUser: And at sunset?"
            in {r["prompt"] for r in rows})


def test_annotated_formats_carry_items_and_annotators_and_logs_carry_users():
    studio = read_import("label-studio", FIXTURES / "label_studio_pairwise.json").rows
    assert [(r["item_id"], r["actor_id"]) for r in studio] == [("ls-1", "10"), ("ls-1", "11"), ("ls-2", "10")]
    argilla = read_import("argilla", FIXTURES / "argilla_ranking.json")
    assert argilla.rows[0]["ranking"] == [0, 2, 1] and argilla.rows[1]["ranking"] == [2, 0, 1]
    assert len(argilla.rows) == 3  # the draft response is not a label
    logs = read_import("jsonl", FIXTURES / "production_logs.jsonl", LOG_MAP).rows
    assert [(r["actor_id"], r["scale"], r["scores"][0]["score"]) for r in logs] == [
        ("user-17", "thumbs", 1.0), ("user-18", "thumbs", 0.0), ("user-17", "thumbs", 0.0)]
    assert all(r["item_id"] is None for r in read_import("hh-rlhf", FIXTURES / "hh_rlhf.jsonl").rows)


def test_unknown_format_and_missing_map_fail_clearly():
    with pytest.raises(ImportFormatError, match="expected one of"):
        read_import("csv", FIXTURES / "hh_rlhf.jsonl")
    with pytest.raises(ImportFormatError, match=r"--map for \['prompt', 'response', 'rating'\]"):
        read_import("jsonl", FIXTURES / "production_logs.jsonl")


def test_quarantine_holds_no_raw_pii_or_ids(tmp_path):
    redactor = Redactor(PiiMasker(), Pseudonymizer(bytes.fromhex(KEY)))
    tables = [quarantine_table(read_import(fmt, FIXTURES / fixture, field_map), redactor, str(FIXTURES / fixture),
                               field_map) for fmt, fixture, field_map, _, _ in CASES]
    stored = json.dumps(pa.concat_tables(tables).to_pylist(), default=str)
    for raw in ("415-555-0134", "jo@example.org", "ann@example.com", "max@example.com", "bob@example.com",
                "Ann Smith", "user-19", "user-20", "user-21"):
        assert raw not in stored, raw
    assert '"row_number": 4' in stored and "empty_text" in stored


def _table(rows: list[dict], kind: str) -> pa.Table:
    return pa.Table.from_pylist([{**r, "event_time": parse_event_time(r["event_time"])} for r in rows],
                                schema=SIGNAL_SCHEMAS[SignalType(kind)])


def test_single_label_pairs_pass_curate_with_their_confidence_and_no_adjudication():
    hh = read_import("hh-rlhf", FIXTURES / "hh_rlhf.jsonl", confidence=0.8).rows
    studio = read_import("label-studio", FIXTURES / "label_studio_pairwise.json").rows
    ranked = read_import("ultrafeedback", FIXTURES / "ultrafeedback.jsonl").rows
    tables = {"pairwise": _table(hh + studio, "pairwise"),
              "ranking": _table([r for r in ranked if r["signal_type"] == "ranking"], "ranking")}
    result = curate(tables, {}, CurateSettings())
    pairs = result.pairs.to_pylist()
    single = {p["chosen"]: p for p in pairs if p["source_signal_ids"][0] in {r["signal_id"] for r in hh}}
    assert len(single) == 2 and {p["weight"] for p in single.values()} == {0.8}
    assert "The Canary Islands are mild in December and easy to reach from Europe." in single
    assert result.report["single_label_pairs"] == 2 + 6 + 1  # 2 HH choices, 4 + 2 ranked UltraFeedback answers
    queued = set(result.adjudication.column("item_id").to_pylist())
    assert queued <= {"ls-1", "ls-2"}  # only annotated items can ever be queued


def test_import_then_ingest(ray_cluster, tmp_path, monkeypatch):
    from actors.ingest import IngestConfig, ingest
    from jobs.cli import main
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig

    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY)
    shards = tmp_path / "shards"
    assert main(["import", "--format", "label-studio", "--input", str(FIXTURES / "label_studio_pairwise.json"),
                 "--out", str(shards), "wandb.mode=disabled", f"lineage.root={tmp_path / 'lineage'}"]) == 0
    summary = json.loads((shards / "_import.json").read_text())
    assert (summary["input_rows"], summary["written_rows"], summary["quarantined_rows"]) == (5, 3, 3)
    assert pq.read_table(shards / "_quarantine.parquet").column("row_number").to_pylist() == [3, 4, 5]
    figures = ingest(IngestConfig(input=str(shards), output_dir=str(tmp_path / "ingested"),
                                  ray=RayConfig(num_cpus=2), wandb=WandbConfig(mode="disabled"),
                                  lineage=LineageConfig(root=str(tmp_path / "lineage")),
                                  now=datetime.now(UTC)))
    assert (figures["input_rows"], figures["accepted_rows"], figures["quarantined_rows"]) == (3, 3, 0)
    curated = pq.read_table(Path(figures["curated_dir"]) / "pairwise").to_pylist()
    assert {r["actor_id"] for r in curated}.isdisjoint({"10", "11"})  # pseudonymized by ingest




def test_train_rm_measures_on_the_users_pairs_and_normalises_on_training_pairs(world_assets, tmp_path):
    """The two pieces `train-rm` adds around its (unchanged) Ray Train loop, on the suite's tiny model: held-out
    pairs from an import file, and μ, σ from the training pairs (the whole job runs in the suite's
    `trained_policy` fixture and tests/test_preference_training.py)."""
    from jobs.train_rm import TrainRMConfig, _store_normalization, _training_sample, heldout_pairs
    from rlhf_ray.models import load_tokenizer
    from rlhf_ray.training.reward_model import RewardModel

    config = TrainRMConfig(model_path=world_assets["model"], pairs=world_assets["pairs"],
                           eval_pairs=str(FIXTURES / "argilla_label.jsonl"), eval_format="argilla",
                           normalization_pairs=6, train={"objectives": {"preference": 1.0}})
    heldout = heldout_pairs(config, config.seed)
    # argilla_label.jsonl: three users label record 1 (two prefer response1), one labels record 2
    assert [(p["chosen"][:9], p["chosen_utility"], p["rejected_utility"]) for p in heldout] == [
        ("Botanical", 1.0, 0.0), ("No, it is", 1.0, 0.0), ("Botanical", 1.0, 0.0), ("4", 1.0, 0.0)]
    sample = _training_sample(world_assets["pairs"], config)
    training = pq.read_table(world_assets["pairs"]).to_pylist()
    assert len(sample) == 6 and all(p in {(t["prompt"], t["chosen"], t["rejected"]) for t in training
                                          if t["objective"] == "preference"}
                                    for p in [(s["prompt"], s["chosen"], s["rejected"]) for s in sample])
    RewardModel.from_causal_lm(world_assets["model"], 0, {"preference": 1.0}).save_pretrained(tmp_path / "rm")
    load_tokenizer(world_assets["model"]).save_pretrained(tmp_path / "rm")  # as the job's exported model holds it
    figures = _store_normalization(str(tmp_path / "rm"), sample, config)
    stored = RewardModel.load(tmp_path / "rm")
    assert (stored.mean, stored.std) == (figures["normalization_mean"], figures["normalization_std"])
    assert stored.std > 1e-6 and figures["normalization_pairs"] == 6
    with pytest.raises(ValueError, match="needs --eval-format"):
        heldout_pairs(config.model_copy(update={"eval_format": None}), config.seed)
