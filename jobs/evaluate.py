"""`rlhf-ray evaluate`: the offline gate — a candidate policy against the incumbent on held-out prompts.

Both policies answer the same validation prompts on their own rollout workers (the PPO job's `RolloutWorker`); the
gate chooses, so it never reads the test split. The prompts are the world's validation split, or a user's file
(`--prompts FILE`, alias `--eval-prompts`: JSONL/Parquet rows with `prompt` or `messages`). A judge
(`--judge RM_DIR | http(s)://URL | package.module:function`: a reward model trained on the judge set, never the
policy's own; a scorer behind a URL such as `rlhf-ray serve-rm`; or a Python function; run as a `RewardScorer`
source, penalties off) scores every answer, and answer i of the candidate is paired with answer i of the incumbent
for the win-rate (ties count ½). `judge_by: oracle` lets the world's hidden utility judge instead (simulation
studies only). Per policy: mean length and refusal rate always; with the world, also first-pass yield (answers used
with no edit, by the world's user model or a rubric), safety misses and cost per accepted answer. The verdict
follows `thresholds` (`rlhf_ray.evaluation.gate`): a non-inferiority test on win-rate, with superiority reported
beside it. `--test-prompts FILE` is read once, after the verdict: both policies answer it and its win-rate is
reported (`test/...`), never used for the verdict.

Writes `<output_dir>/gate.json` and logs a `gate` event on the candidate's lineage record. The canary and the loop
call `evaluate(config)` before deploying and act on its `verdict`.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from actors.runtime import ensure_ray
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.algos.penalties import RulePenaltySettings
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.evaluation.answers import monitor_figures
from rlhf_ray.evaluation.gate import (
    GateResult,
    GateThresholds,
    gate_verdict,
    policy_figures,
    refusal_rate,
    win_rate,
)
from rlhf_ray.evaluation.hacking import FLAGS, hacking_flags
from rlhf_ray.inputs.prompts import Prompt, read_prompt_file
from rlhf_ray.inputs.world import WorldConfig, WorldOracle, WorldPromptSource
from rlhf_ray.lineage.jobs import lineage_for, lineage_root, register_input_checkpoint
from rlhf_ray.models import resolve_model_path
from rlhf_ray.rewards import RewardSourceSpec, parse_judge_spec
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry import StageTimer
from rlhf_ray.telemetry.loop_latency import loop_latency
from rlhf_ray.telemetry.sink import sink_for

NAME = "evaluate"
HELP = ("offline gate: candidate vs incumbent policy on validation prompts (non-inferior win-rate by a judge RM, "
        "yield, safety, cost)")
POLICIES = ("candidate", "incumbent")
GATE_SPLIT = "validation"  # the gate chooses: it never reads the test split
TEST_SPLIT = "test"  # a user's test prompts, answered once after the verdict
GATE_FILE = "gate.json"
GATE_EVENT = "gate"
EXAMPLES = 3
MONITOR_FIGURES = ("canned_rate", "repeats", "reward_length_corr")


class EvaluateError(ValueError):
    """The gate cannot run: a missing policy or an empty held-out set."""


class GenerationSection(StrictModel):
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    backend: Literal["hf", "vllm"] = "hf"
    num_cpus: float = Field(0.25, ge=0, description="CPUs per rollout worker (one worker per policy)")
    num_gpus: float = Field(0.0, ge=0)


class JudgeSection(StrictModel):
    max_length: int = Field(256, ge=8, description="token budget per prompt + answer")
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    tie_margin: float = Field(0.0, ge=0, description="judge score differences up to this are ties (½ a win)")


class EvaluateConfig(JobConfig):
    candidate_path: str | None = Field(None, description="the policy that wants to ship")
    incumbent_path: str | None = Field(None, description="the policy serving now")
    judge_by: Literal["judge_rm", "oracle"] = Field("judge_rm", description="who judges the win-rate: the judge "
                                                     "reward model at judge_path, or the world's hidden utility "
                                                     "(oracle: simulation studies only)")
    judge_path: str | None = Field(None, description="the judge: a reward model directory (trained on the judge set, "
                                   "e.g. the loop's train-judge stage), an http(s):// URL answering {prompts, "
                                   "responses} with {scores}, or package.module:function(prompt, response, meta); "
                                   "needed with judge_by: judge_rm")
    output_dir: str = "runs/evaluate"
    world: WorldConfig = WorldConfig()
    prompt_file: str | None = Field(None, description="a user's validation prompts (JSONL/Parquet rows with `prompt` "
                                    "or `messages`) instead of the world's; judged by judge_path")
    test_prompt_file: str | None = Field(None, description="a user's test prompts, answered once after the verdict "
                                         "for the report (never part of it)")
    prompts: int = Field(32, ge=1, description="validation prompts to answer (at most the validation split)")
    samples_per_prompt: int = Field(2, ge=1)
    acceptance: Literal["user_model", "rubric"] = Field("user_model", description="who decides an answer needs "
                                                        "no edit: the world's user model or a rubric")
    interval: Literal["wilson", "bootstrap"] = Field("bootstrap", description="win-rate interval: bootstrap over "
                                                     "prompts (answers to one prompt are correlated) or Wilson")
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_resamples: int = Field(2000, ge=100)
    generation: GenerationSection = GenerationSection()
    judge: JudgeSection = JudgeSection()
    thresholds: GateThresholds = GateThresholds()

    @model_validator(mode="after")
    def _one_judge(self) -> EvaluateConfig:
        if self.judge_by == "judge_rm" and not self.judge_path:
            raise ValueError("judge_by='judge_rm' needs judge_path (--judge DIR: a reward model trained on the judge "
                             "set, not the policy's reward model); or judge_by: oracle in a simulation study")
        if self.judge_by == "oracle" and self.judge_path:
            raise ValueError(f"judge_by='oracle' lets the world's hidden utility judge, but judge_path="
                             f"{self.judge_path!r} is set too; drop one of them")
        if self.judge_by == "oracle" and (self.prompt_file or self.test_prompt_file):
            raise ValueError("judge_by='oracle' reads the world's hidden utility, which judges only the world's "
                             "prompts; with prompt files give --judge RM_DIR|URL|module:function")
        if self.judge_path:
            parse_judge_spec(self.judge_path)  # a malformed URL or function fails here, naming it
        return self

    def judge_source(self) -> RewardSourceSpec:
        """The judge as a reward source (a reward model normalised with its saved statistics)."""
        if not self.judge_path:
            raise EvaluateError("no judge: set judge_path (--judge RM_DIR|URL|module:function)")
        spec = self.judge_path
        return parse_judge_spec(spec if "://" in spec or ":" in spec else str(resolve_model_path(spec)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidate", help="candidate policy directory (sets candidate_path)")
    parser.add_argument("--incumbent", help="incumbent policy directory (sets incumbent_path)")
    parser.add_argument("--judge", help="the judge: RM_DIR, http(s)://URL or package.module:function "
                        "(sets judge_path)")
    parser.add_argument("--prompts", "--eval-prompts", dest="prompts", help="JSONL/Parquet validation prompts the "
                        "gate answers (sets prompt_file; default: the world's validation split)")
    parser.add_argument("--test-prompts", dest="test_prompts", help="JSONL/Parquet test prompts, answered once after "
                        "the verdict for the report (sets test_prompt_file)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser, default_config=None)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"candidate": "candidate_path", "incumbent": "incumbent_path", "judge": "judge_path",
             "out": "output_dir", "prompts": "prompt_file", "test_prompts": "test_prompt_file"}
    return run(resolve_config(EvaluateConfig, args, flags))


def _paths(config: EvaluateConfig) -> dict[str, str]:
    if not config.candidate_path or not config.incumbent_path:
        raise EvaluateError("evaluate needs --candidate DIR and --incumbent DIR (policy checkpoints)")
    return {"candidate": str(resolve_model_path(config.candidate_path)),
            "incumbent": str(resolve_model_path(config.incumbent_path))}


def _answer(config: EvaluateConfig, paths: dict[str, str], sets: dict[str, list[Prompt]],
            timer: StageTimer) -> dict[str, dict[str, dict]]:
    """Per prompt set (validation, and test when given), each policy's answers (generated in parallel, one worker
    each) and, with a judge, the judge's scores."""
    import ray

    from actors.rollout import RolloutWorker
    from actors.scoring import RewardScorer

    gen = config.generation
    actors = {name: ray.remote(RolloutWorker).options(num_cpus=gen.num_cpus, num_gpus=gen.num_gpus).remote(
        paths[name], gen.backend, None, config.seed) for name in POLICIES}
    judge = None
    if config.judge_by == "judge_rm":
        no_penalties = RulePenaltySettings(verbosity_coef=0.0, canned_coef=0.0, repetition_coef=0.0)
        judge = ray.remote(RewardScorer).options(num_cpus=config.judge.num_cpus, num_gpus=config.judge.num_gpus)\
            .remote(None, no_penalties, config.judge.max_length, True, sources=[config.judge_source()])
    try:
        with timer.stage("start_actors"):
            ray.get([a.ready.remote() for a in actors.values()] + ([judge.ready.remote()] if judge else []))
        params = {"max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p,
                  "top_k": gen.top_k, "seed": config.seed}
        answered = {}
        for split, rows in sets.items():
            with timer.stage("generate" if split == GATE_SPLIT else f"generate_{split}"):
                outputs = dict(zip(POLICIES, ray.get([actors[name].generate.remote(
                    [p.conversation for p in rows], [p.prompt_id for p in rows], config.samples_per_prompt, params)
                    for name in POLICIES]), strict=True))
            if judge is not None:
                with timer.stage("judge" if split == GATE_SPLIT else f"judge_{split}"):
                    for name in POLICIES:
                        samples = outputs[name]["samples"]
                        outputs[name]["judge"] = ray.get(judge.score.remote(
                            [s.prompt for s in samples], [s.response for s in samples]))["rm"]
                        outputs[name]["judge_figures"] = ray.get(judge.source_figures.remote())
            answered[split] = outputs
        return answered
    finally:
        for actor in [*actors.values(), *([judge] if judge else [])]:
            ray.kill(actor)


def _pairs(config: EvaluateConfig, outputs: dict[str, dict], scores: dict[str, list[float]]) -> Any:
    """The candidate's win-rate over the paired answers (answer i of each policy to the same prompt)."""
    candidate, incumbent = outputs["candidate"]["samples"], outputs["incumbent"]["samples"]
    if [s.prompt_id for s in candidate] != [s.prompt_id for s in incumbent]:
        raise RuntimeError("the two policies' answers are not in the same prompt order; cannot pair them")
    return win_rate(scores["candidate"], scores["incumbent"], [s.prompt_id for s in candidate],
                    config.judge.tie_margin, config.interval, config.confidence, config.bootstrap_resamples,
                    config.seed)


def _gate(config: EvaluateConfig, oracle: WorldOracle | None,
          outputs: dict[str, dict]) -> tuple[GateResult, dict[str, Any]]:
    """The verdict. With the world (`oracle`), acceptance, safety and hidden utility per answer; without it,
    the gate reads win-rate, length and refusals only."""
    figures, judged = {}, {}
    for name in POLICIES:
        samples = outputs[name]["samples"]
        responses = [s.response for s in samples]
        judged[name] = oracle.judge_answers([s.prompt_id for s in samples], responses, config.acceptance) \
            if oracle is not None else {"accept": None, "unsafe": None, "utility": None}
        figures[name] = policy_figures(judged[name]["accept"], judged[name]["unsafe"],
                                       [len(r.split()) for r in responses],
                                       [len(s.response_ids) for s in samples], outputs[name]["seconds"],
                                       judged[name]["utility"], refusal_rate(responses))
    key = "judge" if config.judge_by == "judge_rm" else None
    scores = {name: outputs[name][key] if key else judged[name]["utility"] for name in POLICIES}
    # the monitors read the incumbent as a run's start and the candidate as its end; with the world as judge,
    # reward and quality are one figure, so "reward up, quality down" cannot be told apart and is left out;
    # with no world there is no quality apart from the judge, so that flag cannot be raised
    monitors = {name: monitor_figures([s.response for s in outputs[name]["samples"]], scores[name],
                                      judged[name]["utility"] or scores[name]) for name in POLICIES}
    for figures_of in monitors.values():
        if key is None:
            figures_of.pop("reward")
        if oracle is None:
            figures_of.pop("true_utility")
    flags = hacking_flags(monitors["incumbent"], monitors["candidate"], "true_utility")
    wins = _pairs(config, outputs, scores)
    candidate, incumbent = outputs["candidate"]["samples"], outputs["incumbent"]["samples"]
    examples = [{"prompt": c.prompt, "candidate": c.response, "incumbent": i.response,
                 "judge_candidate": round(scores["candidate"][n], 4),
                 "judge_incumbent": round(scores["incumbent"][n], 4)}
                for n, (c, i) in enumerate(zip(candidate[:EXAMPLES], incumbent[:EXAMPLES], strict=True))]
    result = gate_verdict(figures["candidate"], figures["incumbent"], wins, config.thresholds, flags)
    return result, {"examples": examples, "monitors": monitors}


def test_figures(config: EvaluateConfig, outputs: dict[str, dict]) -> dict[str, float]:
    """The test prompts' figures (`test/...`), read once after the verdict: win-rate with its interval, and mean
    words and refusal rate per policy."""
    wins = _pairs(config, outputs, {name: outputs[name]["judge"] for name in POLICIES})
    out = {"test/win_rate": wins.rate, "test/win_rate_lower": wins.lower, "test/win_rate_upper": wins.upper,
           "test/answers": float(len(outputs["candidate"]["samples"]))}
    for name in POLICIES:
        responses = [s.response for s in outputs[name]["samples"]]
        out[f"test/mean_words/{name}"] = sum(len(r.split()) for r in responses) / len(responses)
        out[f"test/refusal_rate/{name}"] = refusal_rate(responses)
    return out


def gate_figures(result: GateResult, monitors: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """The sink figures of a gate result (`gate/...`, `hacking/...`, `hacking_flag/...`; names bound in
    `rlhf_ray.telemetry.bindings`)."""
    out: dict[str, float] = {"gate/passed": float(result.passed), "gate/superior": float(result.superior),
                             "gate/win_rate": result.win_rate.rate, "gate/win_rate_lower": result.win_rate.lower,
                             "gate/win_rate_upper": result.win_rate.upper}
    for name, policy in (("candidate", result.candidate), ("incumbent", result.incumbent)):
        for figure, value in policy.to_dict().items():
            if figure != "answers" and value is not None:
                out[f"gate/{figure}/{name}"] = round(float(value), 6)
        for figure in MONITOR_FIGURES:  # words, reward and utility are gate figures already
            if monitors[name].get(figure) is not None:
                out[f"hacking/{figure}_{name}"] = round(float(monitors[name][figure]), 6)
    out.update({f"hacking_flag/{flag}": float(flag in result.flags) for flag in FLAGS})
    return out


def _prompt_sets(config: EvaluateConfig) -> dict[str, list[Prompt]]:
    """The gate's prompts (a user's file or the world's validation split) and, when given, the test file's."""
    if config.prompt_file:
        rows = list(read_prompt_file(config.prompt_file)[: config.prompts])
    else:
        rows = list(WorldPromptSource(config.world, config.seed).split(GATE_SPLIT)[: config.prompts])
        if not rows:
            raise EvaluateError(f"the world (seed {config.seed}, world.validation_fraction="
                                f"{config.world.validation_fraction}) has no validation prompts to evaluate on")
    sets = {GATE_SPLIT: rows}
    if config.test_prompt_file:
        sets[TEST_SPLIT] = list(read_prompt_file(config.test_prompt_file)[: config.prompts])
    return sets


def evaluate(config: EvaluateConfig, sink: Any = None) -> dict[str, Any]:
    """Run the gate; returns the summary (`verdict`, `failed_checks`, ids, figures). Logs through `sink` if given."""
    paths = _paths(config)
    sets = _prompt_sets(config)  # a bad prompt file fails before any Ray work
    timer = StageTimer()
    ensure_ray(config.ray)
    answered = _answer(config, paths, sets, timer)
    outputs = answered[GATE_SPLIT]
    world = config.prompt_file is None
    with timer.stage("gate"):
        result, extras = _gate(config, WorldOracle(config.world, config.seed) if world else None, outputs)
    registry = lineage_for(config)
    ids = {name: register_input_checkpoint(registry, paths[name]) for name in POLICIES}
    judge_id = _judge_id(config, registry)
    report = {**result.to_dict(), "candidate_id": ids["candidate"], "incumbent_id": ids["incumbent"],
              "judge": judge_id, "judge_by": config.judge_by, "split": GATE_SPLIT, "prompts": len(sets[GATE_SPLIT]),
              "prompt_source": config.prompt_file or "world", "samples_per_prompt": config.samples_per_prompt,
              "acceptance": config.acceptance if world else None, "thresholds": config.thresholds.model_dump()}
    entry = registry.record_event(GATE_EVENT, ids["candidate"], report)
    latency = loop_latency(registry, ids["candidate"], "gated", datetime.now(UTC))
    tested = test_figures(config, answered[TEST_SPLIT]) if TEST_SPLIT in answered else {}
    judge_figures = {f"judge/{k.removeprefix('reward_source/judge/')}/{name}": v for name in POLICIES
                     for k, v in outputs[name].get("judge_figures", {}).items()}
    out = StorageRoot.from_uri(config.output_dir)
    path = out.write_bytes_atomic(json.dumps({**report, **extras, "test": tested, "lineage_event": entry.seq,
                                              "loop_latency": latency}, indent=2, sort_keys=True).encode(), GATE_FILE)
    figures = {**gate_figures(result, extras["monitors"]), **tested, **judge_figures, **latency, **timer.figures()}
    if sink is not None:
        sink.log(figures)
    return {"verdict": result.verdict, "failed_checks": result.failed_checks, "superior": result.superior,
            "candidate_id": ids["candidate"],
            "incumbent_id": ids["incumbent"], "judge": judge_id, "gate_event": entry.seq, "report": path,
            "lineage_root": lineage_root(config), **figures}


def _judge_id(config: EvaluateConfig, registry: Any) -> str:
    """The judge's lineage id (a reward model directory), its URL or function name, or the world's utility."""
    if config.judge_by == "oracle":
        return "world-utility"
    spec = config.judge_source()
    if spec.kind == "rm":
        return register_input_checkpoint(registry, spec.path)
    return spec.url or spec.function or spec.kind


def run(config: EvaluateConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    return sink.close(evaluate(config, sink))
