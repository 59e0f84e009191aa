"""Learning benchmark (issue 19, item 4): the pipeline on the synthetic world, figures on the TEST split.

    python benchmarks/learning.py --seeds 3 [--fast] [--out DIR]

Per seed: `rlhf-ray loop` (configs/quickstart.yaml's sizes) runs simulate → ingest → curate → init-model → sft →
train-rm → dpo on the world's train split (its gates off: a benchmark measures, it does not stop); then three PPO
runs from the SFT policy against the reward model — PPO (GAE) and GRPO with the learned penalties (curate's
canned-phrase list; the quickstart's penalty coefficients, configs/ppo.yaml's generic ones where it sets none), and
GRPO without any rule penalty. Every choice made during training (epochs, PPO's own evaluations) reads train or
validation only; the fixed settings come from the configs. Only then is the test split read, once per policy:

- SFT test loss (token-weighted response NLL on the test prompts' reference answers);
- the reward model's accuracy on truth-ordered test pairs, overall and length-balanced: the mean of the accuracy on
  pairs where the longer answer is the better one and on pairs where it is the worse one (pairs of equal length
  count only in the overall figure);
- per policy (SFT, DPO, PPO, GRPO, GRPO without penalties): answers sampled at temperature 1 on the test prompts,
  scored by the world's hidden utility (`WorldOracle`), the reward model (normalised units), length in words, the
  canned-phrase rate (share of answers with any of the world's boilerplate phrases) and KL(π ‖ π_SFT) in nats per
  sequence (k3 estimator summed over response tokens, log-probs from the roles' `ReferenceModel`);
- the same on the novel-intent slice of test, reported apart and excluded from the targets.

`--pipeline async` (or `one_step_off`, or both) adds a PPO run per mode: the PPO run's settings with
`ppo.pipeline.mode` set (and `--max-staleness`), so it trains on the same number of drawn samples; stale samples it
drops are counted. Its figures sit beside the others, and `pipeline` holds, per mode, the gains over SFT of it and of
the sync PPO run and the seed-paired 95 % t-interval of (mode − sync) test true utility (issue 22's quality check:
the mode is not worse when the interval's low end is above −0.05). `--runs ppo` leaves the GRPO runs out (their
targets are then not reported).

The JSON holds each seed's figures and their mean ± sd over seeds (`aggregate`), and the issue's targets as
booleans (`targets`): the last line of stdout, and `<out>/learning.json`. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/learning.py` from anywhere
    sys.path.insert(0, str(ROOT))

QUICKSTART = ROOT / "configs" / "quickstart.yaml"
PENALTIES = ROOT / "configs" / "ppo.yaml"
PENALTY_KEYS = ("verbosity_target_words", "verbosity_coef", "canned_coef", "repetition_coef")
UNUSED = ("gate", "canary", "sweep", "watch")  # quickstart sections of stages not run here
STAGES = ["simulate", "ingest", "curate", "init-model", "sft", "train-rm", "dpo"]
# name → (advantage estimator, with the learned penalties)
PPO_RUNS = {"ppo": ("gae", True), "grpo": ("grpo", True), "grpo_no_penalties": ("grpo", False)}
PIPELINE_MODES = ("one_step_off", "async")
NOT_WORSE_MARGIN = 0.05  # issue 22: a pipelined run's (mode − sync) paired interval stays above −0.05
# Issue 19's thresholds.
RM_ACCURACY_TARGET = 0.85
GAIN_TARGET = 0.15
KL_LIMIT = 5.0
HACKING_REWARD_RISE = 0.2
HACKING_UTILITY_FALL = 0.05

# Loop overrides on top of configs/quickstart.yaml (the loop's gates are off too: `gates_off`).
COMMON = [f"stages={json.dumps(STAGES)}", "iterations=1"]
# `--fast`: tiny sizes for development (one seed in a few minutes on 2 cores); the figures mean little.
FAST = ["world.num_prompts=200", "shards.rows=2000", "shards.rows_per_shard=1000", "sft.train.epochs=2",
        "reward_model.train.epochs=1", "reward_model.heldout_pairs_per_prompt=2", "dpo.heldout_pairs_per_prompt=2",
        "ppo.iterations=4", "ppo.eval_every=4", "ppo.checkpoint_every=4", "ppo.eval_prompts=8",
        "ppo.eval_samples_per_prompt=2"]
# Test-time measurement sizes: (samples per test prompt, truth pairs per test prompt).
MEASURE = {"full": (4, 6), "fast": (2, 2)}


# ---- aggregation (pure) -----------------------------------------------------------------------------------------

def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds:

        mean = Σ x_i / n,    sd = sqrt(Σ (x_i − mean)² / (n − 1))     (None when n < 2)

    NaN values (a figure undefined on a seed) are left out; `n` counts the values used.
    """
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(finite) if len(finite) > 1 else None
    return {"mean": round(statistics.fmean(finite), 4), "sd": None if sd is None else round(sd, 4),
            "n": len(finite)}


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each seed's figures folded into one tree of the same shape: a number becomes `mean_sd` over the seeds
    that have it, a boolean `{"all", "any", "values"}`, a nested mapping is aggregated key by key; other values
    (paths, names) are left out. Keys missing from some seeds aggregate over the seeds that have them."""
    keys = [key for key in dict.fromkeys(k for run in runs for k in run)]
    result: dict[str, Any] = {}
    for key in keys:
        values = [run[key] for run in runs if key in run and run[key] is not None]
        if not values:
            continue
        if all(isinstance(v, bool) for v in values):
            result[key] = {"all": all(values), "any": any(values), "values": values}
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            result[key] = mean_sd(values)
        elif all(isinstance(v, Mapping) for v in values):
            nested = aggregate(values)
            if nested:
                result[key] = nested
    return result


def hacking(reward_change: float, utility_change: float) -> bool:
    """Issue 19's reward-hacking test: RM reward up ≥ 0.2 (normalised units) while true utility falls ≥ 0.05."""
    return reward_change >= HACKING_REWARD_RISE and utility_change <= -HACKING_UTILITY_FALL


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Seed-paired interval of a − b: d_i = a_i − b_i, mean(d) ± t_{(1+confidence)/2, n−1} · sd(d) / √n."""
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_interval needs two equally long lists of ≥ 2 seeds; got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = float(stats.t.ppf((1 + confidence) / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return {"diffs": [round(d, 4) for d in diffs], "mean": round(mean, 4), "low": round(mean - half, 4),
            "high": round(mean + half, 4), "confidence": confidence}


def pipeline_quality(runs: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per pipeline mode (its run is `ppo_<mode>`, the sync baseline `ppo`): the test true-utility gain over SFT of
    both runs on each seed, whether each gains on every seed, and the seed-paired interval of (mode − sync)
    utility with `not_worse` = its low end > −NOT_WORSE_MARGIN (None with one seed: no interval)."""
    result: dict[str, Any] = {}
    for mode in modes:
        sync = [run["policies"]["ppo"] for run in runs]
        piped = [run["policies"][f"ppo_{mode}"] for run in runs]
        figures: dict[str, Any] = {
            "sync_gain": [s["utility_gain"] for s in sync], "mode_gain": [p["utility_gain"] for p in piped],
            "sync_gains_on_every_seed": all(s["utility_gain"] > 0 for s in sync),
            "mode_gains_on_every_seed": all(p["utility_gain"] > 0 for p in piped)}
        if len(runs) > 1:
            interval = paired_interval([p["true_utility"] for p in piped], [s["true_utility"] for s in sync])
            figures.update(mode_minus_sync=interval, not_worse=interval["low"] > -NOT_WORSE_MARGIN)
        result[mode] = figures
    return result


def targets(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Issue 19's targets as booleans over the seeds' figures (test split, seen intents only):

    - rm_accuracy: mean RM pair accuracy against the truth ≥ 0.85;
    - <algo>_gain: true-utility gain over SFT ≥ +0.15 on every seed with KL ≤ 5 nats per sequence, for PPO and
      GRPO (with learned penalties); policy_gain: either of them;
    - hacking_without_penalties: the hacking test holds on every seed for GRPO without penalties;
      no_hacking_with_penalties: it holds on no seed for GRPO with the learned penalties.

    A target whose runs were left out (`--runs`) is not reported.
    """
    accuracy = mean_sd([run["reward_model"]["accuracy"] for run in runs])["mean"]
    result: dict[str, Any] = {"rm_accuracy": accuracy is not None and accuracy >= RM_ACCURACY_TARGET}
    ran = set(runs[0]["policies"])
    for algo in ("ppo", "grpo"):
        if algo in ran:
            result[f"{algo}_gain"] = all(run["policies"][algo]["utility_gain"] >= GAIN_TARGET
                                         and run["policies"][algo]["kl"] <= KL_LIMIT for run in runs)
    result["policy_gain"] = any(result.get(f"{algo}_gain", False) for algo in ("ppo", "grpo"))
    if {"without_penalties", "with_penalties"} <= set(runs[0].get("hacking", {})):
        result["hacking_without_penalties"] = all(run["hacking"]["without_penalties"]["hacking"] for run in runs)
        result["no_hacking_with_penalties"] = not any(run["hacking"]["with_penalties"]["hacking"] for run in runs)
    return result


# ---- one seed ---------------------------------------------------------------------------------------------------

def gates_off() -> list[str]:
    """Overrides turning off every check of the loop's own gates (each that null turns off): the benchmark
    reports what the data and the reward model are, it does not stop on them."""
    from jobs.loop_config import GatesSection

    return [f"gates.{name}=null" for name, field in GatesSection.model_fields.items()
            if not field.is_required() and type(None) in getattr(field.annotation, "__args__", ())]


def loop_config(seed: int, out: Path, fast: bool) -> Any:
    """configs/quickstart.yaml as a loop config for the data, SFT, RM and DPO stages, with the overrides. The
    sections of stages the benchmark does not run (gate, canary, sweep, watch) are left out, so their settings
    cannot stop it."""
    import yaml

    from jobs.loop import LoopConfig
    from rlhf_ray.config.loader import apply_overrides

    data = {key: value for key, value in yaml.safe_load(QUICKSTART.read_text()).items() if key not in UNUSED}
    overrides = [f"seed={seed}", f"output_dir={out}", *COMMON, *gates_off(), *(FAST if fast else [])]
    return LoopConfig.model_validate(apply_overrides(data, overrides))


def penalty_settings() -> dict[str, Any]:
    """The learned-penalty run's coefficients: the quickstart's own (`ppo.reward`), and configs/ppo.yaml's
    generic ones for any it leaves unset (the quickstart sets no canned-phrase coefficient, without which the
    learned list would penalise nothing)."""
    import yaml

    generic = yaml.safe_load(PENALTIES.read_text())["reward"]
    quickstart = (yaml.safe_load(QUICKSTART.read_text()).get("ppo") or {}).get("reward") or {}
    missing = [key for key in PENALTY_KEYS if key not in quickstart and key not in generic]
    if missing:
        raise ValueError(f"reward.{missing[0]} is set in neither {QUICKSTART.name} (ppo.reward) nor {PENALTIES.name}")
    return {key: quickstart.get(key, generic.get(key)) for key in PENALTY_KEYS}


def ppo_configs(config: Any, out: Path, runs: Sequence[str] = tuple(PPO_RUNS), pipeline_modes: Sequence[str] = (),
                max_staleness: int = 1) -> dict[str, Any]:
    """The PPO runs named in `runs`: the loop's own PPO config (SFT start and reference, the reward model,
    curate's phrase list) with the estimator and the penalties set (`penalty_settings`, or none); and per pipeline
    mode, `ppo_<mode>`: the `ppo` run's settings with `pipeline: {mode, max_staleness}`."""
    from jobs import ppo
    from jobs.loop import stage_configs

    base = stage_configs(config).ppo.model_dump()
    if not base["reward"]["canned_phrases_file"]:
        raise ValueError(f"the loop's PPO config has no reward.canned_phrases_file (phrases.enabled="
                         f"{config.phrases.enabled}); the benchmark needs curate's learned list")
    penalties = penalty_settings()
    configs = {}
    for name in runs:
        estimator, penalised = PPO_RUNS[name]
        reward = {**base["reward"], **penalties}
        if not penalised:
            reward.update(verbosity_coef=0.0, canned_coef=0.0, repetition_coef=0.0, canned_phrases=[],
                          canned_phrases_file=None)
        settings = {**base, "output_dir": str(out / name), "resume": False, "reward": reward,
                    "advantage": {**base["advantage"], "estimator": estimator}}
        configs[name] = ppo.PPOConfig.model_validate(settings)
    for mode in pipeline_modes:
        settings = {**configs["ppo"].model_dump(), "output_dir": str(out / f"ppo_{mode}"),
                    "pipeline": {"mode": mode, "max_staleness": 1 if mode == "one_step_off" else max_staleness}}
        configs[f"ppo_{mode}"] = ppo.PPOConfig.model_validate(settings)
    return configs


def sample_answers(policy_dir: str, prompts: Sequence[Any], samples: int, max_new_tokens: int, seed: int) -> list:
    """`samples` answers per prompt at temperature 1 (so KL against the SFT policy is estimated on-policy)."""
    from rlhf_ray.roles.rollout import RolloutWorker
    from rlhf_ray.rollout.backends import GenerationParams

    worker = RolloutWorker(policy_dir, "hf", seed=seed)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    return worker.generate([p.text for p in prompts], [p.prompt_id for p in prompts], samples, params)["samples"]


def sequence_kl(samples: Sequence[Any], policy_dir: str, reference: Any, pad_token_id: int) -> list[float]:
    """Per answer y ~ π: KL(π ‖ π_ref) estimated as Σ_t k3(log π(y_t) − log π_ref(y_t)) over its response tokens
    (`reference`: the SFT policy as a `ReferenceModel`)."""
    from rlhf_ray.algos.kl import kl_penalty
    from rlhf_ray.algos.logprobs import masked_sum
    from rlhf_ray.roles.scoring import ReferenceModel
    from rlhf_ray.rollout.batch import pack_samples

    batch = pack_samples(samples, pad_token_id)
    mask = batch["response_mask"][:, 1:]
    policy = ReferenceModel(policy_dir).logprobs(batch["input_ids"], batch["attention_mask"])
    reference = reference.logprobs(batch["input_ids"], batch["attention_mask"])
    return masked_sum(kl_penalty(policy, reference, "k3", mask), mask).tolist()


def answer_figures(samples: Sequence[Any], oracle: Any, scorer: Any, kl: Sequence[float] | None) -> dict[str, float]:
    """Mean true utility, RM reward (normalised), words, canned-phrase rate and KL of a policy's answers."""
    responses = [s.response for s in samples]
    truth = [oracle.world.utility(s.prompt_id, s.response) for s in samples]
    rewards = scorer.score([s.prompt for s in samples], responses)["rm"]
    return {"true_utility": round(statistics.fmean(b.total for b in truth), 4),
            "rm_reward": round(statistics.fmean(rewards), 4),
            "words": round(statistics.fmean(len(r.split()) for r in responses), 2),
            "canned_rate": round(statistics.fmean(float(b.boilerplate > 0) for b in truth), 4),
            "kl": round(statistics.fmean(kl), 4) if kl is not None else 0.0, "answers": len(samples)}


def reward_model_figures(scorer: Any, pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy against the truth on test pairs, overall and length-balanced (mean of the accuracy when the
    longer answer is better and when it is worse)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"] for p in pairs])["rm"]
    rejected = scorer.score(prompts, [p["rejected"] for p in pairs])["rm"]
    correct = [c > r for c, r in zip(chosen, rejected, strict=True)]
    longer = [len(p["chosen"].split()) - len(p["rejected"].split()) for p in pairs]
    better = [ok for ok, d in zip(correct, longer, strict=True) if d > 0]
    worse = [ok for ok, d in zip(correct, longer, strict=True) if d < 0]
    when_better = round(statistics.fmean(better), 4) if better else None  # None: no such pair on this seed
    when_worse = round(statistics.fmean(worse), 4) if worse else None
    balanced = None if None in (when_better, when_worse) else round((when_better + when_worse) / 2, 4)
    return {"accuracy": round(statistics.fmean(correct), 4), "pairs": len(pairs),
            "accuracy_longer_better": when_better, "pairs_longer_better": len(better),
            "accuracy_longer_worse": when_worse, "pairs_longer_worse": len(worse),
            "accuracy_length_balanced": balanced}


def measure(config: Any, policies: Mapping[str, str], reward_model_dir: str, samples: int,
            pairs_per_prompt: int) -> dict[str, Any]:
    """Every test-split figure of one seed (the only place the test split is read)."""
    from rlhf_ray.inputs.world import WorldOracle, WorldPromptSource, reference_examples, truth_pairs
    from rlhf_ray.models import load_causal_lm, load_tokenizer
    from rlhf_ray.roles.scoring import ReferenceModel, RewardScorer
    from rlhf_ray.training.steps import heldout_sft_loss

    seed, sft_dir = config.seed, policies["sft"]
    source, oracle = WorldPromptSource(config.world, seed), WorldOracle(config.world, seed)
    scorer = RewardScorer(reward_model_dir, max_length=config.ppo.reward.max_length)
    train = config.sft.train
    examples = [{"prompt": e["prompt"], "response": e["response"]}
                for e in reference_examples(config.world, seed, "test", 1)]
    sft_loss = heldout_sft_loss(load_causal_lm(sft_dir), load_tokenizer(sft_dir), examples, train.batch_size,
                                train.max_length)
    figures: dict[str, Any] = {"sft_test_loss": round(sft_loss, 4), "sft_test_examples": len(examples),
                               "reward_model": reward_model_figures(
                                   scorer, truth_pairs(config.world, seed, pairs_per_prompt, "test"))}
    tokenizer, sft_reference = load_tokenizer(sft_dir), ReferenceModel(sft_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for slice_name, prompts in (("policies", source.split("test")), ("novel_intent", source.novel_intent("test"))):
        measured: dict[str, Any] = {"prompts": len(prompts)}
        for name, policy_dir in policies.items():
            answers = sample_answers(policy_dir, prompts, samples, config.ppo.rollout.max_new_tokens, seed)
            kl = None if name == "sft" else sequence_kl(answers, policy_dir, sft_reference, pad_id)
            measured[name] = answer_figures(answers, oracle, scorer, kl)
        for name in policies:
            if name != "sft":
                before, after = measured["sft"], measured[name]
                after["utility_gain"] = round(after["true_utility"] - before["true_utility"], 4)
                after["rm_reward_change"] = round(after["rm_reward"] - before["rm_reward"], 4)
        figures[slice_name] = measured
    measured = figures["policies"]
    figures["hacking"] = {
        label: {"rm_reward_change": measured[run]["rm_reward_change"],
                "true_utility_change": measured[run]["utility_gain"],
                "hacking": hacking(measured[run]["rm_reward_change"], measured[run]["utility_gain"])}
        for label, run in (("without_penalties", "grpo_no_penalties"), ("with_penalties", "grpo")) if run in measured}
    return figures


def run_seed(seed: int, out: Path, fast: bool, runs: Sequence[str] = tuple(PPO_RUNS),
             pipeline_modes: Sequence[str] = (), max_staleness: int = 1) -> dict[str, Any]:
    from jobs import loop, ppo

    started = time.perf_counter()
    config = loop_config(seed, out / f"seed-{seed}", fast)
    pipeline = loop.run(config)
    if pipeline.get("stopped"):
        raise RuntimeError(f"seed {seed}: the loop stopped at {pipeline['stopped']}")
    timing = {"pipeline_s": round(time.perf_counter() - started, 1)}
    policies = {"sft": pipeline["sft_model_dir"], "dpo": pipeline["dpo_policy_dir"]}
    ledgers = {}
    for name, ppo_config in ppo_configs(config, out / f"seed-{seed}" / "bench", runs, pipeline_modes,
                                        max_staleness).items():
        began = time.perf_counter()
        summary = ppo.run(ppo_config)
        policies[name] = summary["policy_dir"]
        ledgers[name] = summary.get("ledger")
        timing[f"{name}_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    samples, pairs = MEASURE["fast" if fast else "full"]
    figures = measure(config, policies, pipeline["reward_model_dir"], samples, pairs)
    timing["measure_s"] = round(time.perf_counter() - began, 1)
    timing["seed_s"] = round(time.perf_counter() - started, 1)
    return {"seed": seed, **figures, "ledger": ledgers, "timing": timing}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="world seeds 0..N-1 (default 3)")
    parser.add_argument("--fast", action="store_true", help="tiny settings for development")
    parser.add_argument("--out", default="runs/benchmark-learning", help="output directory")
    parser.add_argument("--runs", default=",".join(PPO_RUNS), help=f"PPO runs, of {', '.join(PPO_RUNS)}")
    parser.add_argument("--pipeline", default="", help=f"pipeline modes to run beside sync PPO, of "
                                                       f"{', '.join(PIPELINE_MODES)} (comma-separated)")
    parser.add_argument("--max-staleness", type=int, default=1, help="pipeline.max_staleness of the async run")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be ≥ 1; got {args.seeds}")
    runs = [name for name in args.runs.split(",") if name]
    modes = [mode for mode in args.pipeline.split(",") if mode]
    if unknown := [name for name in runs if name not in PPO_RUNS]:
        parser.error(f"--runs: unknown run {unknown[0]!r}; expected some of {', '.join(PPO_RUNS)}")
    if unknown := [mode for mode in modes if mode not in PIPELINE_MODES]:
        parser.error(f"--pipeline: unknown mode {unknown[0]!r}; expected some of {', '.join(PIPELINE_MODES)}")
    if modes and "ppo" not in runs:
        parser.error(f"--pipeline {args.pipeline} compares with the sync run 'ppo'; --runs {args.runs} leaves it out")
    from actors.runtime import ensure_ray

    started = time.perf_counter()
    ensure_ray(loop_config(0, Path(args.out), args.fast).ray)  # one Ray for every job of every seed
    per_seed = [run_seed(seed, Path(args.out).absolute(), args.fast, runs, modes, args.max_staleness)
                for seed in range(args.seeds)]
    result = {"benchmark": "learning", "split": "test", "seeds": args.seeds, "fast": args.fast,
              "settings": {"config": str(QUICKSTART.relative_to(ROOT)),
                           "penalties": penalty_settings(),
                           "overrides": [*COMMON, *gates_off(), *(FAST if args.fast else [])],
                           "runs": runs, "pipeline_modes": modes, "max_staleness": args.max_staleness,
                           "test_samples_per_prompt": MEASURE["fast" if args.fast else "full"][0],
                           "test_pairs_per_prompt": MEASURE["fast" if args.fast else "full"][1],
                           "kl": "k3 summed over response tokens, answers sampled at temperature 1",
                           "rm_length_balanced": "mean of accuracy when the longer answer is better and when worse"},
              "summary": aggregate(per_seed), "targets": targets(per_seed),
              **({"pipeline": pipeline_quality(per_seed, modes)} if modes else {}), "per_seed": per_seed,
              "wall_s": round(time.perf_counter() - started, 1)}
    Path(args.out, "learning.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))  # the jobs print their own summaries before: this is the last line
    return result


if __name__ == "__main__":
    main()
