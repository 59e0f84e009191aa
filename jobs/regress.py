"""`rlhf-ray regress`: the behavioural regression suite — a policy, and a baseline beside it, on a suite's cases.

Each policy answers every case of the suite (`suites/*.yaml`, `rlhf_ray.evaluation.regression`) on its own rollout
worker (the PPO job's `RolloutWorker`; a case's `messages` are rendered by the checkpoint's chat template): once
greedily and `runs.samples` times sampled. A policy is a checkpoint directory or a variant file (YAML: model_path,
system_prompt, sampling; `rlhf_ray.serving.variants`): a variant's system prompt goes first in every case's
conversation, as served, and its sampling defaults and limits set the sampled answers. A case passes when at least
`runs.pass_threshold` of those answers pass every check; one that the baseline passes and the policy fails blocks,
unless the suite lists it under `accepted_changes`. Without `--baseline` every failing case blocks. `judge_min`
checks are scored by the judge (`--judge RM_DIR | http(s)://URL | package.module:function`), run as a
`RewardScorer` source with penalties off.

Writes `<output_dir>/regress.json` (per-case pass rates, regressions, verdict), logs a `regression` event on the
policy's lineage record and prints the summary. The loop's gate (`gate.regression_suite`) and the canary
(`regression_suite`) call `regress(config)` and refuse a candidate whose verdict is `fail`. A suite gates; it is
never a training signal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from jobs.evaluate import GenerationSection
from rlhf_ray.algos.penalties import RulePenaltySettings
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.evaluation.regression import (
    CaseOutcome,
    RunSettings,
    Suite,
    case_outcome,
    load_suite,
    regression_verdict,
    suite_report,
)
from rlhf_ray.lineage.jobs import lineage_for, lineage_root, register_input_checkpoint
from rlhf_ray.models import resolve_model_path
from rlhf_ray.rewards import RewardSourceSpec, parse_judge_spec
from rlhf_ray.serving.config import GenerationSection as ServedGeneration
from rlhf_ray.serving.config import PolicySection, SamplingSection
from rlhf_ray.serving.variants import (
    VariantFile,
    VariantFileError,
    load_variant,
    register_variant,
    resolve_sampling,
    with_system_prompt,
)
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry import StageTimer
from rlhf_ray.telemetry.sink import sink_for

NAME = "regress"
HELP = ("behavioural regression suite: a policy vs a baseline on a suite's cases (greedy + sampled answers); a case "
        "the baseline passes and the policy fails blocks")
REPORT_FILE = "regress.json"
EVENT = "regression"
POLICIES = ("policy", "baseline")  # the config's names; the report calls them candidate and baseline
VARIANT_SUFFIXES = (".yaml", ".yml")


class RegressError(ValueError):
    """The suite cannot run: no policy, no suite, or judge_min cases without a judge."""


class SuiteJudgeSection(StrictModel):
    max_length: int = Field(256, ge=8, description="token budget per prompt + answer")
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class SuiteRunSection(StrictModel):
    """How a suite is run: the judge of `judge_min` checks, how often each case is answered and how."""

    judge_path: str | None = Field(None, description="the judge of judge_min checks: a reward model directory, an "
                                   "http(s):// URL answering {prompts, responses} with {scores}, or "
                                   "package.module:function(prompt, response, meta)")
    runs: RunSettings = RunSettings()
    generation: GenerationSection = Field(GenerationSection(), description="the sampled answers' settings (the "
                                          "greedy answer uses max_new_tokens with temperature 0)")
    judge: SuiteJudgeSection = SuiteJudgeSection()

    @model_validator(mode="after")
    def _judge_spec(self) -> SuiteRunSection:
        if self.judge_path:
            parse_judge_spec(self.judge_path)  # a malformed URL or function fails here, naming it
        return self


class RegressConfig(JobConfig, SuiteRunSection):
    policy_path: str | None = Field(None, description="the policy under test (the candidate): a checkpoint "
                                    "directory or a variant file (.yaml)")
    baseline_path: str | None = Field(None, description="the policy it must not regress from (the incumbent): a "
                                      "checkpoint directory or a variant file; null: every failing case blocks")
    policy_variant: VariantFile | None = Field(None, description="the policy's system prompt and sampling (read "
                                               "from a variant file given as policy_path, or set by the canary)")
    baseline_variant: VariantFile | None = Field(None, description="the baseline's, likewise")
    suite: str | None = Field(None, description="the suite YAML file (suites/*.yaml)")
    output_dir: str = "runs/regress"

    @model_validator(mode="before")
    @classmethod
    def _variant_files(cls, data: Any) -> Any:
        """A variant file given as a policy: its checkpoint becomes the path, the rest the policy's variant."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in POLICIES:
            path = data.get(f"{name}_path")
            if isinstance(path, str) and path.endswith(VARIANT_SUFFIXES):
                try:
                    variant = load_variant(path)
                except VariantFileError as error:
                    raise ValueError(f"{name}_path: {error}") from None
                if not variant.model_path:
                    raise ValueError(f"{name}_path: variant file {path!r} names no model_path; the suite needs "
                                     "its checkpoint")
                data.update({f"{name}_path": variant.model_path, f"{name}_variant": variant})
        return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="policy checkpoint directory under test (sets policy_path)")
    parser.add_argument("--baseline", help="baseline (incumbent) checkpoint directory (sets baseline_path)")
    parser.add_argument("--suite", help="suite YAML file (sets suite)")
    parser.add_argument("--judge", help="judge of judge_min checks: RM_DIR, http(s)://URL or "
                        "package.module:function (sets judge_path)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"policy": "policy_path", "baseline": "baseline_path", "suite": "suite", "judge": "judge_path",
             "out": "output_dir"}
    return run(resolve_config(RegressConfig, args, flags))


def checked_suite(config: RegressConfig) -> Suite:
    """The suite, read and checked before any Ray work (a judge_min case needs a judge)."""
    if not config.suite:
        raise RegressError("regress needs --suite FILE (a suites/*.yaml file)")
    suite = load_suite(config.suite)
    if suite.needs_judge and not config.judge_path:
        raise RegressError(f"suite {config.suite!r}: cases {suite.needs_judge} have judge_min checks; pass --judge "
                           "RM_DIR|URL|module:function (sets judge_path)")
    return suite


def _policies(config: RegressConfig) -> dict[str, VariantFile]:
    """Each policy as a variant (a bare checkpoint is one with no system prompt and default sampling), by its
    name in the report."""
    if not config.policy_path:
        raise RegressError("regress needs --policy DIR|VARIANT.yaml (a policy checkpoint directory or variant file)")
    out = {}
    for name, report_name in zip(POLICIES, ("candidate", "baseline"), strict=True):
        path, variant = getattr(config, f"{name}_path"), getattr(config, f"{name}_variant")
        if path:
            out[report_name] = (variant or VariantFile()).model_copy(
                update={"model_path": str(resolve_model_path(path))})
    return out


def _conversation(case: Any, variant: VariantFile) -> Any:
    """A case's conversation as the variant serves it: its system prompt first (`with_system_prompt`)."""
    if not variant.system_prompt:
        return case.conversation
    turns = [{"role": "user", "content": case.prompt}] if case.prompt is not None else case.conversation
    return with_system_prompt(turns, variant.system_prompt)


def _sampled(config: RegressConfig, variant: VariantFile) -> dict[str, Any]:
    """The sampled answers' settings: the suite's generation section, or, for a variant with sampling settings of
    its own, those defaults and limits over it (`resolve_sampling`, as the served variant samples)."""
    gen = config.generation
    if variant.sampling == SamplingSection():
        return {"max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p,
                "top_k": gen.top_k, "seed": config.seed}
    params = resolve_sampling(variant.sampling, ServedGeneration(max_tokens=gen.max_new_tokens,
                                                                 temperature=gen.temperature), seed=config.seed)
    return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "seed": config.seed}


def _judge_source(config: RegressConfig) -> RewardSourceSpec:
    spec = config.judge_path or ""
    return parse_judge_spec(spec if "://" in spec or ":" in spec else str(resolve_model_path(spec)))


def _answer(config: RegressConfig, suite: Suite, policies: dict[str, VariantFile],
            timer: StageTimer) -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, list[float]]]]:
    """Per policy, each case's answers (greedy first, then the sampled ones) and, for judge_min cases, the judge's
    scores of them. One rollout worker per policy, generating in parallel."""
    import ray

    from actors.rollout import RolloutWorker
    from actors.scoring import RewardScorer

    gen, k = config.generation, config.runs.samples
    workers = {name: ray.remote(RolloutWorker).options(num_cpus=gen.num_cpus, num_gpus=gen.num_gpus).remote(
        variant.model_path, gen.backend, None, config.seed) for name, variant in policies.items()}
    judge = None
    if suite.needs_judge:
        no_penalties = RulePenaltySettings(verbosity_coef=0.0, canned_coef=0.0, repetition_coef=0.0)
        judge = ray.remote(RewardScorer).options(num_cpus=config.judge.num_cpus, num_gpus=config.judge.num_gpus)\
            .remote(None, no_penalties, config.judge.max_length, True, sources=[_judge_source(config)])
    ids = [case.id for case in suite.cases]
    try:
        with timer.stage("start_actors"):
            ray.get([w.ready.remote() for w in workers.values()] + ([judge.ready.remote()] if judge else []))
        with timer.stage("generate"):
            calls = {}
            for name, worker in workers.items():
                asks, sampled = [_conversation(case, policies[name]) for case in suite.cases], \
                    _sampled(config, policies[name])
                greedy = {"max_new_tokens": sampled["max_new_tokens"], "temperature": 0.0, "seed": config.seed}
                calls[name] = [worker.generate.remote(asks, ids, 1, greedy)] + (
                    [worker.generate.remote(asks, ids, k, sampled)] if k else [])
            outputs = {name: [ray.get(call)["samples"] for call in pending] for name, pending in calls.items()}
        answers = {name: {case: [first[i].response] + ([s.response for s in rest[0][i * k: (i + 1) * k]]
                                                       if rest else [])
                          for i, case in enumerate(ids)} for name, (first, *rest) in outputs.items()}
        scores: dict[str, dict[str, list[float]]] = {name: {} for name in policies}
        if judge is not None:
            judged = [case for case in suite.cases if case.checks.judge_min is not None]
            with timer.stage("judge"):
                for name in policies:
                    prompts = [case.text for case in judged for _ in answers[name][case.id]]
                    texts = [answer for case in judged for answer in answers[name][case.id]]
                    flat = iter(ray.get(judge.score.remote(prompts, texts))["rm"])
                    scores[name] = {case.id: [next(flat) for _ in answers[name][case.id]] for case in judged}
        return answers, scores
    finally:
        for actor in [*workers.values(), *([judge] if judge else [])]:
            ray.kill(actor)


def _lineage_id(registry: Any, variant: VariantFile, name: str) -> str:
    """The checkpoint's id, or, with a system prompt or sampling settings, the variant's (`register_variant`: its
    parents are the checkpoint and the system prompt)."""
    checkpoint = register_input_checkpoint(registry, variant.model_path or "")
    if variant.system_prompt is None and variant.sampling == SamplingSection():
        return checkpoint
    section = PolicySection(model_path=variant.model_path, policy_id=checkpoint, system_prompt=variant.system_prompt,
                            sampling=variant.sampling)
    return register_variant(registry, section, variant.name or f"regress-{name}")


def regress(config: RegressConfig, sink: Any = None) -> dict[str, Any]:
    """Run the suite; returns the summary (`verdict`, `blocking`, per-policy pass rates, ids, report path)."""
    suite = checked_suite(config)  # a bad suite fails before any Ray work
    policies = _policies(config)
    timer = StageTimer()
    ensure_ray(config.ray)
    answers, scores = _answer(config, suite, policies, timer)
    outcomes: dict[str, dict[str, CaseOutcome]] = {
        name: {case.id: case_outcome(case, answers[name][case.id], config.runs.pass_threshold,
                                     scores[name].get(case.id)) for case in suite.cases} for name in policies}
    baseline = outcomes.get("baseline")
    verdict = regression_verdict({c: o.passed for c, o in outcomes["candidate"].items()},
                                 {c: o.passed for c, o in baseline.items()} if baseline else None,
                                 suite.accepted_changes)
    registry = lineage_for(config)
    ids = {name: _lineage_id(registry, variant, name) for name, variant in policies.items()}
    suite_digest = hashlib.sha256(Path(config.suite or "").read_bytes()).hexdigest()
    rates = {f"pass_rate/{name}": round(sum(o.pass_rate for o in cases.values()) / len(cases), 4)
             for name, cases in outcomes.items()}
    cases_passed = {f"cases_passed/{name}": sum(o.passed for o in cases.values()) for name, cases in outcomes.items()}
    event = {**verdict.to_dict(), "suite": suite.name, "suite_file": config.suite, "suite_sha256": suite_digest,
             "baseline_id": ids.get("baseline"), "cases": len(suite.cases), **rates, **cases_passed,
             "runs": config.runs.model_dump()}
    entry = registry.record_event(EVENT, ids["candidate"], event)
    report = {**event, "policy_id": ids["candidate"], "judge": config.judge_path, "lineage_event": entry.seq,
              "accepted_changes": suite.accepted_changes, "description": suite.description,
              "case_table": suite_report(suite, outcomes["candidate"], baseline, verdict),
              "outcomes": {name: {c: o.to_dict() for c, o in cases.items()} for name, cases in outcomes.items()}}
    path = StorageRoot.from_uri(config.output_dir).write_bytes_atomic(
        json.dumps(report, indent=2, sort_keys=True).encode(), REPORT_FILE)
    figures = {"regress/blocking": float(len(verdict.blocking)), "regress/passed": float(verdict.verdict == "pass"),
               **{f"regress/{key}": float(value) for key, value in {**rates, **cases_passed}.items()},
               **timer.figures()}
    if sink is not None:
        sink.log(figures)
    return {**verdict.to_dict(), "suite": suite.name, "policy_id": ids["candidate"],
            "baseline_id": ids.get("baseline"), "regression_event": entry.seq, "report": path,
            "lineage_root": lineage_root(config), **rates, **cases_passed, **timer.figures()}


def run(config: RegressConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    return sink.close(regress(config, sink))
