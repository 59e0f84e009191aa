"""`rlhf-ray sweep`: config checks, and real Ray Tune sweeps of PPO trials on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.ppo import PPOConfig
from jobs.sweep import SweepError, check_fits, trial_bundles
from jobs.sweep_config import SweepConfig, trial_config
from rlhf_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides) -> SweepConfig:
    """A sweep judged by a judge RM (the default `judge_by`) at a path of its own unless `ppo` says otherwise."""
    return SweepConfig.model_validate({**overrides, "ppo": {"judge_model_path": "judge", **overrides.get("ppo", {})}})


def test_search_space_keys_are_checked_against_the_ppo_schema() -> None:
    with pytest.raises(ValueError, match=r"search_space.kl.coeff=0.1 is not a valid PPO setting"):
        _config(search_space={"kl.coeff": {"grid": [0.1]}})
    with pytest.raises(ValueError, match=r"search_space.kl.coef=-1.0 is not a valid PPO setting"):
        _config(search_space={"kl.coef": {"grid": [-1.0]}})
    with pytest.raises(ValueError, match="cannot change 'output_dir'"):
        _config(search_space={"output_dir": {"grid": ["x"]}})
    with pytest.raises(ValueError, match="cannot change 'eval_split'"):  # trials are compared on validation only
        _config(search_space={"eval_split": {"grid": ["validation", "test"]}})
    with pytest.raises(ValueError, match="exactly one of grid, choice, uniform, loguniform"):
        _config(search_space={"kl.coef": {"grid": [0.1], "uniform": [0.0, 1.0]}})
    with pytest.raises(ValueError, match="low < high"):
        _config(search_space={"kl.coef": {"uniform": [1.0, 0.5]}})
    with pytest.raises(ValueError, match="low > 0"):
        _config(search_space={"kl.coef": {"loguniform": [0.0, 0.5]}})
    with pytest.raises(ConfigError, match="grid needs at least one value"):
        load_config(SweepConfig, None, ["search_space={kl.coef: {grid: []}}"])


def test_scheduler_and_judge_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"grace_period=3 must be a multiple of ppo\.eval_every=2"):
        _config(ppo={"eval_every": 2}, scheduler={"grace_period": 3})
    # judged by the judge RM by default: without its path, a config error naming the field
    with pytest.raises(ValueError, match=r"judge_by='judge_rm' needs ppo\.judge_model_path \(--judge-model DIR"):
        _config(ppo={"judge_model_path": None})
    assert _config().metric == "eval/judge_reward"
    # the world's hidden utility judges only when asked for, only the world's prompts, and only on validation
    assert _config(judge_by="oracle", ppo={"judge_model_path": None}).metric == "eval/true_utility"
    with pytest.raises(ValueError, match=r"judge_by='oracle' reads the world's hidden utility, but ppo\.prompts"):
        _config(judge_by="oracle", ppo={"prompts": {"train": "t.jsonl", "validation": "v.jsonl"}})
    with pytest.raises(ValueError, match=r"ppo\.eval_split='test': a sweep chooses on 'validation'"):
        _config(judge_by="oracle", ppo={"eval_split": "test", "judge_model_path": None})
    with pytest.raises(ValueError, match="needs num_cpus or num_gpus > 0"):
        _config(ppo={"reference_num_cpus": 0.0})


def test_every_config_file_loads_and_the_trials_fit_two_cores() -> None:
    config = load_config(SweepConfig, ROOT / "configs" / "sweep.yaml")
    bundles = trial_bundles(config)
    # driver, 2 rollout workers, learner, reward scorer, reference, judge RM
    assert bundles[0] == {"CPU": config.trial_cpus} and len(bundles) == 1 + 2 + 1 + 1 + 1 + 1
    check_fits(config, {"CPU": 2.0})
    with pytest.raises(SweepError, match=r"2 concurrent trial\(s\) × 1.4 CPU = 2.8 CPU"):
        check_fits(config.model_copy(update={"max_concurrent_trials": 2}), {"CPU": 2.0})


def test_trial_config_applies_the_trial_settings_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    base = PPOConfig(model_path="m").model_dump(mode="json")
    config = trial_config(base, {"kl.coef": 0.3, "reward.verbosity_coef": 2.0}, tmp_path / "t1")
    assert (config.kl.coef, config.reward.verbosity_coef, config.output_dir) == (0.3, 2.0, str(tmp_path / "t1"))
    assert not config.resume and config.wandb.mode == "disabled"
    (tmp_path / "t1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t1" / "checkpoints" / "latest").write_text("iter-000002")
    assert trial_config(base, {}, tmp_path / "t1").resume


def test_the_chosen_trial_is_measured_once_on_the_test_split_after_the_choice(tmp_path: Path) -> None:
    """The report chooses on validation quality; only then is the chosen trial's exported policy measured, once, on
    the test split, and that figure is labelled as not used for choosing. It cannot change the choice: the trial
    with the best validation figure wins even when another would score higher on test."""
    from jobs.sweep_report import TEST_NOTE, write_report
    from rlhf_ray.evaluation.trials import TrialOutcome

    config = _config(ppo={"model_path": "sft"}, search_space={"kl.coef": {"grid": [0.05, 0.2]}})
    start = {"reward": 0.0, "judge_reward": 0.0, "words": 20.0, "canned_rate": 0.0}
    outcomes = [TrialOutcome(f"trial-{coef}", {"kl.coef": coef}, "completed", 4, start,
                             {"reward": 0.1, "judge_reward": judged, "words": 20.0, "canned_rate": 0.0}, kl=0.1)
                for coef, judged in ((0.05, 0.3), (0.2, 0.6))]
    for outcome in outcomes:
        (tmp_path / "trials" / outcome.trial_id).mkdir(parents=True)
        (tmp_path / "trials" / outcome.trial_id / "summary.json").write_text(
            json.dumps({"policy_dir": f"/policies/{outcome.trial_id}"}))
    calls = []

    def measure(settings: PPOConfig, policy_dir: str) -> dict[str, float]:
        calls.append((settings.kl.coef, policy_dir))
        return {"true_utility": 0.42, "prompts": 8, "answers": 16}

    report = write_report(config, outcomes, tmp_path, measure)
    assert report["chosen_trial"] == "trial-0.2" and report["chosen/judge_reward"] == 0.6  # chosen on validation
    assert calls == [(0.2, "/policies/trial-0.2")]  # once, the chosen trial's own settings and policy
    assert report["chosen/test_true_utility"] == 0.42
    assert report["test_split"] == {"prompts": 8, "answers": 16, "note": TEST_NOTE} and "not used for choosing" in (
        TEST_NOTE)
    assert json.loads((tmp_path / "report.json").read_text())["chosen/test_true_utility"] == 0.42
    # without an oracle (a user's prompts) nothing is read on test
    assert "chosen/test_true_utility" not in write_report(config, outcomes, tmp_path / "again")


BIASED_WORLD = {"num_prompts": 200, "population": {"verbosity_bias_range": [0.5, 0.8]}}


@pytest.fixture(scope="module")
def verbose_rm(trained_policy: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A single `preference` head on the SFT backbone, trained on pairs from annotators who often prefer the
    longer answer: it pays for words (no concision head to counter it, unlike `trained_policy`'s RM)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.train_rm import TrainRMConfig, train_reward_model
    from rlhf_ray.annotation.curate import CurateSettings, curate
    from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
    from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
    from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
    from rlhf_ray.sim.shards import build_shard_rows

    root = tmp_path_factory.mktemp("verbose-rm")
    world_config = WorldConfig.model_validate(BIASED_WORLD)
    world = World(world_config, 0)
    clean = ShardConfig(rows=100, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    tables = {}
    for signal_type, rows in (("pairwise", 2400), ("ranking", 600)):
        built, _ = build_shard_rows(world, clean, ShardSpec(signal_type, 0, rows, "parquet"))
        tables[signal_type] = pa.Table.from_pylist(built, schema=SIGNAL_SCHEMAS[SignalType(signal_type)])
    (root / "pairs").mkdir()
    pq.write_table(curate(tables, {}, CurateSettings()).pairs, root / "pairs" / "part-0.parquet")
    summary = train_reward_model(TrainRMConfig(
        model_path=trained_policy["sft"]["model_dir"], pairs=str(root / "pairs"), output_dir=str(root / "rm"),
        world=world_config, ray=RayConfig(num_cpus=2), wandb=WandbConfig(mode="disabled"),
        lineage=LineageConfig(root=str(root / "lineage")),
        train={"epochs": 2, "batch_size": 16, "lr": 1e-3, "objectives": {"preference": 1.0}}))
    assert summary["heldout_length_correlation_at_equal_utility"] > 0.3, summary
    return summary["reward_model_dir"]


def _sweep_overrides(policy: str, reward: str, out: Path) -> list[str]:
    return [f"ppo.model_path={policy}", f"ppo.reward.model_path={reward}", f"output_dir={out}",
            "ppo.world.num_prompts=200", "ppo.iterations=6", "ppo.eval_every=2", "ppo.checkpoint_every=2",
            "ppo.eval_prompts=16", "ppo.eval_samples_per_prompt=2", "ppo.rollout.max_new_tokens=40",
            "ppo.learner.lr=5.0e-4", "scheduler.grace_period=2", "wandb.mode=offline"]


@pytest.mark.ray
@pytest.mark.slow
def test_four_trial_sweep_reports_flags_the_hack_and_writes_a_loadable_config(
        ray_cluster, trained_policy: dict, verbose_rm: str, tmp_path: Path) -> None:
    from jobs.sweep import run

    out = tmp_path / "sweep"
    # a simulation study: the world's hidden utility judges (on validation) whether the length hack is a hack
    overrides = [*_sweep_overrides(trained_policy["sft"]["model_dir"], verbose_rm, out),
                 "search_space={kl.coef: {grid: [0.01, 0.1]}, reward.verbosity_coef: {grid: [0.0, 2.0]}}",
                 "scheduler.kind=fifo", "judge_by=oracle", "ppo.judge_model_path=null"]
    summary = run(load_config(SweepConfig, ROOT / "configs" / "sweep.yaml", overrides))

    assert summary["num_trials"] == 4
    report = json.loads((out / "report.json").read_text())
    trials = report["trials"]
    assert {t["status"] for t in trials} == {"completed"} and {t["iterations"] for t in trials} == {6}
    for name in ("trials.csv", "trials.json", "reward_vs_quality.png", "pareto.png", "curves.png"):
        assert (out / name).stat().st_size > 1000 if name.endswith(".png") else (out / name).exists()
    assert report["pareto"], "a non-empty set of trials is never entirely dominated"
    # With the verbosity-biased RM and no length penalty, the policy learns to write more words than its
    # start and more than the penalised trials do.
    unpenalised = [t for t in trials if t["param/reward.verbosity_coef"] == 0.0]
    penalised = [t for t in trials if t["param/reward.verbosity_coef"] == 2.0]
    assert min(t["end/words"] for t in unpenalised) > max(t["end/words"] for t in penalised)
    assert any("length_drift" in t["flags"] or "reward_up_quality_down" in t["flags"] for t in unpenalised)
    chosen = next(t for t in trials if t["chosen"])
    assert chosen["trial_id"] == report["chosen_trial"]
    best = load_config(PPOConfig, out / "best_ppo.yaml")
    assert best.kl.coef == chosen["param/kl.coef"] and best.reward.verbosity_coef == chosen[
        "param/reward.verbosity_coef"]
    assert not best.resume and best.model_path == trained_policy["sft"]["model_dir"]
    # after the choice, the chosen trial's policy on the test split, once
    assert np.isfinite(summary["chosen/test_true_utility"]) and summary["test_split"]["prompts"] == 16
    # wandb: one offline run per trial through Tune's callback
    assert len(list((out / "wandb").rglob("offline-run-*"))) >= 4


@pytest.mark.ray
@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
        ray_cluster, trained_policy: dict, tmp_path: Path) -> None:
    from jobs.sweep import run

    out = tmp_path / "sweep"
    rm = trained_policy["rm"]["reward_model_dir"]
    # what is under test is the resume, not the trials' quality: short answers, a small held-out evaluation
    overrides = [*_sweep_overrides(trained_policy["sft"]["model_dir"], rm, out), "ppo.iterations=2",
                 "ppo.rollout.max_new_tokens=8", "ppo.eval_prompts=4", "ppo.eval_samples_per_prompt=1",
                 "judge_by=oracle", "ppo.judge_model_path=null",
                 "search_space={reward.verbosity_coef: {grid: [0.0, 1.0]}}", "scheduler.kind=fifo",
                 "wandb.mode=disabled", "ray.address=local", "ray.num_cpus=2"]
    command = [sys.executable, "-m", "jobs.cli", "sweep", "--config", str(ROOT / "configs" / "sweep.yaml"),
               *overrides]
    env = {**os.environ, "WANDB_SILENT": "true", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not list((out / "trials").glob("*/summary.json")):
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(1)
        time.sleep(3)  # let Tune record the finished trial in its experiment state
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {path.parent.name: path.stat().st_mtime_ns for path in (out / "trials").glob("*/summary.json")}
    assert len(finished) == 1

    with pytest.raises(SweepError, match="holds a sweep already"):  # not overwritten by accident
        run(load_config(SweepConfig, ROOT / "configs" / "sweep.yaml", overrides[:-2]))
    summary = run(load_config(SweepConfig, ROOT / "configs" / "sweep.yaml", [*overrides[:-2], "resume=true"]))

    assert summary["num_trials"] == 2
    (trial_id, mtime), = finished.items()
    assert (out / "trials" / trial_id / "summary.json").stat().st_mtime_ns == mtime, "a finished trial was rerun"
    statuses = {t["trial_id"]: t["status"] for t in json.loads((out / "report.json").read_text())["trials"]}
    assert set(statuses.values()) == {"completed"}
    assert yaml.safe_load((out / "best_ppo.yaml").read_text())["iterations"] == 2
