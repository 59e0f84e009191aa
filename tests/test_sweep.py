"""`rlhf-ray sweep`: config checks, and real Ray Tune sweeps of PPO trials on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.ppo import PPOConfig
from jobs.sweep import SweepError, check_fits, trial_bundles
from jobs.sweep_config import SweepConfig, trial_config
from rlhf_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides) -> SweepConfig:
    return SweepConfig.model_validate(overrides)


def test_search_space_keys_are_checked_against_the_ppo_schema() -> None:
    with pytest.raises(ValueError, match=r"search_space.kl.coeff=0.1 is not a valid PPO setting"):
        _config(search_space={"kl.coeff": {"grid": [0.1]}})
    with pytest.raises(ValueError, match=r"search_space.kl.coef=-1.0 is not a valid PPO setting"):
        _config(search_space={"kl.coef": {"grid": [-1.0]}})
    with pytest.raises(ValueError, match="cannot change 'output_dir'"):
        _config(search_space={"output_dir": {"grid": ["x"]}})
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
    with pytest.raises(ValueError, match=r"needs ppo\.judge_model_path"):
        _config(quality="judge_reward")
    with pytest.raises(ValueError, match="needs num_cpus or num_gpus > 0"):
        _config(ppo={"reference_num_cpus": 0.0})


def test_every_config_file_loads_and_the_trials_fit_two_cores() -> None:
    config = load_config(SweepConfig, ROOT / "configs" / "sweep.yaml")
    bundles = trial_bundles(config)
    assert bundles[0] == {"CPU": config.trial_cpus} and len(bundles) == 1 + 2 + 1 + 1 + 1  # driver, 2 rollout, ...
    check_fits(config, {"CPU": 2.0})
    with pytest.raises(SweepError, match=r"2 concurrent trial\(s\) × 1.3 CPU \+ 0.2 for prompt sampling"):
        check_fits(config.model_copy(update={"max_concurrent_trials": 2}), {"CPU": 2.0})


def test_trial_config_applies_the_trial_settings_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    base = PPOConfig(model_path="m").model_dump(mode="json")
    config = trial_config(base, {"kl.coef": 0.3, "reward.verbosity_coef": 2.0}, tmp_path / "t1")
    assert (config.kl.coef, config.reward.verbosity_coef, config.output_dir) == (0.3, 2.0, str(tmp_path / "t1"))
    assert not config.resume and config.wandb.mode == "disabled"
    (tmp_path / "t1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t1" / "checkpoints" / "latest").write_text("iter-000002")
    assert trial_config(base, {}, tmp_path / "t1").resume


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
    overrides = [*_sweep_overrides(trained_policy["sft"]["model_dir"], verbose_rm, out),
                 "search_space={kl.coef: {grid: [0.01, 0.1]}, reward.verbosity_coef: {grid: [0.0, 2.0]}}",
                 "scheduler.kind=fifo"]
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
    # wandb: one offline run per trial through Tune's callback
    assert len(list((out / "wandb").rglob("offline-run-*"))) >= 4


@pytest.mark.ray
@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
        ray_cluster, trained_policy: dict, tmp_path: Path) -> None:
    from jobs.sweep import run

    out = tmp_path / "sweep"
    rm = trained_policy["rm"]["reward_model_dir"]
    overrides = [*_sweep_overrides(trained_policy["sft"]["model_dir"], rm, out), "ppo.iterations=2",
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
