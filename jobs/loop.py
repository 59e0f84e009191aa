"""`rlhf-ray loop`: the main job — the RLHF loop end to end, one or more iterations, auditable.

Iteration 1: simulate feedback shards → ingest them (validate, mask, pseudonymize, version) → curate
(annotation QA, consensus, preference pairs) → [data gate] → build the offline tokenizer + model → SFT it →
train a reward model on the SFT backbone → [reward-model gate] → train the judge reward model on the judge set
(annotator pairs on validation prompts) → DPO from the SFT model → PPO from the SFT model against the reward
model → offline gate (`evaluate`: the candidate vs the incumbent on validation, non-inferiority judged by the judge
RM) → canary on Ray Serve with the world's simulated users → promote or roll back. The canary's captured
feedback is written among the feedback shards, so iteration k ≥ 2 re-runs the refresh stages — ingest (now with
that feedback), curate, train-rm, PPO from the incumbent, gate, canary — under `<out>/iter-<k>/`.

Every stage runs through its job's own code path and config, under one lineage root. A failed gate stops
the loop with a clear message and a lineage event; the incumbent keeps serving. Stages whose inputs are
unchanged (fingerprints in `loop_state.json`) are skipped, so a re-run after a crash resumes at the first
incomplete stage, and `iterations=N` on a finished run adds iterations. `stages` picks a consistent subset.

`--watch` keeps going after the configured iterations: whenever new feedback shards land (the canary's
captured feedback, or any new shard folder), it ingests them as the next iteration's first stage and judges
the retraining triggers (`watch`: enough new accepted rows, or a drift alert against the last iteration's
dataset; `rlhf_ray.evaluation.triggers`). A trigger that fires runs the rest of the iteration; every verdict is
a `trigger` lineage event on the new dataset version.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from actors.runtime import closing_ray
from jobs import drift
from jobs.common import add_config_arguments, resolve_config
from jobs.loop_config import (
    REFRESH_STAGES,
    REQUIRES,
    STAGES,
    LoopConfig,
    input_stages,
)
from jobs.loop_console import stage_line, stage_tracker
from jobs.loop_stages import (
    ARTIFACT_KEYS,
    CANARY_FEEDBACK_PREFIX,
    RUNNERS,
    Figures,
    Stage,
    Stages,
    feedback_shards,
    iteration_dir,
    stage_configs,
    stage_extras,
)
from jobs.loop_state import LoopState, fingerprint, shard_listing
from rlhf_ray.console import Console, quiet_console
from rlhf_ray.dataplane.erasure import MARK_EVENT
from rlhf_ray.evaluation.stage_gates import StageGate, data_gate, reward_model_gate
from rlhf_ray.evaluation.triggers import TriggerDecision, retraining_trigger
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.jobs import lineage_root
from rlhf_ray.reporting import write_report
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for

NAME = "loop"
HELP = ("run the RLHF loop end to end, with gates and lineage: simulate → ingest → curate → init-model → sft → "
        "train-rm → train-judge → dpo → [sweep] → ppo → gate → canary, for `iterations` rounds (`stages` picks a "
        "subset; --watch waits for new feedback)")
__all__ = ["REQUIRES", "RUNNERS", "STAGES", "LoopConfig", "run", "stage_configs"]
# Stage name → its field in `Stages`.
FIELDS = {"import": "imports", "init-model": "model", "train-rm": "reward_model", "train-judge": "judge"}
GATE_EVENT = "gate"
TRIGGER_EVENT = "trigger"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default_config=None)
    parser.add_argument("--watch", action="store_true",
                        help="after the configured iterations, wait for new feedback and run another iteration "
                             "whenever a retraining trigger fires (see the `watch` section)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's and the libraries' logs on the console (default: they go to "
                             "<output_dir>/logs/loop-*.log and the console shows stages, progress and summaries)")


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = resolve_config(LoopConfig, args)
    return watch(config, args.verbose) if args.watch else run(config, args.verbose)


def summary_figures(stage: Stage, figures: Figures) -> Figures:
    return {key if key.startswith(stage.keep) else stage.prefix + key: value for key, value in figures.items()}


def _announce(console: Console, iteration: int, step: int, total: int, name: str, where: str,
              skipped: bool) -> None:
    note = " (inputs unchanged: skipped)" if skipped else ""
    console.print(f"[loop] iteration {iteration} stage {step}/{total} {name} → {where}{note}")


def incumbent_at(state: LoopState, iteration: int, candidate_stage: str = "ppo") -> dict[str, Any] | None:
    """The policy serving when `iteration` starts: the candidate (the policy of `candidate_stage`, gate.candidate)
    of the last canary that was promoted before it, or None (the SFT model)."""
    incumbent = None
    for earlier in range(1, iteration):
        decided = state.stage_figures(earlier, "canary")
        if decided and decided.get("decision") == "promote":
            # DPO runs in the first iteration only: its policy is that iteration's figures
            policy = state.stage_figures(earlier if candidate_stage == "ppo" else 1, candidate_stage) or {}
            incumbent = {"policy_dir": policy.get("policy_dir"), "policy_id": policy.get("policy_id"),
                         "iteration": earlier}
    return incumbent


def _upstream(name: str, done: dict[str, Figures]) -> dict[str, Any]:
    """The artifact ids a stage reads: every `*_id` its input stages reported."""
    return {f"{stage}.{key}": value for stage in input_stages(name) for key, value in done.get(stage, {}).items()
            if key.endswith("_id") and isinstance(value, str)}


def _later_feedback(relative_path: str, iteration: int) -> bool:
    """Feedback a canary captured in this iteration or later (`canary-iter-<j>/...`, j ≥ iteration): not an
    input of this iteration's ingest, so a re-run of a finished iteration still matches its fingerprint."""
    folder = relative_path.split("/", 1)[0]
    return (folder.startswith(CANARY_FEEDBACK_PREFIX) and folder.removeprefix(CANARY_FEEDBACK_PREFIX).isdigit()
            and int(folder.removeprefix(CANARY_FEEDBACK_PREFIX)) >= iteration)


def _stage_gate(config: LoopConfig, name: str, done: dict[str, Figures]) -> tuple[StageGate, str] | None:
    """The loop's own gate after `name`, with the artifact id it judges, if `name` has one."""
    gates = config.gates
    if name == "curate" and "ingest" in done:
        return (data_gate(done["ingest"], done["curate"], gates.max_quarantine_rate, gates.min_fleiss_kappa,
                          gates.min_kappa_ratio, gates.min_gold_labels), done["curate"]["pairs_id"])
    if name == "train-rm":
        return (reward_model_gate(done["train-rm"], gates.min_rm_accuracy, gates.max_rm_length_correlation),
                done["train-rm"]["reward_model_id"])
    return None


def check_gates(config: LoopConfig, name: str, done: dict[str, Figures], registry: LineageRegistry,
                ran: bool) -> str | None:
    """Why the loop must stop after stage `name`, or None. Gate verdicts are lineage events (once, when the
    stage really ran)."""
    if name == "gate":
        verdict = done["gate"]
        failed = []
        if verdict.get("verdict") != "pass":
            failed.append(f"offline gate failed: {verdict.get('failed_checks')} (report {verdict.get('report')})")
        if verdict.get("regression_verdict") == "fail":
            failed.append(f"regression suite failed: cases {verdict.get('regression_blocking')} pass on the incumbent "
                          f"and fail on the candidate (report {verdict.get('regression_report')})")
        return "; ".join(failed) or None
    judged = _stage_gate(config, name, done)
    if judged is None:
        return None
    gate, artifact = judged
    if ran:
        registry.record_event(GATE_EVENT, artifact, gate.to_dict())
    return None if gate.passed else f"{gate.name} gate failed: {'; '.join(gate.failures())}"


def _iteration_stages(config: LoopConfig, iteration: int) -> list[str]:
    return list(config.stages) if iteration == 1 else [s for s in config.stages if s in REFRESH_STAGES]


def feedback_listing(out: str, iteration: int) -> list[list[Any]]:
    """The feedback shards there are now for iteration `iteration`: all but what its own or a later canary
    captured."""
    return shard_listing(feedback_shards(out), ignore=lambda path: _later_feedback(path, iteration))


def ingest_inputs(out: str, state: LoopState, iteration: int, fresh: bool = False) -> list[list[Any]]:
    """The shards iteration `iteration` ingests: the ones its ingest read when it ran (shards landing since
    belong to the next iteration), unless `fresh` or it has not run: then those there are now."""
    recorded = None if fresh else state.inputs(iteration, "ingest")
    return recorded if recorded is not None else feedback_listing(out, iteration)


def run_iteration(config: LoopConfig, iteration: int, state: LoopState, done: dict[str, Figures],
                  registry: LineageRegistry, sink: Any, only: list[str] | None = None,
                  fresh_inputs: bool = False, console: Console | None = None) -> tuple[Figures, str | None]:
    """One iteration's stages (those in `only`, if given); returns its summary figures and why it stopped early
    (None if it did not). `fresh_inputs` makes ingest read the feedback there is now, not what it read before."""
    console = console or Console(sys.stderr)
    incumbent = incumbent_at(state, iteration, config.gate.candidate)
    stages: Stages = stage_configs(config, iteration, incumbent["policy_dir"] if incumbent else None)
    names = [name for name in _iteration_stages(config, iteration) if only is None or name in only]
    summary: Figures = {"incumbent_at_start": incumbent["policy_id"] if incumbent else "sft"}
    for step, name in enumerate(names, start=1):
        stage = RUNNERS[name]
        stage_config = getattr(stages, FIELDS.get(name, name))
        inputs = None
        if name == "ingest":  # exactly the listed shards, so a shard landing meanwhile waits for the next iteration
            inputs = ingest_inputs(config.output_dir.rstrip("/"), state, iteration, fresh_inputs)
            stage_config = stage_config.model_copy(update={"files": [path for path, _ in inputs]})
            stages = stages._replace(ingest=stage_config)
        print_ = fingerprint(stage_config, {**_upstream(name, done), **stage_extras(stages, name)}, inputs)
        figures = state.done(iteration, name, print_)
        where = stage.where(stages)
        skipped = figures is not None and StorageRoot.from_uri(where).exists()
        _announce(console, iteration, step, len(names), name, where, skipped)
        if not skipped:
            started = time.monotonic()
            console.track(stage_tracker(name, stages))
            try:
                figures = stage.run(stages, done)
            except Exception as error:
                console.track(None)
                console.print(f"[loop] iteration {iteration} stage {name} failed ({type(error).__name__}: {error}); "
                              "the stages before it are recorded — re-run the same command to resume here"
                              + (" (PPO continues from its last checkpoint)" if name == "ppo" else "")
                              + (f"; full log: {console.log_path}" if console.log_path else ""))
                raise
            console.track(None)
            state.record(iteration, name, print_, figures, inputs)
        done[name] = figures
        named = summary_figures(stage, figures)
        if not skipped:
            console.print(stage_line(name, named, time.monotonic() - started))
        sink.log({k: v for k, v in named.items() if not isinstance(v, list | dict)}, step=iteration, source=name)
        summary.update(named)
        stop = check_gates(config, name, done, registry, ran=not skipped)
        if stop:
            return summary, f"{name}: {stop}"
    return summary, None


# PPO's held-out figure for the headline: the world's hidden utility in simulation, else the judge's reward.
HEADLINE_FIGURES = (("true_utility", "held-out true utility"), ("judge_reward", "validation judge reward"))


def _headline(iteration: int, figures: Figures) -> str:
    utility = next((f"{label} {figures[f'ppo_start/{name}']:.3f} → {figures[f'ppo_end/{name}']:.3f}"
                    for name, label in HEADLINE_FIGURES
                    if figures.get(f"ppo_start/{name}") is not None and figures.get(f"ppo_end/{name}") is not None),
                   "no PPO")
    decision = figures.get("canary_decision", "not run")
    judged = figures.get("canary_judged_at_decision")
    return (f"[loop] iteration {iteration}: {utility}; gate {figures.get('gate_verdict', 'not run')}; "
            f"canary {decision}" + (f" after {judged} judged answers" if judged else ""))


class LoopRun:
    """One `rlhf-ray loop` process: its state file, lineage, metrics sink, the figures of the stages done so far
    and the summary it prints."""

    def __init__(self, config: LoopConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console(sys.stderr)
        self.sink = sink_for(NAME, config)
        self.out = config.output_dir.rstrip("/")
        self.state = LoopState(self.out)
        self.lineage = lineage_root(config, f"{self.out}/lineage")
        self.registry = LineageRegistry(self.lineage)
        self.done: dict[str, Figures] = {}
        self.summary: Figures = {"stages": list(config.stages), "iterations": config.iterations}
        self.last_iteration = 0
        self.headlines: list[str] = []

    def iterate(self, iteration: int) -> str | None:
        """Run one iteration; returns why it stopped early, or None."""
        figures, stopped = run_iteration(self.config, iteration, self.state, self.done, self.registry, self.sink,
                                         console=self.console)
        prefix = "" if iteration == 1 else f"iter{iteration}/"
        self.summary.update({prefix + key: value for key, value in figures.items()})
        self.last_iteration = iteration
        self.headlines.append(_headline(iteration, figures))
        self.console.print(self.headlines[-1])
        if stopped:
            self.console.print(f"[loop] stopped in iteration {iteration} at {stopped}; the incumbent keeps serving")
            self.summary.update(stopped=stopped, stopped_iteration=iteration)
        return stopped

    def configured_iterations(self) -> None:
        for iteration in range(1, self.config.iterations + 1):
            if self.iterate(iteration):
                break

    def finish(self) -> Figures:
        """The run's summary, with its report written and its headlines on the console (`sink.close` prints it)."""
        incumbent = incumbent_at(self.state, self.last_iteration + 1, self.config.gate.candidate)
        self.summary["incumbent_policy_id"] = (incumbent["policy_id"] if incumbent
                                               else self.summary.get("sft_model_id"))
        latest: Figures = {}  # each stage's figures from the last iteration that ran it
        for name, figures in self.done.items():
            latest.update(summary_figures(RUNNERS[name], figures))
        newest = next((latest[key] for key in reversed(ARTIFACT_KEYS) if key in latest), None)
        where = {"output_dir": self.config.output_dir, "lineage_root": self.lineage,
                 "state": f"{self.out}/loop_state.json",
                 "last_iteration_dir": iteration_dir(self.out, self.last_iteration),
                 "html_report": write_report(self.out)["report"]}
        self.console.print("\n".join(["[loop] summary:", *(f"  {line.removeprefix('[loop] ')}" for line in
                                                             self.headlines),
                                       f"  serving: {self.summary['incumbent_policy_id']}",
                                       f"  report: {where['html_report']}"]))
        if newest:
            self.console.print(f"[loop] trace it with: rlhf-ray lineage {newest} --root {self.lineage}")
        if self.console.log_path:
            self.console.print(f"[loop] full log: {self.console.log_path}")
        return {**self.summary, **where}

    # ---- --watch ------------------------------------------------------------------------------------------
    def erased_models(self, iteration: int) -> list[str]:
        """The models in use when `iteration` starts (the serving policy, the last reward model and PPO policy)
        that `rlhf-ray erase` or `retention` marked as trained on rows since removed."""
        serving = incumbent_at(self.state, iteration, self.config.gate.candidate) or {}
        last = iteration - 1
        current = {serving.get("policy_id"), (self.state.stage_figures(last, "ppo") or {}).get("policy_id"),
                   (self.state.stage_figures(last, "train-rm") or {}).get("reward_model_id"),
                   (self.state.stage_figures(1, "sft") or {}).get("sft_model_id")}
        return sorted(model for model in current - {None} if self.registry.has(model)
                      and any(entry.event == MARK_EVENT for entry in self.registry.events(model)))

    def judge_new_feedback(self, iteration: int) -> TriggerDecision:
        """Ingest the feedback there is now as `iteration`'s first stage, then judge the retraining triggers
        against the dataset the previous iteration trained on; the verdict is a lineage event on the new dataset."""
        trained = self.state.stage_figures(iteration - 1, "ingest") or {}
        fresh, _ = run_iteration(self.config, iteration, self.state, self.done, self.registry, self.sink,
                                 only=["ingest"], fresh_inputs=True, console=self.console)
        watch = self.config.watch
        alerts = None
        if watch.drift_alert and trained.get("dataset_version"):
            report = drift.detect(drift.DriftConfig(
                reference=f"{self.out}/dataset", reference_version=trained["dataset_version"],
                current_version=fresh["dataset_version"], world=self.config.world, ray=self.config.ray,
                output_dir=f"{iteration_dir(self.out, iteration)}/trigger", thresholds=watch.drift_thresholds))
            alerts = report["alerts"]
        decision = retraining_trigger(fresh["accepted_rows"] - trained.get("accepted_rows", 0), watch.min_new_rows,
                                      alerts, self.erased_models(iteration))
        self.registry.record_event(TRIGGER_EVENT, fresh["dataset_id"], {"iteration": iteration, **decision.to_dict()})
        verdict = "; ".join(decision.reasons) if decision.fired else (
            f"not yet: {decision.new_rows} new accepted rows (need {watch.min_new_rows}), "
            f"drift alerts {list(alerts) if alerts is not None else 'off'}")
        self.console.print(f"[loop] watch: iteration {iteration} trigger {'fired' if decision.fired else 'held'} — "
                           f"{verdict}")
        return decision


def run(config: LoopConfig, verbose: bool = True) -> dict[str, Any]:
    """The configured iterations. Not `verbose`: Ray's and the libraries' output goes to `<output_dir>/logs/`."""
    with quiet_console(config.output_dir, NAME, verbose) as console, _quiet_ray(verbose):
        loop = LoopRun(config, console)
        loop.configured_iterations()
        return _close(loop, loop.finish())


def watch(config: LoopConfig, verbose: bool = True) -> dict[str, Any]:
    """The configured iterations, then one more iteration each time new feedback fires a retraining trigger, until
    `watch.max_iterations` have run or `watch.max_wait_seconds` pass without a trigger (or Ctrl-C)."""
    with quiet_console(config.output_dir, NAME, verbose) as console, _quiet_ray(verbose):
        loop = LoopRun(config, console)
        return _close(loop, _watching(loop))


def _quiet_ray(verbose: bool) -> contextlib.AbstractContextManager[None]:
    """Quiet, the Ray this run connects to is closed before the console is: its last lines go to the log."""
    return contextlib.nullcontext() if verbose else closing_ray()


def _close(loop: LoopRun, summary: Figures) -> dict[str, Any]:
    loop.sink.stream = loop.console.stdout  # the summary is stdout's last line, quiet or not
    return loop.sink.close(summary)


def _watching(loop: LoopRun) -> Figures:
    loop.configured_iterations()
    settings = loop.config.watch
    seen = ingest_inputs(loop.out, loop.state, loop.last_iteration)
    waiting_since = time.monotonic()
    triggers: list[dict[str, Any]] = []
    try:
        while settings.max_iterations is None or loop.last_iteration < settings.max_iterations:
            iteration = loop.last_iteration + 1
            listing = feedback_listing(loop.out, iteration)
            if listing != seen:
                seen = listing
                decision = loop.judge_new_feedback(iteration)
                triggers.append({"iteration": iteration, **decision.to_dict()})
                if decision.fired:
                    loop.iterate(iteration)
                    seen, waiting_since = ingest_inputs(loop.out, loop.state, iteration), time.monotonic()
                    continue
            if settings.max_wait_seconds is not None and time.monotonic() - waiting_since > settings.max_wait_seconds:
                loop.console.print(f"[loop] watch: no trigger fired in {settings.max_wait_seconds:.0f} s; stopping")
                break
            time.sleep(settings.poll_seconds)
    except KeyboardInterrupt:
        loop.console.print("[loop] watch: interrupted; the state is saved after every stage")
    loop.summary["watch_triggers"] = triggers
    return loop.finish()
