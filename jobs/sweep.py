"""`rlhf-ray sweep`: Ray Tune over PPO settings — KL coefficient, verbosity penalty, anything in the PPO
config — judged on validation quality, never on the reward the policy optimises.

Each trial is one PPO run through `PPOController`, the code path of `rlhf-ray ppo`, with every actor in the
trial's placement group (`tune.with_resources` + `PlacementGroupFactory`: bundle 0 for the trial's driver,
then one bundle per actor as `actors.ppo_resources.actor_bundle_layout` lays them out). Trials report after
every iteration; ASHA stops weak ones early on the quality metric. The report (`jobs.sweep_report`) has a
table of trials with reward-hacking flags, the Pareto front of quality vs KL, plots, and the chosen settings
as a YAML `rlhf-ray ppo` accepts. `--resume` continues an interrupted sweep with `Tuner.restore`: finished
trials are kept as they are and unfinished ones continue from their last PPO checkpoint.

The judge (`judge_by`) is the judge reward model (`judge_rm`: `ppo.judge_model_path`, trained on the judge set —
annotator pairs on validation prompts — scoring `eval/judge_reward`) or, in simulation studies only, the world's
hidden utility (`oracle`: `eval/true_utility`); neither ever reaches the learner, and both judge the validation
split. After the choice, when the prompts are the world's, the chosen trial's exported policy answers the test
split once and the world's oracle scores it: `chosen/test_true_utility` in the report, never used for choosing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from actors.ppo_resources import actor_bundle_layout
from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, add_prompt_file_arguments, prompt_file_flags, resolve_config
from jobs.ppo import PPOConfig, controller_for
from jobs.sweep_config import REPORT_SPLIT, SweepConfig, trial_config
from rlhf_ray.config import WandbConfig
from rlhf_ray.inputs.world import WorldOracle, WorldPromptSource
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.hashing import sha256_hex
from rlhf_ray.lineage.jobs import lineage_root
from rlhf_ray.telemetry.sink import sink_for

NAME = "sweep"
HELP = ("Ray Tune sweep of PPO settings (KL coefficient, verbosity penalty, ...) judged on validation by a judge RM; "
        "the chosen trial's test-split utility reported once")
TRIALS_DIR = "trials"
TUNE_DIR = "tune"


class SweepError(ValueError):
    """The sweep cannot start or resume."""


def trial_bundles(config: SweepConfig) -> list[dict[str, float]]:
    """The trial's placement group: its driver first (Tune's convention), then every PPO actor."""
    return [{"CPU": config.trial_cpus}, *actor_bundle_layout(config.ppo)[0]]


def check_fits(config: SweepConfig, cluster: dict[str, float]) -> None:
    """Concurrent trials must fit the cluster, or Tune would wait forever for a placement."""
    for resource in ("CPU", "GPU"):
        per_trial = sum(bundle.get(resource, 0.0) for bundle in trial_bundles(config))
        need = config.max_concurrent_trials * per_trial
        if need > cluster.get(resource, 0.0) + 1e-9:
            raise SweepError(
                f"{config.max_concurrent_trials} concurrent trial(s) × {per_trial:g} {resource} = {need:g} "
                f"{resource}, but the cluster has {cluster.get(resource, 0.0):g}; lower max_concurrent_trials or "
                "the ppo actors' num_cpus/num_gpus")


def ppo_trial(params: dict[str, Any], base: dict[str, Any], sweep_dir: str) -> None:
    """Tune's trainable: one PPO run in the trial's placement group, reporting after every iteration."""
    import ray
    from ray import tune

    from rlhf_ray.telemetry import MetricsSink

    trial_dir = Path(sweep_dir) / TRIALS_DIR / tune.get_context().get_trial_id()
    config = trial_config(base, params, trial_dir)
    sink = MetricsSink("ppo", WandbConfig(mode="disabled"), str(trial_dir))

    def report(metrics: dict[str, Any]) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})

    controller = controller_for(config, sink, within=(ray.util.get_current_placement_group(), 1),
                                on_iteration=report)
    try:
        summary = controller.train()
    finally:
        controller.shutdown()
    (trial_dir / "summary.json").write_text(json.dumps(sink.close(summary), indent=2, default=str))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="starting policy directory (sets ppo.model_path)")
    parser.add_argument("--reward-model", dest="reward_model", help="reward model directory "
                        "(sets ppo.reward.model_path)")
    parser.add_argument("--judge-model", dest="judge_model", help="judge reward model, trained on the judge set "
                        "(sets ppo.judge_model_path)")
    add_prompt_file_arguments(parser, "ppo.prompts", "the trials are judged on them", "read once for the chosen trial")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    parser.add_argument("--resume", action="store_const", const="true",
                        help="continue the interrupted sweep in the output directory")
    add_config_arguments(parser, default_config="configs/sweep.yaml")


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"model": "ppo.model_path", "reward_model": "ppo.reward.model_path",
             "judge_model": "ppo.judge_model_path", "out": "output_dir", "resume": "resume",
             **prompt_file_flags("ppo.prompts")}
    return run(resolve_config(SweepConfig, args, flags))


def _callbacks(config: SweepConfig, out: Path) -> list[Any]:
    """wandb per trial through Tune's logger callback (offline unless configured otherwise)."""
    if config.wandb.mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    directory = Path(config.wandb.dir or out / "wandb").absolute()
    directory.mkdir(parents=True, exist_ok=True)
    return [WandbLoggerCallback(project=config.wandb.project, group=config.name, mode=config.wandb.mode,
                                dir=str(directory), tags=list(config.wandb.tags))]


def _tuner(config: SweepConfig, out: Path) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not config.ppo.model_path:
        raise SweepError("sweep needs ppo.model_path (--model DIR: the starting policy)")
    base = config.ppo.model_dump(mode="json")
    base["lineage"] = {"root": lineage_root(config, config.ppo.lineage.root)}  # trials and sweep: one registry
    trainable = tune.with_resources(tune.with_parameters(ppo_trial, base=base, sweep_dir=str(out)),
                                    tune.PlacementGroupFactory(trial_bundles(config),
                                                               strategy=config.ppo.placement_strategy))
    experiment = out / TUNE_DIR / config.name
    if config.wandb.mode != "online":
        # Tune's wandb callback (new or restored with the experiment) asks for an API key unless this says so.
        os.environ["WANDB_MODE"] = config.wandb.mode
    if config.resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise SweepError(f"--resume: no sweep to resume at {experiment}")
        return tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
    if experiment.exists():
        raise SweepError(f"{experiment} holds a sweep already: pass --resume to continue it, or choose another "
                         "output_dir or name")
    # max_t one past the last report: at max_t ASHA stops the trial at once, before the trial exports its
    # policy; a trial that reaches its last iteration must end on its own.
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=config.ppo.iterations + 1,
                               grace_period=config.scheduler.grace_period,
                               reduction_factor=config.scheduler.reduction_factor)
                 if config.scheduler.kind == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable,
        param_space={key: spec.domain() for key, spec in config.search_space.items()},
        tune_config=tune.TuneConfig(metric=config.metric, mode="max", scheduler=scheduler,
                                    num_samples=config.num_samples,
                                    max_concurrent_trials=config.max_concurrent_trials),
        run_config=tune.RunConfig(name=config.name, storage_path=str(out / TUNE_DIR),
                                  callbacks=_callbacks(config, out),
                                  failure_config=tune.FailureConfig(max_failures=config.max_failures)))


def measure_on_test(settings: PPOConfig, policy_dir: str) -> dict[str, float]:
    """The chosen trial's exported policy answers the world's test split once (the trial's own evaluation settings:
    prompts, samples, temperature), judged by the world's oracle. Called after the choice, never part of it."""
    import ray

    from actors.rollout import RolloutWorker

    rows = WorldPromptSource(settings.world, settings.seed).split(REPORT_SPLIT)[: settings.eval_prompts]
    rollout = settings.rollout
    worker = ray.remote(RolloutWorker).options(num_cpus=rollout.num_cpus, num_gpus=rollout.num_gpus).remote(
        policy_dir, rollout.backend, rollout.worker_backend_kwargs(), settings.seed)
    params = {"max_new_tokens": rollout.max_new_tokens, "temperature": settings.eval_temperature,
              "top_p": rollout.top_p, "top_k": rollout.top_k, "seed": settings.seed}
    try:
        samples = ray.get(worker.generate.remote([p.conversation for p in rows], [p.prompt_id for p in rows],
                                                 settings.eval_samples_per_prompt, params))["samples"]
    finally:
        ray.kill(worker)
    judged = WorldOracle(settings.world, settings.seed).evaluate(
        [s.prompt_id for s in samples], [s.prompt for s in samples], [s.response for s in samples])
    return {**judged, "prompts": len(rows), "answers": len(samples)}


def _register(config: SweepConfig, out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The sweep as a lineage artifact whose parents are its trials' policies; the chosen trial's policy is
    reported so the loop can deploy it without training again."""
    summaries = {path.parent.name: json.loads(path.read_text())
                 for path in sorted((out / TRIALS_DIR).glob("*/summary.json"))}
    registry = LineageRegistry(lineage_root(config, config.ppo.lineage.root))
    chosen = summaries.get(report.get("chosen_trial", ""), {})
    record = registry.register(
        "sweep", config.name, sha256_hex((out / "report.json").read_bytes()),
        parents=[summary["policy_id"] for summary in summaries.values()],
        config={"search_space": {k: v.model_dump(exclude_none=True) for k, v in config.search_space.items()},
                "judge_by": config.judge_by, "quality": config.quality, "scheduler": config.scheduler.model_dump(),
                "hacking": config.hacking.model_dump()},
        metrics={k: v for k, v in report.items() if k.startswith("chosen/") and isinstance(v, int | float)},
        uri=str(out))
    return {"sweep_id": record.id, "chosen_policy_id": chosen.get("policy_id"),
            "chosen_policy_dir": chosen.get("policy_dir")}


def run(config: SweepConfig) -> dict[str, Any]:
    import ray

    from jobs.sweep_report import outcomes_from_results, write_report

    out = Path(config.output_dir).absolute()
    ensure_ray(config.ray)
    check_fits(config, ray.cluster_resources())
    sink = sink_for(NAME, config)
    tuner = _tuner(config, out)
    results = tuner.fit()
    outcomes = outcomes_from_results(results, config.ppo.iterations, out / TRIALS_DIR)
    # only the world has an oracle to read the test split with; a user's prompts are judged on validation only
    report = write_report(config, outcomes, out, measure_on_test if config.ppo.prompts is None else None)
    if "chosen/test_true_utility" in report:
        print(f"[sweep] chosen trial {report['chosen_trial']}: test-split true utility "
              f"{report['chosen/test_true_utility']:.3f} over {report['test_split']['answers']} answers "
              "(measured once, after the choice; not used for choosing)", file=sys.stderr)
    report.update(_register(config, out, report))
    for row in report["trials"]:
        sink.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=None)
    return sink.close({key: value for key, value in report.items() if key != "trials"})
