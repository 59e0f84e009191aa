"""`rlhf-ray ppo` (GRPO estimator) throughput vs TRL's `GRPOTrainer` on the same tiny model, prompts and reward.

    python benchmarks/ppo.py --steps 3 --warmup 1

Both sides train the tiny Llama (built here, seed 0) on the first 64 training prompts of the simulated world, rendered
with the checkpoint's chat template (ours: `prompt_text`; TRL: the prompts are passed as conversations and TRL applies
the same template — the TRL script checks the token ids agree). One iteration = 16 prompts × G=4 samples = 64
samples of at most 32 new tokens (temperature 1, no top-k/top-p), so 4 iterations are one pass over the 64 prompts;
reward = `keyword_coverage` over a fixed keyword list on the response text (no reward model, no penalties), KL
β = 0.05 in the loss (k3) against the frozen start model, group-normalised advantages, clip 0.2, one epoch in 2
minibatches (2 AdamW steps, constant lr), float32 on CPU. TRL (pinned in `benchmarks/requirements-ppo.txt`) runs
`benchmarks/trl_grpo.py` in its own venv (`--trl-python`; made from that file when missing) before Ray starts, once
per torch thread count in `--trl-threads` (1 and 2): TRL is one process, and with 2 threads on 2 busy cores its
OpenMP barriers can stall badly, so the fastest of its runs is the baseline. Our actors hold fractional CPUs, so
Ray gives each one torch thread.

Reported: samples/s over the timed iterations (samples ÷ seconds; warm-up excluded) on both sides and the ratio;
our mean `timing/*` breakdown (stages overlap: reward, reference and old log-probs run concurrently); weight sync
(`PPOController.sync_weights`: one object-store put, a get + `load_state_dict` + digest on each rollout worker) vs
a plain in-process `copy_` of the same state dict (and what one `state_digest` of it costs here); mean
`timing/iteration` with 1, 2 and 4 rollout workers (their CPU reservation split so the total stays 0.5 CPU).
Ray gets 2 CPUs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from actors.ppo_controller import PPOController, PromptSampler
from jobs.ppo import PPOConfig, controller_for
from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
from rlhf_ray.models import init_model, load_causal_lm
from rlhf_ray.rollout.weights import cpu_state_dict, state_dict_nbytes, state_digest
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.telemetry import MetricsSink

ROOT = Path(__file__).resolve().parent.parent
WORLD = WorldConfig(num_prompts=200)
KEYWORDS = ("account", "password", "check", "order", "restart", "security", "email", "payment")
ROLLOUT_CPUS = 0.5  # split over the rollout workers, so 1, 2 and 4 workers reserve the same CPU
DEFAULT_TRL_PYTHON = "/tmp/rlhf-ray-trl-venv/bin/python"


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


# ---- TRL ------------------------------------------------------------------------------------------------------
def trl_python(python: str, requirements: Path) -> str:
    """TRL's interpreter, building its venv from `requirements` when missing: torch alone first (so pip takes the
    CPU wheel instead of pulling CUDA), then the rest."""
    if Path(python).exists():
        return python
    venv = Path(python).parent.parent
    pins = [line.strip() for line in requirements.read_text().splitlines() if line.strip() and not line.startswith("#")]
    torch_pin = next(pin for pin in pins if pin.startswith("torch=="))
    steps = [[sys.executable, "-m", "venv", str(venv)], [python, "-m", "pip", "install", "-q", torch_pin],
             [python, "-m", "pip", "install", "-q", "-r", str(requirements)]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout)[-800:]}")
    return python


def run_trl(args: argparse.Namespace, model_dir: str, prompts: list[str], work: Path, threads: int) -> dict[str, Any]:
    python = trl_python(args.trl_python, ROOT / "benchmarks" / "requirements-ppo.txt")
    spec = {"model_dir": model_dir, "prompts": prompts, "keywords": list(KEYWORDS),
            "penalties_path": str(ROOT / "rlhf_ray" / "algos" / "penalties.py"), "group_size": args.group_size,
            "prompts_per_iteration": args.prompts_per_iteration, "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0, "lr": args.lr, "beta": args.beta, "clip_eps": 0.2,
            "num_minibatches": args.minibatches, "max_grad_norm": 1.0, "warmup_iterations": args.warmup,
            "iterations": args.steps, "seed": 0, "output_dir": str(work / f"trl-{threads}"), "torch_threads": threads}
    spec_path, result_path = work / f"trl_spec_{threads}.json", work / f"trl_result_{threads}.json"
    spec_path.write_text(json.dumps(spec))
    started = time.perf_counter()
    done = subprocess.run([python, str(ROOT / "benchmarks" / "trl_grpo.py"), str(spec_path), str(result_path)],
                          capture_output=True, text=True, timeout=args.trl_timeout)
    if done.returncode:
        raise RuntimeError(f"trl_grpo.py exited {done.returncode}: {(done.stderr or done.stdout)[-800:]}")
    result = json.loads(result_path.read_text())
    result["wall_s"] = time.perf_counter() - started
    for key in ("samples_per_s", "tokens_per_s", "iteration_s", "generate_s", "wall_s", "train_s_total",
                "response_tokens_mean", "reward_mean"):
        result[key] = _round(result[key], 4)
    return result


def trl_side(args: argparse.Namespace, model_dir: str, prompts: list[str], work: Path) -> dict[str, Any]:
    """TRL once per torch thread count; the fastest run is the baseline, the others are listed by thread count."""
    runs: dict[str, dict[str, Any]] = {}
    for threads in sorted({int(t) for t in args.trl_threads.split(",")}):
        try:
            runs[str(threads)] = run_trl(args, model_dir, prompts, work, threads)
        except Exception as error:  # the benchmark still reports our side
            runs[str(threads)] = {"error": f"{type(error).__name__}: {error}"[:1000]}
    good = {t: r for t, r in runs.items() if "samples_per_s" in r}
    if not good:
        return {"error": "; ".join(f"{t} thread(s): {r['error']}" for t, r in runs.items())}
    best = max(good, key=lambda t: good[t]["samples_per_s"])
    by_threads = {t: ({k: r[k] for k in ("samples_per_s", "iteration_s", "iteration_s_each", "generate_s")}
                      if t in good else r) for t, r in runs.items()}
    return {**good[best], "by_torch_threads": by_threads}


# ---- ours -----------------------------------------------------------------------------------------------------
def ppo_config(args: argparse.Namespace, model_dir: str, work: Path, workers: int) -> PPOConfig:
    return PPOConfig(
        model_path=model_dir, output_dir=str(work / f"ppo-{workers}"), world=WORLD, seed=0,
        iterations=args.warmup + args.steps, prompts_per_iteration=args.prompts_per_iteration,
        samples_per_prompt=args.group_size,
        rollout={"num_workers": workers, "num_cpus": ROLLOUT_CPUS / workers, "max_new_tokens": args.max_new_tokens,
                 "temperature": 1.0, "top_p": 1.0, "top_k": 0},
        learner={"num_workers": 1, "num_cpus": 0.5, "torch_threads": args.learner_threads, "lr": args.lr, "epochs": 1,
                 "num_minibatches": args.minibatches, "clip_eps": 0.2, "entropy_coef": 0.0, "max_grad_norm": 1.0,
                 "weight_decay": 0.0},
        reward={"rule_keywords": list(KEYWORDS)},  # penalty coefficients default to 0: the rule reward alone
        kl={"coef": args.beta}, advantage={"estimator": "grpo", "whiten": False, "grpo_scale": "group"},
        ray=RayConfig(num_cpus=2, log_to_driver=False), wandb=WandbConfig(mode="disabled"),
        lineage=LineageConfig(root=str(work / "lineage")))


def start_controller(args: argparse.Namespace, model_dir: str, work: Path, workers: int,
                     rows: list[dict[str, str]]) -> PPOController:
    config = ppo_config(args, model_dir, work, workers)
    controller = controller_for(config, MetricsSink("ppo", WandbConfig(mode="disabled"), config.output_dir))
    # the benchmark's 64-prompt pool instead of the whole training split (same sampler, same seed)
    controller.prompts = PromptSampler(rows, config.prompts_per_iteration, config.seed, config.data_cpus)
    return controller


def timed_steps(controller: PPOController, warmup: int, steps: int) -> list[dict[str, Any]]:
    for _ in range(warmup):
        controller.step()
    return [controller.step() for _ in range(steps)]


def summarize(metrics: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    seconds = [m["timing/iteration"] for m in metrics]
    keys = sorted({k for m in metrics for k in m if k.startswith("timing/")})
    return {"samples_per_s": _round(samples * len(seconds) / sum(seconds), 2),
            "samples_per_s_median_step": _round(samples / statistics.median(seconds), 2),
            "samples_per_s_best_step": _round(samples / min(seconds), 2),
            "tokens_per_s": _round(sum(m["tokens_per_s"] * m["timing/iteration"] for m in metrics) / sum(seconds), 1),
            "iteration_s_each": [_round(s, 3) for s in seconds],
            "timing": {k.removeprefix("timing/"): _round(statistics.fmean(m[k] for m in metrics)) for k in keys},
            "response_tokens_mean": _round(statistics.fmean(m["response/tokens"] for m in metrics), 2),
            "reward_mean": _round(statistics.fmean(m["reward/total"] for m in metrics)),
            "kl_loss_mean": _round(statistics.fmean(m.get("policy/kl_loss", 0.0) for m in metrics), 6)}


def weight_sync(controller: PPOController, model_dir: str, repeats: int) -> dict[str, Any]:
    """`sync_weights()` vs `copy_` of the same tensors into preallocated ones, in this process."""
    controller.sync_weights()  # warm
    sync = [controller.sync_weights()["timing/sync"] for _ in range(repeats)]
    state = cpu_state_dict(load_causal_lm(model_dir))
    targets = {name: torch.empty_like(tensor) for name, tensor in state.items()}
    copies = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for name, tensor in state.items():
            targets[name].copy_(tensor)
        copies.append(time.perf_counter() - started)
    copies = copies[1:]  # the first touches fresh pages
    digests = []  # each worker's load_weights also hashes what it loaded (state_digest), part of sync_s
    for _ in range(3):
        started = time.perf_counter()
        state_digest(targets)
        digests.append(time.perf_counter() - started)
    workers = len(controller.rollout)
    nbytes = state_dict_nbytes(state)
    return {"bytes": nbytes, "tensors": len(state), "rollout_workers": workers, "repeats": repeats,
            "sync_s_mean": _round(statistics.fmean(sync), 5), "sync_s_median": _round(statistics.median(sync), 5),
            "plain_copy_s_mean": _round(statistics.fmean(copies), 6),
            "plain_copy_s_median": _round(statistics.median(copies), 6),
            "plain_copy_x_workers_s": _round(statistics.median(copies) * workers, 6),
            "plain_copy_gb_per_s": _round(nbytes / statistics.median(copies) / 1e9, 2),
            "state_digest_s_median": _round(statistics.median(digests), 5),
            "sync_over_copy_x_workers": _round(statistics.median(sync) / (statistics.median(copies) * workers), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompt pool: the first N training prompts")
    parser.add_argument("--prompts-per-iteration", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--minibatches", type=int, default=2, help="optimizer steps per iteration (both sides)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--learner-threads", type=int, default=None,
                        help="torch threads of the policy learner (default: one per whole reserved CPU)")
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient (in the loss, k3) on both sides")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations")
    parser.add_argument("--workers", default="1,2,4", help="rollout worker counts for the step-time sweep")
    parser.add_argument("--sync-repeats", type=int, default=10)
    parser.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON,
                        help="python of TRL's venv (built from benchmarks/requirements-ppo.txt when missing)")
    parser.add_argument("--trl-timeout", type=int, default=600)
    parser.add_argument("--trl-threads", default="1,2",
                        help="torch thread counts TRL runs with; the fastest is the baseline")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL comparison")
    args = parser.parse_args()
    sweep = sorted({int(w) for w in args.workers.split(",")} | {2})
    samples = args.prompts_per_iteration * args.group_size
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    world = World(WORLD, 0)
    pool = world.split("train")[: args.prompts]
    rows = [{"prompt_id": p.prompt_id, "prompt": p.text} for p in pool]
    result: dict[str, Any] = {
        "benchmark": "ppo", "model": "tiny", "prompts": len(rows), "prompts_per_iteration": args.prompts_per_iteration,
        "group_size": args.group_size, "samples_per_iteration": samples, "max_new_tokens": args.max_new_tokens,
        "minibatches": args.minibatches, "lr": args.lr, "beta": args.beta, "warmup": args.warmup, "steps": args.steps,
        "keywords": list(KEYWORDS), "ray_cpus": 2}
    # Ray and TRL write progress to stdout; keep stdout for the one JSON line.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        work = Path(tmp)
        model_dir = str(init_model(world.corpus(), work / "model", "tiny", seed=0).path)
        trl: dict[str, Any]
        if args.no_trl:
            trl = {"error": "skipped (--no-trl)"}
        else:
            trl = trl_side(args, model_dir, [p.text for p in pool], work)
        ours: dict[str, Any] = {}
        scaling: dict[str, Any] = {}
        for workers in [2] + [w for w in sweep if w != 2]:
            controller = start_controller(args, model_dir, work, workers, rows)
            try:
                summary = summarize(timed_steps(controller, args.warmup, args.steps), samples)
                if workers == 2:
                    ours = summary
                    result["weight_sync"] = weight_sync(controller, model_dir, args.sync_repeats)
            finally:
                controller.shutdown()
            scaling[str(workers)] = {"iteration_s_mean": summary["timing"]["iteration"],
                                     "generate_s_mean": summary["timing"]["generate"],
                                     "samples_per_s": summary["samples_per_s"],
                                     "rollout_cpus_each": ROLLOUT_CPUS / workers}
        ray.shutdown()
    result["ours"] = {"rollout_workers": 2, **ours}
    result["trl"] = trl
    if "samples_per_s" in trl:
        result["speedup_vs_trl"] = _round(ours["samples_per_s"] / trl["samples_per_s"], 3)
        result["speedup_vs_trl_median_step"] = _round(
            ours["samples_per_s_median_step"] / (samples / statistics.median(trl["iteration_s_each"][args.warmup:])), 3)
        result["speedup_vs_trl_best_step"] = _round(
            ours["samples_per_s_best_step"] / (samples / min(trl["iteration_s_each"][args.warmup:])), 3)
        result["speedup_vs_trl_by_torch_threads"] = {
            t: _round(ours["samples_per_s"] / r["samples_per_s"], 3)
            for t, r in trl["by_torch_threads"].items() if "samples_per_s" in r}
    result["rollout_workers_sweep"] = {k: scaling[k] for k in sorted(scaling, key=int)}
    result["total_s"] = _round(time.perf_counter() - started, 1)
    # other work on the machine disturbs every figure: 1-minute load averages (2 cores) at start and end
    result["load_avg_1m"] = {"start": _round(load_start, 2), "end": _round(os.getloadavg()[0], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
