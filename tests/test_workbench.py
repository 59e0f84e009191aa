"""The annotation workbench's core (no Ray): stopping rule, queue, blind presentation, sessions, disputes,
guidelines, persistence — on inputs built from the simulated world by the real curate code."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rlhf_ray.contracts.validation import validate_row
from rlhf_ray.governance import Pseudonymizer
from rlhf_ray.workbench.config import Identity, QueueSection, WorkbenchArgs
from rlhf_ray.workbench.demo import scripted_answer, write_demo_inputs
from rlhf_ray.workbench.guidelines import GuidelineError, GuidelineStore, render_markdown
from rlhf_ray.workbench.inputs import WorkbenchInputs, load_inputs
from rlhf_ray.workbench.redundancy import DONE, ESCALATE, MORE, decide, item_posterior, shrunk_accuracy
from rlhf_ray.workbench.rows import SubmissionError
from rlhf_ray.workbench.service import Workbench

ROOT = Path(__file__).resolve().parents[1]
KEY = bytes.fromhex("5e" * 32)
START = 1_780_000_000.0  # 2026-05-28, a fixed clock for SLA and session caps
POLICY_NAMES = ("policy-2025.12", "policy-2026.01")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> WorkbenchInputs:
    root = tmp_path_factory.mktemp("workbench-inputs")
    paths = write_demo_inputs(root, Pseudonymizer(KEY), num_prompts=80,
                              rows={"pairwise": 300, "ranking": 80, "rating": 160}, active_budget=30)
    return load_inputs(paths.curated, paths.dataset, paths.gold)


def _args(out: Path, **sections: Any) -> WorkbenchArgs:
    base: dict[str, Any] = {"curated": "unused", "dataset": "unused", "output_dir": str(out),
                            "guidelines_dir": str(ROOT / "guidelines"), "shards": {"flush_every": 1}}
    return WorkbenchArgs.model_validate({**base, **sections})


def _open(out: Path, inputs: WorkbenchInputs, clock: Clock | None = None, **sections: Any) -> Workbench:
    return Workbench.open(_args(out, **sections), inputs, clock or Clock())


ANN = [Identity(actor=f"ann_{i:016x}", role="annotator") for i in range(6)]
REVIEWER = Identity(actor="ann_feedfacefeedface", role="reviewer")


def _answer(next_task: dict[str, Any], choice: str = "a", rationale: str = "clearer steps") -> dict[str, Any]:
    return {"assignment_id": next_task["assignment_id"],
            **scripted_answer(next_task["task"], choice=choice, rationale=rationale)}


def _label_many(bench: Workbench, people: list[Identity], each: int, clock: Clock | None = None,
                seconds_each: float = 0.0) -> None:
    """Each person signs in and labels `each` tasks, taking `seconds_each` per task on `clock`."""
    for who in people:
        bench.sign_in(who)
        for _ in range(each):
            handed = bench.next_task(who)
            if clock is not None:
                clock.now += seconds_each
            bench.submit(who, _answer(handed))


def _shard_rows(out: Path) -> list[dict[str, Any]]:
    paths = sorted((out / "shards").glob("*.jsonl"))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


# -- maths -------------------------------------------------------------------------------------------------------


def test_posterior_matches_the_one_coin_formula() -> None:
    # Two annotators (0.8, 0.6) say class 0, one (0.7) says class 1, K = 3:
    # P(0) ∝ 0.8·0.6·0.15, P(1) ∝ 0.1·0.2·0.7, P(2) ∝ 0.1·0.2·0.15
    expected = np.array([0.8 * 0.6 * 0.15, 0.1 * 0.2 * 0.7, 0.1 * 0.2 * 0.15])
    posterior = item_posterior([0, 0, 1], [0.8, 0.6, 0.7], 3)
    np.testing.assert_allclose(posterior, expected / expected.sum())
    np.testing.assert_allclose(item_posterior([], [], 2), [0.5, 0.5])
    assert item_posterior([1], [1.0], 2)[1] > 0.99  # an accuracy of 1 stays finite
    assert shrunk_accuracy(0, 0, 0.75, 4.0) == 0.75
    assert shrunk_accuracy(6, 6, 0.75, 4.0) == pytest.approx(0.9)


def test_stopping_rule_stops_asks_more_and_escalates() -> None:
    confident, unsure = np.array([0.95, 0.05]), np.array([0.6, 0.4])
    assert decide(confident, 1, 2, 5, 0.9).state == DONE  # confident: stop before the 2 wanted
    assert decide(confident, 0, 2, 5, 0.9).state == MORE  # nothing new asked yet
    more = decide(unsure, 2, 2, 5, 0.9)
    assert (more.state, more.labels_wanted) == (MORE, 3)  # disagreement: one more label
    assert decide(unsure, 5, 5, 5, 0.9).state == ESCALATE
    with pytest.raises(ValueError, match="n_classes"):
        item_posterior([0], [0.8], 1)


# -- guidelines --------------------------------------------------------------------------------------------------


def test_guidelines_versions_diff_and_safe_rendering(tmp_path: Path) -> None:
    store = GuidelineStore.load(ROOT / "guidelines")
    assert store.versions("preference") == ["gl-1.0", "gl-1.1", "gl-1.2"]
    assert store.current("preference") == "gl-1.2"
    diff = store.diff("preference", "gl-1.1", "gl-1.2")
    assert diff.startswith("--- preference/gl-1.1\n+++ preference/gl-1.2")
    assert "+## Harmful requests" in diff
    with pytest.raises(GuidelineError, match="gl-9"):
        store.text("preference", "gl-9")
    with pytest.raises(GuidelineError, match="expected one of"):
        store.versions("nope")
    (tmp_path / "fam").mkdir()
    for version in ("v2", "v10", "v1"):
        (tmp_path / "fam" / f"{version}.md").write_text(f"# {version}\n")
    assert GuidelineStore.load(tmp_path).versions("fam") == ["v1", "v2", "v10"]
    html = render_markdown("# Title\n- **bold** <script>alert(1)</script>\n1. `x` *em*\n\ntext")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<h2>Title</h2>" in html and "<strong>bold</strong>" in html and "<ol>" in html and "<em>em</em>" in html


# -- queue -------------------------------------------------------------------------------------------------------


def test_queue_is_built_from_adjudication_active_learning_gold_rubric_and_corrections(demo: WorkbenchInputs,
                                                                                    tmp_path: Path) -> None:
    bench = _open(tmp_path, demo)
    sources = {t.source for t in bench.tasks.values()}
    types = {t.task_type for t in bench.tasks.values()}
    assert sources == {"adjudication", "active_learning", "gold", "rubric", "correction"}
    assert types == {"pairwise", "ranking", "rubric", "correction"}
    task = next(iter(bench.tasks.values()))
    assert task.due_at - task.created_at == pytest.approx(24 * 3600 if task.source == "adjudication" else 72 * 3600)
    assert all(t.guideline_version for t in bench.tasks.values())
    assert len({(t.item.item_id, t.task_type) for t in bench.tasks.values()}) == len(bench.tasks)
    # Opening again (same inputs) finds the same tasks: ids are content hashes, the queue is saved.
    again = _open(tmp_path, demo)
    assert again.tasks.keys() == bench.tasks.keys()
    assert json.loads((tmp_path / "state" / "queue.json").read_text())["tasks"]
    with pytest.raises(ValueError, match="max_labels"):
        QueueSection(labels_wanted=3, max_labels=2)


def test_blind_presentation_is_shuffled_recorded_and_mapped_back(demo: WorkbenchInputs, tmp_path: Path) -> None:
    bench = _open(tmp_path, demo, queue={"labels_wanted": 1, "max_labels": 1, "confidence": 0.99})
    swapped = None
    for who in ANN[:4]:
        bench.sign_in(who)
        for _ in range(5):
            handed = bench.next_task(who)
            assert handed["state"] == "task"
            text = json.dumps(handed)
            task = bench.tasks[handed["task"]["task_id"]]
            assert not any(name in text for name in POLICY_NAMES), "a variant name reached the client"
            assert task.item.item_id not in text and task.source not in text
            presented = bench.leases[handed["assignment_id"]].presented
            answer = bench.submit(who, _answer(handed, "a"))
            if task.task_type == "pairwise" and presented == (1, 0):
                swapped = answer["signal_id"]
    assert swapped is not None, "no pairwise task was shown in swapped order"
    rows = {row["signal_id"]: row for row in _shard_rows(tmp_path)}
    assert rows[swapped]["choice"] == "b"  # "A" on screen was the item's response_b
    events = [json.loads(line) for line in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    assert all("presented" in e for e in events if e["kind"] == "label")
    for row in rows.values():
        assert validate_row(row) is None
        assert row["actor_id"].startswith("ann_") and row["source"] == "annotator"
        assert row["guideline_version"] and row["session_id"].startswith(row["actor_id"] + "/")


def test_rows_are_masked_and_bad_input_names_the_field(demo: WorkbenchInputs, tmp_path: Path) -> None:
    bench = _open(tmp_path, demo)
    who = ANN[0]
    with pytest.raises(SubmissionError) as no_session:
        bench.submit(who, {"assignment_id": "nope"})
    assert no_session.value.status == 404
    bench.sign_in(who)
    handed = bench.next_task(who)
    body = _answer(handed, rationale="mail me at jane.doe@example.com")
    task_type = handed["task"]["task_type"]
    bad = {"pairwise": {"choice": "left"}, "ranking": {"ranking": [0, 0, 1, 2]},
           "rubric": {"scores": {"helpfulness": 9}}, "correction": {"edited_response": ""}}[task_type]
    with pytest.raises(SubmissionError) as wrong:
        bench.submit(who, {**body, **bad})
    assert wrong.value.status == 422 and wrong.value.field.split(".")[0] in ("choice", "ranking", "scores",
                                                                           "edited_response")
    assert str(wrong.value).startswith(f"field '{wrong.value.field}'")
    if task_type != "correction":
        with pytest.raises(SubmissionError, match="rationale") as missing:
            bench.submit(who, {**body, "rationale": "  "})
        assert missing.value.field == "rationale"
    with pytest.raises(SubmissionError) as reviewer_only:
        bench.resolve(who, "d-x", {})
    assert reviewer_only.value.status == 403
    bench.submit(who, body)
    row = _shard_rows(tmp_path)[-1]
    assert row["rationale"] is None or "example.com" not in row["rationale"]
    with pytest.raises(SubmissionError) as again:
        bench.submit(who, body)  # the assignment was used up
    assert again.value.status == 404


# -- adaptive redundancy and reuse -------------------------------------------------------------------------------


def _label_task(bench: Workbench, tid: str, choices: list[str], first: int = 0) -> None:
    """Annotators label task `tid` with canonical choices (the shown letter is mapped through the lease), or
    "runner-up": the less likely of a and b under the posterior so far."""
    for who, choice in zip(ANN[first:], choices, strict=False):
        bench.sign_in(who)
        handed = bench.next_task(who)
        assert handed["task"]["task_id"] == tid
        presented = bench.leases[handed["assignment_id"]].presented
        if choice == "runner-up":  # disagree with the consensus so far, whatever it is
            choice = "ab"[int(np.argsort(bench.posterior(bench.tasks[tid])[:2])[0])]
        shown = choice if choice == "tie" else "ab"[presented.index("ab".index(choice))]
        bench.submit(who, _answer(handed, shown))


def _one_pairwise_task(demo: WorkbenchInputs) -> WorkbenchInputs:
    """Inputs whose queue is a single pairwise active-learning pick (no adjudication, gold, rubric, correction)."""
    active = demo.active.filter(pc.equal(demo.active.column("signal_type"), "pairwise")).slice(0, 1)
    return dataclasses.replace(demo, active=active, adjudication=demo.adjudication.slice(0, 0), gold={})


def test_agreement_stops_early_and_disagreement_escalates_to_a_dispute(demo: WorkbenchInputs, tmp_path: Path) -> None:
    queue = {"labels_wanted": 2, "max_labels": 4, "confidence": 0.9, "default_accuracy": 0.8, "rubric": 0,
             "correction": 0}
    inputs = _one_pairwise_task(demo)
    bench = _open(tmp_path / "agree", inputs, queue=queue)
    (tid,) = bench.tasks
    progress = bench.progress[tid]
    while progress.state == "open":
        _label_task(bench, tid, ["a"], first=len(progress.labels))
    assert progress.state == "done" and len(progress.labels) <= 4
    assert progress.confidence >= 0.9

    bench = _open(tmp_path / "disagree", inputs, queue=queue)
    _label_task(bench, tid, ["runner-up"] * 4)
    progress = bench.progress[tid]
    assert progress.state == "escalated" and len(progress.labels) == 4
    assert progress.wanted == 4  # asked for one more after each unsure label
    (dispute,) = bench.list_disputes(REVIEWER)["disputes"]
    assert dispute["dispute_id"] == "d-" + tid.removeprefix("t-")
    assert dispute["reason"].startswith("no consensus after 4 labels")
    bench.sign_in(ANN[5])
    assert bench.next_task(ANN[5])["state"] == "empty"  # an escalated task asks no one else


def test_a_comparison_already_judged_is_reused(demo: WorkbenchInputs, tmp_path: Path) -> None:
    """The same prompt and responses under another item id, in swapped order, is settled by the first."""
    pairwise = demo.tables["pairwise"]
    active = demo.active.filter(pc.equal(demo.active.column("signal_type"), "pairwise"))
    original = active.column("item_id")[0].as_py()
    copy = pairwise.filter(pc.equal(pairwise.column("item_id"), original)).to_pylist()
    for row in copy:
        row.update(item_id="item-copy", signal_id=row["signal_id"] + "-copy", response_a=row["response_b"],
                   response_b=row["response_a"], choice={"a": "b", "b": "a"}.get(row["choice"], row["choice"]))
    tables = {**demo.tables, "pairwise": pa.concat_tables([pairwise, pa.Table.from_pylist(copy,
                                                                                          schema=pairwise.schema)])}
    picks = pa.concat_tables([active.slice(0, 1), active.slice(0, 1).set_column(
        active.column_names.index("item_id"), "item_id", pa.array(["item-copy"]))])
    inputs = dataclasses.replace(demo, tables=tables, active=picks, adjudication=demo.adjudication.slice(0, 0),
                                 gold={})
    bench = _open(tmp_path, inputs, queue={"labels_wanted": 1, "max_labels": 3, "rubric": 0, "correction": 0,
                                           "confidence": 0.6, "default_accuracy": 0.9})
    pair = [t for t in bench.tasks.values() if t.item.item_id in (original, "item-copy")]
    assert len(pair) == 2 and pair[0].comparison_key == pair[1].comparison_key
    if all(bench.progress[t.task_id].state == "open" for t in pair):
        bench.sign_in(ANN[0])
        handed = bench.next_task(ANN[0])
        bench.submit(ANN[0], _answer(handed, "a"))
    first, second = sorted(pair, key=lambda t: bench.progress[t.task_id].state != "done")
    assert bench.progress[first.task_id].state in ("done", "reused")
    progress = bench.progress[second.task_id]
    assert progress.state == "reused" and not progress.labels
    winner = first.item.responses[bench.progress[first.task_id].consensus]
    assert second.item.responses[progress.consensus] == winner  # mapped through the swapped order
    assert bench.next_task(ANN[3])["state"] != "task"  # nothing left to ask: the comparison is not asked again


# -- sessions ----------------------------------------------------------------------------------------------------


def test_session_caps_breaks_and_rotation(demo: WorkbenchInputs, tmp_path: Path) -> None:
    clock = Clock()
    bench = _open(tmp_path, demo, clock, session={"max_tasks": 3, "max_minutes": 30, "break_minutes": 10,
                                                  "rotate_after": 1})
    who = ANN[0]
    assert bench.next_task(who)["state"] == "ended"  # no session before signing in
    bench.sign_in(who)
    types = []
    for _ in range(3):
        handed = bench.next_task(who)
        types.append(handed["task"]["task_type"])
        clock.now += 20
        bench.submit(who, _answer(handed))
    assert types[0] != types[1] and types[1] != types[2]  # rotation after every task
    over = bench.next_task(who)
    assert over["state"] == "break" and "3 tasks (cap 3)" in over["message"]
    assert bench.sign_in(who)["session"]["state"] == "break"  # no new session during the break
    clock.now += 11 * 60
    assert bench.sign_in(who)["session"]["state"] == "active"
    assert bench.next_task(who)["session"]["session_id"].endswith("/ws-2")
    clock.now += 31 * 60
    assert bench.next_task(who)["state"] == "break"  # the time cap
    reopened = _open(tmp_path, demo, clock, session={"max_tasks": 3, "max_minutes": 30, "break_minutes": 10})
    assert reopened.next_task(who)["state"] == "break"  # a restart does not reset a cap


# -- disputes ----------------------------------------------------------------------------------------------------


def test_reviewer_resolves_a_dispute_into_a_high_weight_label(demo: WorkbenchInputs, tmp_path: Path) -> None:
    bench = _open(tmp_path, demo)
    listed = bench.list_disputes(REVIEWER)["disputes"]
    assert listed and all(d["reason"].startswith("adjudication queue") for d in listed)
    did = listed[0]["dispute_id"]
    detail = bench.get_dispute(REVIEWER, did)
    labels = [e for e in detail["thread"] if e["kind"] == "label"]
    assert len(labels) >= 2 and any(e["rationale"] for e in labels)
    assert not any(name in json.dumps(detail) for name in POLICY_NAMES)
    with pytest.raises(SubmissionError) as not_theirs:  # annotators read only threads of items they labeled
        bench.get_dispute(ANN[0], did)
    assert not_theirs.value.status == 403 and bench.list_disputes(ANN[0])["disputes"] == []
    bench.comment(REVIEWER, did, {"text": "the guideline is unclear about refusals"})
    task = bench.tasks[bench.disputes[did].task_id]
    final = {"choice": "b"} if task.task_type == "pairwise" else {"ranking": list(range(len(task.item.responses)))}
    with pytest.raises(SubmissionError, match="note"):
        bench.resolve(REVIEWER, did, final)
    answer = bench.resolve(REVIEWER, did, {**final, "note": "B refuses and points to support"})
    with pytest.raises(SubmissionError) as twice:
        bench.resolve(REVIEWER, did, {**final, "note": "again"})
    assert twice.value.status == 409
    row = next(r for r in _shard_rows(tmp_path) if r["signal_id"] == answer["signal_id"])
    assert row["confidence"] == 1.0 and row["item_id"] == task.item.item_id and validate_row(row) is None
    resolved = [json.loads(line) for line in (tmp_path / "adjudication" / "resolved.jsonl").read_text().splitlines()]
    assert resolved == [{"item_id": task.item.item_id, "signal_type": task.item.signal_type,
                         "answer": final.get("choice", final.get("ranking"))}]
    threads = (tmp_path / "disputes" / "threads.jsonl").read_text()
    assert "unclear about refusals" in threads and "points to support" in threads
    assert bench.progress[task.task_id].state == "resolved"
    assert did not in {d["dispute_id"] for d in bench.list_disputes(REVIEWER)["disputes"]}
    notes = bench.guideline("preference", task.guideline_version)["resolution_notes"]
    assert notes and notes[0]["note"] == "B refuses and points to support"


def test_a_resolution_is_an_audit_chain_event_with_ids_of_artifacts_not_people(demo: WorkbenchInputs,
                                                                               tmp_path: Path) -> None:
    from rlhf_ray.lineage import LineageRegistry

    registry = LineageRegistry(str(tmp_path / "lineage"))  # its key: tmp_path/secrets/audit.key, as the bench's
    pairs = registry.register("pairs", "pairs-demo0", "demo0")
    report = {**demo.report, "lineage_root": str(tmp_path / "lineage"), "pairs_id": pairs.id[:12]}
    bench = _open(tmp_path / "wb", dataclasses.replace(demo, report=report))
    assert bench.audit is not None and bench.audit.pairs_id == pairs.id
    did = bench.list_disputes(REVIEWER)["disputes"][0]["dispute_id"]
    bench.comment(REVIEWER, did, {"text": "see the refusal section"})
    task = bench.tasks[bench.disputes[did].task_id]
    final = {"choice": "b"} if task.task_type == "pairwise" else {"ranking": list(range(len(task.item.responses)))}
    bench.resolve(REVIEWER, did, {**final, "note": "B refuses and points to support"})
    (event,) = [e for e in LineageRegistry(str(tmp_path / "lineage")).events(pairs.id) if e.event != "register"]
    assert event.event == "workbench-resolution" and event.artifact_id == pairs.id
    assert event.payload == {
        "dispute_id": did, "task_type": task.task_type, "guideline_version": task.guideline_version,
        "dataset_version": demo.report["dataset_version"], "pairs_version": demo.report["pairs_version"],
        "labels": len(task.history), "comments": 1, "disputes_resolved": 1, "disputes_open": len(bench.disputes) - 1}
    people = {REVIEWER.actor, *(h.annotator for h in task.history), *(a.actor for a in ANN)}
    assert people and not any(person in json.dumps(event.payload) for person in people)
    assert registry.verify().ok
    with pytest.raises(ValueError, match="unknown artifact 'pairs-0000'"):
        _open(tmp_path / "wb2", dataclasses.replace(demo, report={**report, "pairs_id": "pairs-0000"}))


# -- persistence, shards, dashboards -----------------------------------------------------------------------------


def test_restart_loses_and_duplicates_nothing(demo: WorkbenchInputs, tmp_path: Path) -> None:
    from rlhf_ray.dataplane.records import ACCEPTED, FeedbackProcessor, read_shard
    from rlhf_ray.governance import PiiMasker

    clock = Clock()
    bench = _open(tmp_path, demo, clock, shards={"flush_every": 3, "flush_seconds": 3600})
    _label_many(bench, ANN[:2], 4)
    before = bench.summary()
    assert before["labels"] == 8 and before["rows_waiting"] == 2  # 6 in two shards, 2 waiting
    bench.log.close()  # a crash: no flush; then a torn half-line at the end of the log
    with (tmp_path / "state" / "events.jsonl").open("ab") as log:
        log.write(b'{"kind": "label", "task_id": "t-')
    reopened = _open(tmp_path, demo, clock, shards={"flush_every": 3, "flush_seconds": 3600})
    assert reopened.summary()["labels"] == 8 and reopened.summary()["rows_waiting"] == 0
    rows = _shard_rows(tmp_path)
    assert len(rows) == 8 and len({r["signal_id"] for r in rows}) == 8
    reopened.close()
    assert len(_shard_rows(tmp_path)) == 8  # closing again writes nothing twice
    ingest_time = datetime.fromtimestamp(clock.now + 60, UTC)
    processor = FeedbackProcessor(PiiMasker(), Pseudonymizer(KEY), frozenset({"eu", "us", "apac"}), ingest_time)
    for path in sorted((tmp_path / "shards").glob("*.jsonl")):
        records = [processor.process(raw) for raw in read_shard(str(path), path.read_bytes())]
        assert all(r["status"] == ACCEPTED for r in records), [r["reason"] for r in records]


def test_dashboard_agreement_health_and_sla(demo: WorkbenchInputs, tmp_path: Path) -> None:
    clock = Clock()
    bench = _open(tmp_path, demo, clock, queue={"labels_wanted": 3, "max_labels": 3})
    _label_many(bench, ANN[:3], 6, clock, seconds_each=30)
    with pytest.raises(SubmissionError) as annotators_cannot:
        bench.dashboard(ANN[0])
    assert annotators_cannot.value.status == 403
    board = bench.dashboard(REVIEWER)
    pairwise = board["agreement"]["workbench"]["pairwise"]
    assert pairwise["overall"]["n_labels"] > 0 and "gl-1.2" in pairwise["by_guideline_version"]
    assert set(board["agreement"]["before"]["by_guideline_version"]) == {"gl-1.0", "gl-1.1"}
    health = {a["annotator"]: a for a in board["annotators"]}
    assert set(health) == {a.actor for a in ANN[:3]}
    assert all(a["labels"] == 6 and a["tasks_per_hour"] and a["median_seconds_per_task"] == 30.0
               for a in health.values())
    assert board["annotators_before"] and board["queue"]["labels"] == 18
    assert board["sla"]["open_overdue"] == 0 and sum(board["sla"]["open_by_age"].values()) > 0
    clock.now += 25 * 3600
    assert bench.dashboard(REVIEWER)["sla"]["open_overdue"] > 0  # adjudication tasks are due in 24 h


def test_tokens_become_digests_and_pseudonyms() -> None:
    from rlhf_ray.workbench.auth import bearer_token, parse_tokens, token_digest

    secret = "alice-token-0123456789"
    identities = parse_tokens({"annotators": {"alice": secret}, "reviewers": {"rita": "rita-token-0123456789"}},
                              "test", Pseudonymizer(KEY))
    assert identities[token_digest(secret)].role == "annotator"
    assert all(i.actor.startswith("ann_") and "alice" not in i.actor for i in identities.values())
    assert "alice" not in json.dumps({k: v.model_dump() for k, v in identities.items()})
    with pytest.raises(ValueError, match=r"annotators\.bob") as short:
        parse_tokens({"annotators": {"bob": "short"}}, "test", Pseudonymizer(KEY))
    assert "short" not in str(short.value).replace("annotators.bob", "")
    with pytest.raises(ValueError, match="reuses"):
        parse_tokens({"annotators": {"a": secret}, "reviewers": {"b": secret}}, "test", Pseudonymizer(KEY))
    assert bearer_token("Bearer abc") == "abc" and bearer_token("Basic abc") is None and bearer_token(None) is None


def test_config_file_validates_and_needs_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.workbench import WorkbenchConfig, WorkbenchError, workbench_args
    from rlhf_ray.config import ConfigError, load_config

    config = load_config(WorkbenchConfig, ROOT / "configs" / "workbench.yaml", [f"output_dir={tmp_path}"])
    assert config.serve.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="sla_hours"):
        load_config(WorkbenchConfig, None, ["queue.sla_hours={nope: 3, default: 1}"])
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.delenv("RLHF_RAY_WORKBENCH_TOKENS", raising=False)
    with pytest.raises(WorkbenchError, match="no sign-in tokens"):
        workbench_args(config)
    monkeypatch.setenv("RLHF_RAY_WORKBENCH_TOKENS", '{"annotators": {"a": "aaaaaaaaaaaaaaaaaaaa"}}')
    with pytest.raises(WorkbenchError, match="curated is not set"):
        workbench_args(config)
