"""End-to-end jobs through the real CLI entry, on a local Ray cluster and tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import JOBS, main
from rlhf_ray.algos.phrases import load_phrase_list
from rlhf_ray.inputs.world import WorldConfig, WorldPromptSource
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.roles.learner import free_port

TINY = ["world.num_prompts=60", "world.population.num_users=30", "world.population.num_annotators=6",
        "shards.rows_per_shard=300", "wandb.mode=disabled"]


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_help_lists_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for job in JOBS:
        assert job.name in out
    assert "ray job submit" in out


@pytest.mark.parametrize("job", [job.name for job in JOBS])
def test_every_job_has_help(job: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([job, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rlhf-ray " + job in capsys.readouterr().out


def test_bad_config_fails_before_any_ray_work(tmp_path: Path) -> None:
    """A fresh process, so we can see that Ray never started: the error comes first, naming the key."""
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "simulate", "--out", str(tmp_path), "world.num_promts=5"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "world.num_promts" in result.stderr and "world.num_prompts" in result.stderr
    assert "Started a local Ray instance" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_wrong_type_names_key_value_and_type(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "shards.rows=many"]) == 2
    err = capsys.readouterr().err
    assert "shards.rows" in err and "many" in err and "int" in err


@pytest.mark.ray
def test_simulate_is_byte_identical_for_a_seed(ray_cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for name in ("first", "second"):
        assert main(["simulate", "--out", str(tmp_path / name), "--rows", "1500", "--seed", "5", *TINY,
                     "world.start_time=2026-01-05T00:00:00Z"]) == 0  # unpinned, the clock starts at the run's time
        outputs.append(_last_json_line(capsys.readouterr().out))
    first, second = (tmp_path / "first", tmp_path / "second")
    files = sorted(p.relative_to(first) for folder in ("shards", "judge/shards")
                   for p in (first / folder).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for folder in ("shards", "judge/shards")
                           for p in (second / folder).rglob("*") if p.is_file())
    assert any(p.parts[0] == "judge" and p.suffix == ".parquet" for p in files)
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert outputs[0]["shards_id"] == outputs[1]["shards_id"]

    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["rows"] == 1500 == sum(f["rows"] for f in manifest["files"])
    assert {f["format"] for f in manifest["files"]} == {"parquet", "jsonl"}
    parquet = next(f for f in manifest["files"] if f["format"] == "parquet")
    assert pq.read_metadata(first / parquet["path"]).num_rows == parquet["rows"]
    truth = (first / "ground_truth" / "malformed.jsonl").read_text().splitlines()
    assert len(truth) == manifest["malformed_rows"] == outputs[0]["malformed_rows"] > 0

    # The judge set (annotator pairs on validation prompts) is a shard set of its own, outside `shards/`.
    judge = json.loads((first / "judge" / "manifest.json").read_text())
    assert judge["rows"] == outputs[0]["judge_rows"] == 1000 == sum(f["rows"] for f in judge["files"])
    assert all((first / "judge" / f["path"]).is_file() for f in judge["files"])
    assert judge["artifact_id"] == outputs[0]["judge_shards_id"] != outputs[0]["shards_id"]
    # The leakage report: what must be 0 is 0, per split and slice.
    leakage = outputs[0]["leakage"]
    for split in ("validation", "test"):
        for counts in leakage[split].values():
            assert counts["shared_texts"] == counts["shared_pairs"] == 0


@pytest.mark.ray
def test_rerun_with_fewer_rows_leaves_no_stale_shards(ray_cluster, tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--rows", "1500", *TINY]) == 0
    assert main(["simulate", "--out", str(tmp_path), "--rows", "400", *TINY]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "shards").rglob("*") if p.is_file())
    assert on_disk == sorted(f["path"] for f in manifest["files"])
    assert main(["simulate", "--out", str(tmp_path), "--rows", "400", "shards.judge_rows=0", *TINY]) == 0
    assert not list((tmp_path / "judge" / "shards").rglob("*.parquet"))


# A few hundred simulated rows hold ~6 gold labels: too few for the data gate to judge κ against the gold accuracies.
TINY_DATA_GATE = ["gates.min_kappa_ratio=null"]
# One epoch of a tiny reward model on a few hundred pairs: its held-out accuracy and its length correlation at
# equal utility are noise around chance and zero, and the canary's captured feedback (how much depends on when the
# operator promotes) moves them between runs, so the reward-model gate would stop iteration 2 at random.
TINY_RM_GATE = ["gates.min_rm_accuracy=0.0", "gates.max_rm_length_correlation=null"]
# The loop's training stages at their cheapest: one short epoch each, small batches and sequences, few
# held-out pairs (the reward model keeps its 6 per prompt: fewer leave its length-bias figure undefined).
TINY_TRAINING = ["sft.references_per_prompt=1", "dpo.heldout_pairs_per_prompt=2",
                 *(f"{stage}.train.{key}" for stage in ("sft", "reward_model", "dpo")
                   for key in ("epochs=1", "batch_size=8", "max_length=64")),
                 "ppo.iterations=2", "ppo.eval_every=2", "ppo.checkpoint_every=2", "ppo.eval_prompts=4",
                 "ppo.eval_samples_per_prompt=1", "ppo.rollout.max_new_tokens=16",
                 "gate.prompts=4", "gate.generation.max_new_tokens=16", "canary.simulation.max_requests=40",
                 "canary.simulation.max_tokens=16", *TINY_RM_GATE, *TINY_DATA_GATE]
# Two PPO iterations cannot beat the SFT model: a gate that only refuses a clearly worse candidate lets the
# loop reach its canary.
LENIENT_GATE = ["gate.thresholds.non_inferiority_margin=0.5", "gate.thresholds.max_yield_drop=1.0",
                "gate.thresholds.max_length_ratio=10", "gate.thresholds.max_cost_ratio=100",
                "gate.thresholds.disqualifying_flags=[]", "gate.thresholds.max_extra_safety_misses=100"]


def _operator_promotes_the_canary(port: int, token: str, replies: list[int]) -> None:
    """An operator watching the canary on `port` promotes it through the admin API once its users have judged a
    few answers (the loop runs its earlier stages first: until then nothing listens)."""
    import time

    import requests

    url, deadline = f"http://127.0.0.1:{port}/v1/canary", time.monotonic() + 1500
    while time.monotonic() < deadline:
        try:
            status = requests.get(url, timeout=10).json()
            judged = sum(variant["judged"] for variant in status["variants"].values())
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
            status, judged = {}, 0
        if status.get("phase") == "running" and judged >= 4:
            replies.append(requests.post(f"{url}/promote", json={"reason": "operator: looks good"}, timeout=60,
                                         headers={"Authorization": f"Bearer {token}"}).status_code)
            return
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1200)  # the whole two-iteration loop, judge stage included: ~10 min on a loaded 2-core machine
def test_loop_simulates_ingests_and_builds_the_model_with_lineage(ray_cluster, tmp_path: Path, capsys) -> None:
    import secrets
    import threading

    out = tmp_path / "quickstart"
    port, token = free_port(), secrets.token_hex(16)
    (tmp_path / "admin.token").write_text(token)
    args = ["loop", "--config", "configs/quickstart.yaml", f"output_dir={out}", "shards.rows=800", *TINY,
            *TINY_TRAINING, *LENIENT_GATE, f"canary.serve.port={port}", "wandb.mode=offline",
            f"canary.admin.token_file={tmp_path / 'admin.token'}"]
    promoted: list[int] = []
    operator = threading.Thread(target=_operator_promotes_the_canary, args=(port, token, promoted), daemon=True)
    operator.start()
    assert main([*args, "iterations=1"]) == 0
    operator.join(timeout=60)
    logs = capsys.readouterr()
    summary = _last_json_line(logs.out)
    assert summary["job"] == "loop"
    planted = [json.loads(line)["value"] for line in (out / "feedback/ground_truth/planted_pii.jsonl").open()]
    assert planted and not any(value in logs.out or value in logs.err for value in planted)
    assert summary["pairs"] > 0 and summary["consensus_method"] == "dawid_skene"
    pairs = pq.read_table(summary["pairs_dir"])
    assert pairs.num_rows == summary["pairs"] and set(pairs.column("source").to_pylist()) >= {"pairwise", "ranking"}
    annotators = pq.read_table(out / "curated" / "annotators.parquet").column("annotator").to_pylist()
    assert annotators and all(a.startswith("ann_") for a in annotators)
    agreement = json.loads(Path(summary["report"]).read_text())
    assert agreement["agreement"]["pairwise"]["overall"]["fleiss_kappa"] is not None
    key_file = out / "secrets" / "pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert Path(summary["model_dir"], "config.json").exists()
    assert 500_000 < summary["num_parameters"] < 2_000_000
    run_dir = Path(summary["wandb_dir"])
    assert run_dir.name.startswith("offline-run-") and any(run_dir.glob("*.wandb"))

    from rlhf_ray.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(summary["model_dir"])
    model = load_causal_lm(summary["model_dir"])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "where is my book package ?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] > prompt["input_ids"].shape[1]

    assert main(["lineage", summary["model_id"][:12], "--root", summary["lineage_root"], "--verify"]) == 0
    captured = capsys.readouterr()
    chain = _last_json_line(captured.out)
    assert chain["artifact_id"] == summary["model_id"]
    assert chain["ancestors"] == [summary["dataset_id"], summary["shards_id"]]
    assert summary["input_rows"] == summary["accepted_rows"] + summary["quarantined_rows"] + summary["duplicate_rows"]
    assert chain["log_ok"] is True
    assert summary["shards_id"] in captured.err and "world-seed-0" in captured.err
    assert main(["lineage", summary["pairs_id"], "--root", summary["lineage_root"]]) == 0
    assert _last_json_line(capsys.readouterr().out)["ancestors"] == [summary["dataset_id"], summary["shards_id"]]

    # The training stages: SFT from the init model, then RM and DPO from the SFT model, on the curated pairs,
    # then PPO from the SFT model against the RM.
    assert summary["stages"] == ["simulate", "ingest", "curate", "init-model", "sft", "train-rm", "train-judge", "dpo",
                                 "ppo", "gate", "canary"]
    assert summary["sft_heldout_loss"] < summary["sft_heldout_loss_before"] and summary["sft_epochs"] == 1
    assert summary["sft_model_dir"] == str(out / "sft" / "model") != summary["model_dir"]
    assert 0 <= summary["rm_heldout_accuracy"] <= 1 and 0 <= summary["rm_heldout_ece"] <= 1
    assert {"rm_heldout_length_correlation_at_equal_utility", "rm_heldout_accuracy_when_longer_is_worse",
            "rm_train_accuracy", "timing/train_rm"} <= set(summary)
    assert 0 <= summary["dpo_heldout_reward_accuracy"] <= 1 and summary["dpo_loss_type"] == "sigmoid"
    assert Path(summary["reward_model_dir"], "reward_config.json").exists()
    assert Path(summary["dpo_policy_dir"], "config.json").exists()
    assert summary["sft_checkpoint"] != summary["rm_checkpoint"] != summary["dpo_checkpoint"]
    upstream = [summary["sft_model_id"], summary["pairs_id"], summary["model_id"], summary["dataset_id"],
                summary["shards_id"]]
    for trained in ("reward_model_id", "dpo_policy_id"):
        assert main(["lineage", summary[trained], "--root", summary["lineage_root"], "--verify"]) == 0
        chain = _last_json_line(capsys.readouterr().out)
        assert chain["ancestors"] == upstream and chain["log_ok"], (trained, chain)
    assert [a.id for a in LineageRegistry(summary["lineage_root"]).ancestors(summary["sft_model_id"])] == [
        summary["model_id"], summary["dataset_id"], summary["shards_id"]]
    assert summary["ppo_iterations"] == 2 and Path(summary["ppo_policy_dir"], "config.json").exists()
    ppo_chain = [a.id for a in LineageRegistry(summary["lineage_root"]).ancestors(summary["ppo_policy_id"])]
    assert ppo_chain[:2] == [summary["sft_model_id"], summary["reward_model_id"]]
    assert {summary["pairs_id"], summary["shards_id"]} <= set(ppo_chain)

    # The judge RM: the judge set (annotator pairs on validation prompts) through its own ingest and curate, then
    # train-rm's code on the SFT backbone; a `judge-model` in lineage whose data is the judge set, not the feedback.
    registry = LineageRegistry(summary["lineage_root"])
    judge = registry.get(summary["judge_model_id"])
    assert judge.kind == "judge-model" and summary["judge_model_dir"] == str(out / "judge/reward_model/reward_model")
    assert summary["judge_pairs"] > 0 and summary["judge_pairs_id"] != summary["pairs_id"]
    assert judge.parents == (summary["sft_model_id"], summary["judge_pairs_id"])
    assert registry.get(summary["judge_pairs_id"]).parents == (summary["judge_dataset_id"],)
    assert registry.get(summary["judge_dataset_id"]).parents == (summary["judge_shards_id"],) != (summary["shards_id"],)
    assert 0 <= summary["judge_heldout_accuracy"] <= 1 and summary["judge_epochs"] == 1

    # The offline gate judged the PPO candidate against the SFT model on validation prompts, the judge RM judging
    # (a lineage event on the candidate), then the canary served both to simulated users and captured their feedback
    # among the feedback shards.
    assert summary["gate_verdict"] == "pass" and summary["gate_candidate_id"] == summary["ppo_policy_id"]
    assert summary["gate_judge"] == summary["judge_model_id"] != "world-utility"
    gate_report = json.loads((out / "gate" / "gate.json").read_text())
    assert gate_report["judge"] == summary["judge_model_id"] and gate_report["split"] == "validation"
    assert summary["gate_superior"] is gate_report["superior"] is (gate_report["win_rate"]["lower"] > 0.5)
    validation = {p.text for p in WorldPromptSource(WorldConfig(num_prompts=60), 0).split("validation")}
    assert gate_report["examples"] and {e["prompt"] for e in gate_report["examples"]} <= validation
    gate_events = [e for e in registry.events(summary["ppo_policy_id"]) if e.event == "gate"]
    assert gate_events and gate_events[-1].payload["verdict"] == "pass"
    assert gate_events[-1].payload["judge"] == summary["judge_model_id"]
    # The operator promoted the canary (the admin API, the thread above): the candidate is the incumbent now.
    assert promoted == [200], promoted
    assert (summary["canary_decision"], summary["canary_decision_source"]) == ("promote", "admin")
    assert summary["canary_requests_sent"] > 0 and summary["incumbent_policy_id"] == summary["ppo_policy_id"]
    captured = sorted((out / "feedback" / "shards" / "canary-iter-1").glob("*.jsonl"))
    assert captured and "stopped" not in summary

    # A second call with iterations=2 skips everything iteration 1 did (its inputs are unchanged) and runs the
    # refresh stages, whose ingest now reads the canary's feedback too.
    assert main([*args, "iterations=2"]) == 0
    logs = capsys.readouterr()
    second = _last_json_line(logs.out)
    assert "stopped" not in second, second["stopped"]
    assert logs.err.count("inputs unchanged: skipped") == len(summary["stages"])
    assert second["iter2/input_rows"] == summary["input_rows"] + sum(
        len(path.read_text().splitlines()) for path in captured)
    assert second["iter2/ppo_policy_dir"] == str(out / "iter-2" / "ppo" / "policy")
    assert second["iter2/gate_verdict"] == "pass"
    # Iteration 2 starts from the promoted policy: PPO trains from it, the gate and the canary compare with it.
    registry = LineageRegistry(summary["lineage_root"])
    incumbent = summary["ppo_policy_id"]
    assert second["iter2/incumbent_at_start"] == incumbent
    assert registry.get(second["iter2/ppo_policy_id"]).parents[0] == incumbent
    assert second["iter2/gate_incumbent_id"] == incumbent == second["iter2/canary_policies"]["incumbent"]
    # Its canary runs on the seed alone: 40 requests, a quarter routed to the canary, reach neither the sequential
    # test's 20 judged answers per arm nor the guardrails' 20 canary requests. Undecided: the incumbent stays.
    assert second["iter2/canary_decision"] == "undecided" and second["incumbent_policy_id"] == incumbent
    # The iteration-2 dataset traces back through the captured feedback to the deployment that served it.
    assert registry.get(second["iter2/dataset_id"]).parents == (summary["shards_id"], summary["canary_feedback_id"])
    assert registry.get(summary["canary_feedback_id"]).parents == (summary["canary_deployment_id"],)
    data_gates = [e for e in registry.events(second["iter2/pairs_id"]) if e.event == "gate"]
    assert data_gates and data_gates[-1].payload["gate"] == "data"

    # Each gate, when it fails, stops the loop naming its failed checks, and the incumbent keeps serving. Rerun on
    # the finished run, a stricter gate re-judges without retraining: iteration 1 stops at that gate's stage.
    for strict, stage, gate, checks, skipped in (
            (["gates.max_quarantine_rate=0.0", "gates.min_fleiss_kappa=1.0"], "curate", "data",
             ["quarantine_rate", "fleiss_kappa"], 3),
            (["gates.min_rm_accuracy=1.0", "gates.max_rm_length_correlation=-1.0"], "train-rm", "reward_model",
             ["length_correlation_at_equal_utility"], 6),
            (["gate.thresholds.require_superiority=true"], "gate", "offline", ["superiority"], 9)):
        assert main([*args, "iterations=2", *strict]) == 0
        logs = capsys.readouterr()
        stopped = _last_json_line(logs.out)
        assert stopped["stopped"].startswith(f"{stage}: {gate} gate failed"), stopped["stopped"]
        assert all(check in stopped["stopped"] for check in checks), stopped["stopped"]
        assert stopped["stopped_iteration"] == 1 and not [key for key in stopped if key.startswith("iter2/")]
        assert logs.err.count("inputs unchanged: skipped") == skipped and "the incumbent keeps serving" in logs.err
        assert stopped["incumbent_policy_id"] == incumbent
    gate_events = [e for e in LineageRegistry(summary["lineage_root"]).events(incumbent) if e.event == "gate"]
    assert gate_events[-1].payload["verdict"] == "fail"  # the stricter offline gate's own event


def _another_day_of_feedback(shards: Path, folder: str) -> int:
    """New feedback lands: the pairwise rows of the existing shards as new annotation items (new signal and item
    ids), committed as one JSONL shard in `folder` (written under a hidden name, then renamed). Returns its rows."""
    rows = []
    for path in sorted(shards.glob("pairwise/*")):
        read = (pq.read_table(path).to_pylist() if path.suffix == ".parquet"
                else [json.loads(line) for line in path.read_text().splitlines()])
        rows += [{**row, "signal_id": str(uuid.uuid4()), "item_id": f"{row['item_id']}-{folder}"} for row in read
                 if isinstance(row, dict) and isinstance(row.get("item_id"), str)]
    target = shards / folder
    target.mkdir()
    (target / ".part-00000.jsonl.tmp").write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
    os.rename(target / ".part-00000.jsonl.tmp", target / "part-00000.jsonl")
    return len(rows)


@pytest.mark.ray
@pytest.mark.slow
def test_loop_watch_runs_an_iteration_when_new_feedback_fires_a_trigger(ray_cluster, tmp_path: Path, capsys) -> None:
    """`loop --watch`: feedback landing after an iteration belongs to the next one. Too little of it holds the
    trigger (a lineage event, nothing trained); enough of it fires the trigger and the refresh stages run on it."""
    out = tmp_path / "loop"
    args = ["loop", "--config", "configs/quickstart.yaml", f"output_dir={out}", "shards.rows=600", *TINY,
            "stages=[simulate,ingest,curate]", "iterations=1", "watch.poll_seconds=0.2", "watch.drift_alert=false",
            *TINY_DATA_GATE]
    assert main(args) == 0
    first = _last_json_line(capsys.readouterr().out)
    new_rows = _another_day_of_feedback(out / "feedback" / "shards", "day-2")
    assert new_rows > 50

    # A plain re-run keeps iteration 1 as it was: the new shard is not among what its ingest read.
    assert main(args) == 0
    assert capsys.readouterr().err.count("inputs unchanged: skipped") == 3

    watch = ["loop", "--watch", *args[1:]]
    assert main([*watch, "watch.min_new_rows=100000", "watch.max_wait_seconds=0.5"]) == 0
    held = _last_json_line(capsys.readouterr().out)
    assert [t["fired"] for t in held["watch_triggers"]] == [False]
    assert held["watch_triggers"][0]["new_rows"] > 0 and "iter2/pairs_id" not in held

    assert main([*watch, "watch.min_new_rows=50", "watch.drift_alert=true", "watch.max_iterations=2"]) == 0
    logs = capsys.readouterr()
    fired = _last_json_line(logs.out)
    assert [t["fired"] for t in fired["watch_triggers"]] == [True], logs.err
    # The drift check compared the new dataset version with iteration 1's (its report is kept with the iteration).
    assert fired["watch_triggers"][0]["drift_alerts"] is not None
    assert json.loads((out / "iter-2" / "trigger" / "drift.json").read_text())["inputs"]["reference"]["version"] == (
        first["dataset_version"])
    assert fired["iter2/input_rows"] == first["input_rows"] + new_rows
    assert fired["iter2/dataset_id"] != first["dataset_id"] and fired["last_iteration_dir"] == str(out / "iter-2")
    assert Path(fired["iter2/pairs_dir"]).is_relative_to(out / "iter-2")
    state = json.loads((out / "loop_state.json").read_text())["iterations"]
    assert set(state["2"]) == {"ingest", "curate"}
    assert "day-2/part-00000.jsonl" in {path for path, _ in state["2"]["ingest"]["inputs"]}
    assert "day-2/part-00000.jsonl" not in {path for path, _ in state["1"]["ingest"]["inputs"]}
    registry = LineageRegistry(fired["lineage_root"])
    simulated, dropped_in = registry.get(fired["iter2/dataset_id"]).parents  # no manifest: its own artifact
    assert simulated == first["shards_id"] and registry.get(dropped_in).kind == "feedback"
    events = [e for e in registry.events(fired["iter2/dataset_id"]) if e.event == "trigger"]
    assert [e.payload["fired"] for e in events][-1] is True and events[-1].payload["iteration"] == 2


@pytest.mark.ray
@pytest.mark.slow
def test_loop_sweep_stage_chooses_the_ppo_settings_and_is_a_lineage_parent_of_the_policy(ray_cluster, tmp_path: Path,
                                                                                         capsys) -> None:
    """With `sweep` listed, Ray Tune tries the search space on the iteration's reward model under ASHA, PPO trains
    with the chosen settings, and the policy's lineage names the sweep (and through it, every trial).

    The trials run one after the other, validation figures every iteration, and answer at eval temperature 50
    (random tokens): the first, in 4 tokens, scores ≈ 0 true utility; the second, in up to 128, pays the
    verbosity cost far beyond any prompt's ideal length, so ASHA stops it at its first rung (iteration 1 of 2).
    A simulation study: the world's hidden utility judges the trials (`judge_by: oracle`), on validation; the
    chosen trial's test-split utility is read once, after the choice."""
    out = tmp_path / "loop"
    args = ["loop", "--config", "configs/quickstart.yaml", f"output_dir={out}", "shards.rows=800", *TINY,
            *TINY_TRAINING, "stages=[simulate,ingest,curate,init-model,sft,train-rm,sweep,ppo]", "iterations=1",
            "sweep.search_space={rollout.max_new_tokens: {grid: [4, 128]}, eval_temperature: {grid: [50.0]}}",
            "sweep.scheduler.kind=asha", "sweep.scheduler.grace_period=1", "sweep.max_concurrent_trials=1",
            "ppo.eval_every=1", "sweep.trial_iterations=2", "sweep.hacking.disqualify=[]", "sweep.judge_by=oracle"]
    assert main(args) == 0
    summary = _last_json_line(capsys.readouterr().out)
    assert summary["sweep_num_trials"] == 2 and Path(summary["sweep_best_config"]).exists()
    trials = {t["param/rollout.max_new_tokens"]: t
              for t in json.loads((out / "sweep" / "report.json").read_text())["trials"]}
    assert (trials[4]["status"], trials[4]["iterations"]) == ("completed", 2), trials
    assert (trials[128]["status"], trials[128]["iterations"]) == ("stopped", 1), trials  # ASHA stopped it early
    assert summary["sweep_chosen_params"] == {"rollout.max_new_tokens": 4, "eval_temperature": 50.0}
    report = json.loads((out / "sweep" / "report.json").read_text())
    assert report["chosen/test_true_utility"] == summary["sweep_chosen/test_true_utility"]
    assert "not used for choosing" in report["test_split"]["note"] and report["test_split"]["prompts"] == 4
    registry = LineageRegistry(summary["lineage_root"])
    policy = registry.get(summary["ppo_policy_id"])
    assert policy.config["rollout"]["max_new_tokens"] == 4 and summary["sweep_id"] in policy.parents
    assert main(["lineage", summary["ppo_policy_id"], "--root", summary["lineage_root"]]) == 0
    chain = _last_json_line(capsys.readouterr().out)
    assert {summary["sweep_id"], summary["reward_model_id"], summary["pairs_id"]} <= set(chain["ancestors"])
    assert main(args) == 0  # a re-run finds every input unchanged, the sweep's included
    assert capsys.readouterr().err.count("inputs unchanged: skipped") == 8


def test_loop_stage_without_its_input_stage_is_a_config_error(tmp_path: Path, capsys) -> None:
    """`dpo` reads the SFT model: listing it without `sft` fails before anything runs, naming the missing stage."""
    assert main(["loop", f"output_dir={tmp_path}", "stages=[simulate,ingest,curate,init-model,dpo]"]) == 2
    err = capsys.readouterr().err
    assert "stages" in err and "'dpo'" in err and "needs stage(s) 'sft'" in err
    assert main(["loop", f"output_dir={tmp_path}", "stages=[simulate,ppo]"]) == 2
    assert "'train-rm'" in capsys.readouterr().err  # the valid stage names are listed
    assert not any(tmp_path.iterdir())


def test_loop_stages_read_the_outputs_of_their_input_stages() -> None:
    from jobs.loop import REQUIRES, RUNNERS, STAGES, LoopConfig, stage_configs

    assert list(RUNNERS) == list(STAGES) and set(REQUIRES) <= set(STAGES)
    # the sweep is opt-in; import reads a user's files (`source`)
    assert LoopConfig().stages == [stage for stage in STAGES if stage not in ("sweep", "import")]
    config = LoopConfig(output_dir="runs/x", stages=["dpo", "sft", "init-model", "ingest", "simulate", "curate"])
    assert config.stages == ["simulate", "ingest", "curate", "init-model", "sft", "dpo"]  # pipeline order
    stages = stage_configs(config)
    assert stages.sft.model_path == stages.model.model_dir
    assert stages.reward_model.model_path == stages.dpo.model_path == stages.dpo.reference_path == "runs/x/sft/model"
    assert stages.reward_model.pairs == stages.dpo.pairs == stages.curate.output_dir
    jobs = [s for s in stages if s is not None and s is not stages.judge]
    assert {s.lineage.root for s in [*jobs, stages.judge.ingest, stages.judge.curate, stages.judge.reward_model]} == {
        "runs/x/lineage"}
    assert stages.sweep is None and stages.gate is None  # not listed
    # The judge RM: the judge set through its own ingest and curate, then train-rm's code on the SFT backbone, with
    # the reward model's settings but one epoch; it never learns a phrase list (that is the policy's penalty).
    judge = stages.judge
    assert judge.ingest.input == "runs/x/feedback/judge/shards" != stages.ingest.input
    assert judge.curate.input == judge.ingest.output_dir == "runs/x/judge/dataset"
    assert judge.curate.gold == "runs/x/feedback/judge/gold/gold_items.jsonl" and not judge.curate.phrases.enabled
    assert (judge.reward_model.model_path, judge.reward_model.pairs, judge.reward_model.role) == (
        "runs/x/sft/model", judge.curate.output_dir, "judge")
    assert judge.reward_model.train.epochs == 1 and judge.reward_model.train.lr == stages.reward_model.train.lr
    swept = stage_configs(LoopConfig(output_dir="runs/x", stages=[s for s in STAGES if s != "import"]))
    assert swept.sweep.output_dir == "runs/x/sweep" and swept.sweep.ppo.model_path == swept.ppo.model_path
    # The gate, the sweep and PPO's validation figures are judged by the judge RM (the default `judge_by`).
    judge_model = "runs/x/judge/reward_model/reward_model"
    assert "train-judge" in LoopConfig().stages and swept.gate.judge_by == swept.sweep.judge_by == "judge_rm"
    assert swept.gate.judge_path == swept.ppo.judge_model_path == swept.sweep.ppo.judge_model_path == judge_model
    assert swept.sweep.metric == "eval/judge_reward"
    own = stage_configs(LoopConfig(output_dir="runs/x", stages=["simulate", "ingest", "curate", "init-model", "sft",
                                                                "train-rm", "ppo", "gate"], gate={"judge_path": "j"}))
    assert own.gate.judge_path == "j" and own.ppo.judge_model_path is None
    oracle = stage_configs(LoopConfig(output_dir="runs/x", gate={"judge_by": "oracle"}))
    assert oracle.gate.judge_by == "oracle" and oracle.gate.judge_path is None


BYO_SOURCE = {"base_model": "my/base",
              "feedback": [{"format": "trl-preference", "input": "prefs.jsonl"},
                           {"format": "jsonl", "input": "logs.jsonl", "map": {"rating": "thumb"}}],
              "judge_feedback": [{"format": "openai-preference", "input": "judge.jsonl"}],
              "eval_pairs": {"format": "hh-rlhf", "input": "heldout.jsonl"}, "sft_data": "sft.jsonl",
              "prompts": "train.jsonl", "eval_prompts": "validation.jsonl", "test_prompts": "test.jsonl",
              "model": {"chat_template": "chatml"}}


def test_a_loop_with_a_source_reads_the_users_model_and_files_instead_of_the_world() -> None:
    """Bring your own: the base model replaces init-model, imports replace simulate, every model-loading stage gets
    the source's chat template, PPO and the gate read the prompt files, and the gate's candidate may be DPO's."""
    from jobs.loop import LoopConfig, stage_configs
    from jobs.loop_config import SOURCE_STAGES

    config = LoopConfig(output_dir="runs/x", source=BYO_SOURCE, gate={"judge_path": "mypkg.judges:score"})
    assert config.stages == SOURCE_STAGES and "simulate" not in config.stages and "init-model" not in config.stages
    stages = stage_configs(config)
    imports = stages.imports
    assert [(job.format, job.input, job.output_dir) for job in imports.feedback] == [
        ("trl-preference", "prefs.jsonl", "runs/x/feedback/shards/import-0-trl-preference"),
        ("jsonl", "logs.jsonl", "runs/x/feedback/shards/import-1-jsonl")]
    assert imports.feedback[1].field_map == {"rating": "thumb"} and stages.ingest.input == "runs/x/feedback/shards"
    assert imports.judge == []  # judge files are imported only for the train-judge stage
    judged = stage_configs(LoopConfig(output_dir="runs/x", source=BYO_SOURCE, stages=[*SOURCE_STAGES, "train-judge"]))
    assert judged.imports.judge[0].output_dir.startswith(judged.judge.ingest.input + "/")  # the judge set's shards
    assert stages.curate.gold is None and stages.judge.curate.gold is None  # no gold without the world
    assert (stages.sft.model_path, stages.sft.data) == ("my/base", "sft.jsonl")
    assert {s.model.chat_template for s in (stages.sft, stages.reward_model, stages.dpo, stages.ppo,
                                            stages.judge.reward_model)} == {"chatml"}
    assert (stages.reward_model.eval_pairs, stages.reward_model.eval_format) == ("heldout.jsonl", "hh-rlhf")
    assert (stages.dpo.eval_pairs, stages.dpo.eval_format) == ("heldout.jsonl", "hh-rlhf")
    assert (stages.judge.reward_model.eval_pairs, stages.judge.reward_model.eval_format) == ("heldout.jsonl", "hh-rlhf")
    assert (stages.ppo.prompts.train, stages.ppo.prompts.validation, stages.ppo.prompts.test) == (
        "train.jsonl", "validation.jsonl", "test.jsonl")
    assert (stages.gate.prompt_file, stages.gate.test_prompt_file, stages.gate.judge_path) == (
        "validation.jsonl", "test.jsonl", "mypkg.judges:score")
    assert stages.gate.candidate_path == stages.canary.canary_path == "runs/x/ppo/policy"
    dpo_gated = stage_configs(LoopConfig(output_dir="runs/x", source=BYO_SOURCE, gate={"candidate": "dpo",
                                                                                      "judge_path": "j"}))
    assert dpo_gated.gate.candidate_path == dpo_gated.canary.canary_path == "runs/x/dpo/policy"
    for stages_, error in ((["simulate", "import", "ingest"], "belong to simulation"),
                           (["import", "ingest", "curate", "sft", "train-rm", "train-judge"], None),
                           (["import", "ingest", "curate", "sft", "train-rm", "ppo", "gate"], "judge"),
                           (["import", "ingest", "curate", "sft", "dpo", "gate"], "gate.candidate")):
        if error is None:
            LoopConfig(output_dir="runs/x", source=BYO_SOURCE, stages=stages_)
            continue
        with pytest.raises(ValueError, match=error):
            LoopConfig(output_dir="runs/x", source=BYO_SOURCE, stages=stages_)
    with pytest.raises(ValueError, match=r"train-judge.*judge_feedback"):
        LoopConfig(output_dir="runs/x", source={**BYO_SOURCE, "judge_feedback": []},
                   stages=["import", "ingest", "curate", "sft", "train-judge"])
    with pytest.raises(ValueError, match="format 'csv' is not an import format"):
        LoopConfig(source={**BYO_SOURCE, "feedback": [{"format": "csv", "input": "x.csv"}]})
    with pytest.raises(ValueError, match=r"'import' reads source\.feedback"):
        LoopConfig(stages=["import", "ingest"])


def test_a_loop_gate_or_sweep_judged_by_a_judge_rm_needs_one(tmp_path: Path, capsys) -> None:
    """Judged by the judge RM (the default) with no train-judge stage and no judge path: a config error naming the
    field, before anything runs."""
    without_judge = "stages=[simulate,ingest,curate,init-model,sft,train-rm,ppo,gate]"
    assert main(["loop", f"output_dir={tmp_path}", without_judge]) == 2
    err = capsys.readouterr().err
    assert "gate.judge_by='judge_rm' needs a judge reward model" in err and "'train-judge'" in err
    swept = "stages=[simulate,ingest,curate,init-model,sft,train-rm,sweep,ppo]"
    assert main(["loop", f"output_dir={tmp_path}", swept]) == 2
    assert "sweep.judge_by='judge_rm' needs the judge reward model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_lineage_of_unknown_id_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lineage", "model-doesnotexist", "--root", str(tmp_path)]) == 1
    assert "model-doesnotexist" in capsys.readouterr().err


@pytest.mark.ray
def test_standalone_jobs_chain_into_one_lineage(ray_cluster, tmp_path: Path, capsys, monkeypatch) -> None:
    """simulate → ingest → curate as separate commands, no lineage root given: one log holds the chain. Curate is
    given a (tiny, untrained) reward model: active learning adds its margin uncertainty to the disagreement."""
    from rlhf_ray.models import init_model, load_tokenizer
    from rlhf_ray.sim import World, WorldConfig
    from rlhf_ray.training.reward_model import RewardModel

    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", "1f" * 32)
    feedback, dataset, qa = tmp_path / "feedback", tmp_path / "dataset", tmp_path / "qa"
    assert main(["simulate", "--out", str(feedback), "--rows", "1200", *TINY]) == 0
    assert main(["ingest", "--input", str(feedback / "shards"), "--out", str(dataset), "wandb.mode=disabled"]) == 0
    card = init_model(World(WorldConfig(num_prompts=60), 0).corpus(), tmp_path / "policy", "tiny", seed=0)
    RewardModel.from_causal_lm(card.path, seed=0).save_pretrained(tmp_path / "rm")
    load_tokenizer(card.path).save_pretrained(tmp_path / "rm")
    curate = ["curate", "--input", str(dataset), "--gold", str(feedback / "gold" / "gold_items.jsonl"), "--out",
              str(qa), "wandb.mode=disabled"]
    assert main([*curate, f"active.reward_models={tmp_path / 'no-such-rm'}"]) == 1
    assert "no-such-rm" in capsys.readouterr().err
    assert main([*curate, f"active.reward_models={tmp_path / 'rm'}"]) == 0
    curated = _last_json_line(capsys.readouterr().out)
    assert curated["active_learning_uncertainty"] == "margin" and curated["active_learning_picks"] > 0
    picks = pq.read_table(qa / "active_learning" / f"{curated['pairs_version']}.parquet").to_pylist()
    assert all(0 < p["uncertainty"] <= 1 and p["score"] == pytest.approx(p["disagreement"] + p["uncertainty"],
                                                                          abs=1e-5) for p in picks)
    assert main(["lineage", curated["pairs_id"], "--root", str(feedback / "lineage"), "--verify"]) == 0
    chain = _last_json_line(capsys.readouterr().out)
    assert [a.split("-")[0] for a in chain["ancestors"]] == ["dataset", "shards"] and chain["log_ok"]
    # the canned-phrase list learned from the pairs: a JSON list, current in phrases/LATEST, child of the pairs
    assert load_phrase_list(qa / "phrases") == json.loads(Path(curated["phrase_list"]).read_text())
    assert len(load_phrase_list(qa / "phrases")) == curated["phrases"]
    assert main(["lineage", curated["phrase_list_id"], "--root", str(feedback / "lineage"), "--verify"]) == 0
    assert _last_json_line(capsys.readouterr().out)["ancestors"][0] == curated["pairs_id"]


def test_curate_without_input_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["curate", "wandb.mode=disabled"]) == 1
    assert "--input" in capsys.readouterr().err


def _kill_a_learner_process_after_a_checkpoint(ppo_dir: Path, killed: list[int]) -> None:
    """SIGKILL the process of a live PolicyLearner actor (Ray titles its worker `ray::PolicyLearner…`) once the PPO
    run has written a checkpoint."""
    import signal
    import time

    import psutil

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if (ppo_dir / "checkpoints" / "latest").exists():
            for process in psutil.process_iter(["pid", "cmdline"]):
                if (process.info["cmdline"] or [""])[0].startswith("ray::PolicyLearner"):
                    os.kill(process.info["pid"], signal.SIGKILL)
                    killed.append(process.info["pid"])
                    return
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.slow
def test_a_loop_whose_driver_or_learner_is_killed_resumes_at_its_first_incomplete_stage(ray_cluster, tmp_path: Path,
                                                                                        capsys) -> None:
    """Fault drills on one short loop: (1) SIGKILL the loop driver (and its Ray) after curate; (2) in the re-run,
    SIGKILL a PPO learner's process after its first checkpoint, with no in-run recovery allowed, so the PPO stage
    fails. Each re-run skips what finished and the last one completes, PPO from its checkpoint, leaving no
    half-written artifact, duplicated dataset version or repeated iteration in the PPO history."""
    import signal
    import threading
    import time

    out = tmp_path / "loop"
    args = ["--config", "configs/quickstart.yaml", f"output_dir={out}", "shards.rows=800", *TINY, *TINY_TRAINING,
            "stages=[simulate,ingest,curate,init-model,sft,train-rm,ppo]", "iterations=1", "ppo.iterations=6",
            "ppo.checkpoint_every=2", "ppo.eval_every=6", "ppo.max_learner_recoveries=0"]
    state = out / "loop_state.json"
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "loop", *args, "ray.address=local"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (state.exists() and "curate" in json.loads(state.read_text())["iterations"].get("1", {})):
            assert process.poll() is None, "the loop ended before it could be killed"
            assert time.monotonic() < deadline, "curate did not finish in time"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = set(json.loads(state.read_text())["iterations"]["1"])
    assert {"simulate", "ingest", "curate"} <= finished and "sft" not in finished

    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_learner_process_after_a_checkpoint, args=(out / "ppo", killed),
                              daemon=True)
    killer.start()
    from ray.exceptions import RayError

    with pytest.raises(RayError):
        main(["loop", *args])
    killer.join(timeout=5)
    err = capsys.readouterr().err
    assert killed and "stage ppo failed" in err and "re-run the same command to resume here" in err
    for stage in finished:
        assert f"{stage} → " in err and err.count("inputs unchanged: skipped") == len(finished)
    recorded = set(json.loads(state.read_text())["iterations"]["1"])
    assert recorded == {"simulate", "ingest", "curate", "init-model", "sft", "train-rm"}
    assert (out / "ppo" / "checkpoints" / "latest").exists() and not (out / "ppo" / "policy").exists()

    assert main(["loop", *args]) == 0
    err = capsys.readouterr().err
    assert err.count("inputs unchanged: skipped") == len(recorded)
    summary = json.loads(state.read_text())["iterations"]["1"]["ppo"]["figures"]
    assert summary["iterations"] == 6 and 0 < summary["iterations_this_run"] < 6  # resumed, not restarted
    history = [json.loads(line)["iteration"] for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert history == list(range(7)), history
    # A write the kill interrupted can only have left a hidden temporary (readers skip those), never a partial
    # file or directory under a final name.
    assert all(p.name.startswith(".") for p in out.rglob("*") if ".tmp" in p.name)
    for model in (out / "model", out / "sft" / "model"):
        assert (model / "config.json").exists() and any(model.glob("*.safetensors"))
    versions = [p.name for p in (out / "dataset" / "curated").iterdir()]
    assert len(versions) == 1, f"one dataset version, not a duplicate per run: {versions}"
