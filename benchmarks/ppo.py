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

Ours runs in each `--modes` entry (`ppo.pipeline.mode`: sync, one_step_off, async with `--max-staleness`).

Reported, per side: samples/s = samples that went through optimizer steps (generated samples dropped as stale do
not count) ÷ wall time of the timed iterations (warm-up excluded, the same number of iterations on both sides),
and the ratios to TRL's best; our mean `timing/*` breakdown (stages overlap: reward, reference and old log-probs
run concurrently; in the pipeline modes generation overlaps the update) and the `idle/<role>` shares after the last
step; the CPU-seconds each role's processes spent in the timed window (psutil, per actor process: rollout workers,
scorer, reference, learner; plus the driver and Ray's own processes) and the 2-core bound: the roles' CPU-seconds
per trained sample ÷ 2 is the least wall time per sample two cores allow, so 2 ÷ that sum is the most samples/s any
schedule reaches at today's compute (TRL's CPU-seconds per sample likewise, from its process time); weight sync
(`PPOController.sync_weights`: one object-store put and a load on each rollout worker, the digest every
`rollout.verify_weights_every` syncs; verified and unverified syncs apart) vs a plain in-process `copy_` of the same
state dict (and what one `state_digest` of it costs here); optionally (`--workers 1,2,4`) the mean
`timing/iteration` per rollout worker count (their CPU reservation split so the total stays 0.5 CPU), (`--scaling`)
time per sample at 32 → 64 → 128 → 256 samples per iteration in sync mode. Ray gets 2 CPUs; the 1-minute load
average (2 cores, shared) at start and end is in the JSON. Prints one JSON line.

The quality check (async against sync from an SFT start, judged by the world's true utility on the test split,
3 seeds) needs a trained SFT policy and reward model, not this benchmark's untrained tiny model: it is
`python benchmarks/learning.py --seeds 3 --runs ppo --pipeline async` (its `pipeline` block).
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import ray
import torch

from actors.ppo_controller import PPOController
from jobs.ppo import PPOConfig, controller_for
from rlhf_ray.config import LineageConfig, RayConfig, WandbConfig
from rlhf_ray.models import init_model, load_causal_lm
from rlhf_ray.roles.rollout import verify_due
from rlhf_ray.rollout.prompts import PromptSampler
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
                "response_tokens_mean", "reward_mean", "cpu_s_per_sample"):
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
    by_threads = {t: ({k: r.get(k) for k in ("samples_per_s", "iteration_s", "iteration_s_each", "generate_s",
                                             "cpu_s_per_sample")}
                      if t in good else r) for t, r in runs.items()}
    return {**good[best], "by_torch_threads": by_threads}


# ---- ours -----------------------------------------------------------------------------------------------------
def ppo_config(args: argparse.Namespace, model_dir: str, work: Path, workers: int, mode: str = "sync",
               prompts_per_iteration: int | None = None) -> PPOConfig:
    per_iteration = prompts_per_iteration or args.prompts_per_iteration
    staleness = 1 if mode == "one_step_off" else args.max_staleness
    # Steady state in the timed window: the batches a pipeline generated ahead during the warm-up are matched by
    # as many generated ahead at its end (the controller generates nothing past `iterations`).
    ahead = 0 if mode == "sync" else staleness
    return PPOConfig(
        model_path=model_dir, output_dir=str(work / f"ppo-{mode}-{workers}-{per_iteration}"), world=WORLD,
        iterations=args.warmup + args.steps + ahead, prompts_per_iteration=per_iteration,
        samples_per_prompt=args.group_size,
        rollout={"num_workers": workers, "num_cpus": ROLLOUT_CPUS / workers, "max_new_tokens": args.max_new_tokens,
                 "temperature": 1.0, "top_p": 1.0, "top_k": 0},
        learner={"num_workers": 1, "num_cpus": 0.5, "torch_threads": args.learner_threads, "lr": args.lr, "epochs": 1,
                 "num_minibatches": args.minibatches, "clip_eps": 0.2, "entropy_coef": 0.0, "max_grad_norm": 1.0,
                 "weight_decay": 0.0},
        reward={"rule_keywords": list(KEYWORDS)},  # penalty coefficients default to 0: the rule reward alone
        kl={"coef": args.beta}, advantage={"estimator": "grpo", "whiten": False, "grpo_scale": "group"},
        pipeline={"mode": mode, "max_staleness": staleness},
        ray=RayConfig(num_cpus=2, log_to_driver=False), wandb=WandbConfig(mode="disabled"),
        lineage=LineageConfig(root=str(work / "lineage")))


def start_controller(config: PPOConfig, rows: list[dict[str, str]]) -> PPOController:
    controller = controller_for(config, MetricsSink("ppo", WandbConfig(mode="disabled"), config.output_dir))
    # the benchmark's 64-prompt pool instead of the whole training split (same sampler, same seed)
    controller.prompts = PromptSampler(rows, config.prompts_per_iteration, config.seed)
    return controller


def role_processes(controller: PPOController) -> dict[str, list[psutil.Process]]:
    """Each role's actor processes; "driver" is this process (the controller's own work and Ray's core worker)
    and "ray_system" every other process under it that is no role's (raylet, GCS, idle workers)."""
    def pid(actor: Any) -> int:
        return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))

    roles = {"rollout": [pid(a) for a in controller.rollout.actors], "scorer": [pid(controller.scorer)],
             "reference": [pid(controller.reference)], "learner": [pid(a) for a in controller.learners.actors]}
    if controller.critic:
        roles["critic"] = [pid(a) for a in controller.critic.actors]
    taken = {p for pids in roles.values() for p in pids}
    processes = {role: [psutil.Process(p) for p in pids] for role, pids in roles.items()}
    processes["driver"] = [psutil.Process()]
    processes["ray_system"] = [child for child in psutil.Process().children(recursive=True) if child.pid not in taken]
    return processes


def cpu_seconds(processes: Mapping[str, Sequence[psutil.Process]]) -> dict[str, float]:
    """User + system CPU-seconds so far, summed over each role's processes (a process gone since counts 0)."""
    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    return {role: sum(used(p) for p in group) for role, group in processes.items()}


ROLE_NAMES = ("rollout", "scorer", "reference", "learner", "critic")


def two_core_bound(cpu: Mapping[str, float], samples: int, cores: int = 2) -> dict[str, Any]:
    """The throughput the compute allows on `cores` cores, whatever the schedule.

    Per trained sample the roles spend c = Σ_role cpu[role] / samples CPU-seconds; `cores` cores deliver at most
    `cores` CPU-seconds per second, so a sample takes at least c / cores seconds: samples/s ≤ cores / c. Only the
    roles (`ROLE_NAMES`) count; the driver and Ray's own processes are reported beside (`overhead_s_per_sample`).
    """
    if samples <= 0:
        raise ValueError(f"samples={samples}; expected the trained samples of the timed window (> 0)")
    per_sample = {role: value / samples for role, value in cpu.items()}
    roles = sum(v for r, v in per_sample.items() if r in ROLE_NAMES)
    return {"cpu_s_per_sample": {r: _round(v, 5) for r, v in per_sample.items()},
            "roles_cpu_s_per_sample": _round(roles, 5),
            "overhead_s_per_sample": _round(sum(v for r, v in per_sample.items() if r not in ROLE_NAMES), 5),
            "cores": cores, "min_s_per_sample": _round(roles / cores, 5),
            "max_samples_per_s": _round(cores / roles, 2) if roles > 0 else None}


def timed_steps(controller: PPOController, warmup: int, steps: int) -> dict[str, Any]:
    """`warmup` untimed steps, then `steps` timed ones: their metrics, wall seconds and CPU-seconds per role."""
    processes = role_processes(controller)
    for _ in range(warmup):
        controller.step()
    cpu_before, started = cpu_seconds(processes), time.perf_counter()
    metrics = [controller.step() for _ in range(steps)]
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(processes)
    return {"metrics": metrics, "wall_s": wall, "cpu_s": {r: cpu_after[r] - cpu_before[r] for r in cpu_after}}


def summarize(run: Mapping[str, Any], samples: int) -> dict[str, Any]:
    """samples/s = samples that went through optimizer steps ÷ wall time of the timed steps."""
    metrics, wall = run["metrics"], run["wall_s"]
    trained = sum(samples - int(m.get("pipeline/dropped_stale", 0)) for m in metrics)
    seconds = [m["timing/iteration"] for m in metrics]
    keys = sorted({k for m in metrics for k in m if k.startswith("timing/")})
    return {"samples_per_s": _round(trained / wall, 2), "trained_samples": trained, "wall_s": _round(wall, 3),
            "samples_per_s_median_step": _round(samples / statistics.median(seconds), 2),
            "tokens_per_s": _round(sum(m["tokens_per_s"] * m["timing/iteration"] for m in metrics) / sum(seconds), 1),
            "iteration_s_each": [_round(s, 3) for s in seconds],
            "timing": {k.removeprefix("timing/"): _round(statistics.fmean(m[k] for m in metrics)) for k in keys},
            "idle_share_last_step": {k.removeprefix("idle/"): _round(v, 3) for k, v in metrics[-1].items()
                                     if k.startswith("idle/")},
            "staleness_mean": _round(statistics.fmean(m.get("pipeline/staleness_mean", 0.0) for m in metrics), 3),
            "cpu_s": {r: _round(v, 3) for r, v in run["cpu_s"].items()},
            "bound": two_core_bound(run["cpu_s"], trained),
            "response_tokens_mean": _round(statistics.fmean(m["response/tokens"] for m in metrics), 2),
            "reward_mean": _round(statistics.fmean(m["reward/total"] for m in metrics)),
            "kl_loss_mean": _round(statistics.fmean(m.get("policy/kl_loss", 0.0) for m in metrics), 6)}


def weight_sync(controller: PPOController, model_dir: str, repeats: int) -> dict[str, Any]:
    """`sync_weights()` (verified and unverified syncs apart) vs `copy_` of the same tensors into preallocated
    ones, in this process."""
    every = controller.config.rollout.verify_weights_every
    sync: dict[bool, list[float]] = {True: [], False: []}
    controller.sync_weights()  # warm
    for _ in range(repeats):
        verified = verify_due(controller._syncs, every)
        sync[verified].append(controller.sync_weights()["timing/sync"])
    state = cpu_state_dict(load_causal_lm(model_dir))
    targets = {name: torch.empty_like(tensor) for name, tensor in state.items()}
    copies = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for name, tensor in state.items():
            targets[name].copy_(tensor)
        copies.append(time.perf_counter() - started)
    copies = copies[1:]  # the first touches fresh pages
    digests = []  # what a verified sync adds on each worker (state_digest of what it loaded)
    for _ in range(3):
        started = time.perf_counter()
        state_digest(targets)
        digests.append(time.perf_counter() - started)
    workers = len(controller.rollout)
    nbytes = state_dict_nbytes(state)
    unverified = sync[False] or sync[True]
    return {"bytes": nbytes, "tensors": len(state), "rollout_workers": workers, "repeats": repeats,
            "verify_weights_every": every, "verified_syncs": len(sync[True]),
            "sync_s_median": _round(statistics.median(unverified), 5),
            "sync_s_mean": _round(statistics.fmean(sync[True] + sync[False]), 5),
            "sync_s_verified_median": _round(statistics.median(sync[True]), 5) if sync[True] else None,
            "plain_copy_s_median": _round(statistics.median(copies), 6),
            "plain_copy_x_workers_s": _round(statistics.median(copies) * workers, 6),
            "plain_copy_gb_per_s": _round(nbytes / statistics.median(copies) / 1e9, 2),
            "state_digest_s_median": _round(statistics.median(digests), 5),
            "sync_over_copy_x_workers": _round(statistics.median(unverified) / (statistics.median(copies) * workers),
                                               1)}


def run_ours(args: argparse.Namespace, config: PPOConfig, rows: list[dict[str, str]],
             sync_repeats: int = 0) -> dict[str, Any]:
    controller = start_controller(config, rows)
    try:
        summary = summarize(timed_steps(controller, args.warmup, args.steps),
                            config.prompts_per_iteration * config.samples_per_prompt)
        if sync_repeats:
            summary["weight_sync"] = weight_sync(controller, config.model_path, sync_repeats)
    finally:
        controller.shutdown()
    return summary


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
    parser.add_argument("--modes", default="sync,one_step_off,async", help="our ppo.pipeline.mode runs")
    parser.add_argument("--max-staleness", type=int, default=2, help="pipeline.max_staleness of the async runs")
    parser.add_argument("--workers", default="2",
                        help="rollout worker counts for the step-time sweep (sync mode; 2 is always run)")
    parser.add_argument("--sync-repeats", type=int, default=20)
    parser.add_argument("--scaling", action="store_true", help="time per sample at --scaling-samples (sync mode)")
    parser.add_argument("--scaling-samples", default="32,64,128,256", help="samples per iteration for --scaling")
    parser.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON,
                        help="python of TRL's venv (built from benchmarks/requirements-ppo.txt when missing)")
    parser.add_argument("--trl-timeout", type=int, default=600)
    parser.add_argument("--trl-threads", default="1,2",
                        help="torch thread counts TRL runs with; the fastest is the baseline")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL comparison")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    sweep = sorted({int(w) for w in args.workers.split(",")} - {2})
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
        "max_staleness": args.max_staleness, "keywords": list(KEYWORDS), "ray_cpus": 2, "rollout_workers": 2}
    # Ray and TRL write progress to stdout; keep stdout for the one JSON line.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        work = Path(tmp)
        model_dir = str(init_model(world.corpus(), work / "model", "tiny", seed=0).path)
        trl = ({"error": "skipped (--no-trl)"} if args.no_trl
               else trl_side(args, model_dir, [p.text for p in pool], work))
        ours = {mode: run_ours(args, ppo_config(args, model_dir, work, 2, mode), rows,
                               args.sync_repeats if mode == "sync" else 0) for mode in modes}
        if "sync" in ours:
            result["weight_sync"] = ours["sync"].pop("weight_sync")
        if sweep:
            runs = {w: run_ours(args, ppo_config(args, model_dir, work, w), rows) for w in sweep}
            runs[2] = ours.get("sync") or run_ours(args, ppo_config(args, model_dir, work, 2), rows)
            result["rollout_workers_sweep"] = {
                str(w): {"iteration_s_mean": r["timing"]["iteration"], "generate_s_mean": r["timing"]["generate"],
                         "samples_per_s": r["samples_per_s"], "rollout_cpus_each": ROLLOUT_CPUS / w}
                for w, r in sorted(runs.items())}
        if args.scaling:
            scaling = {}
            for batch in (int(b) for b in args.scaling_samples.split(",")):
                run = run_ours(args, ppo_config(args, model_dir, work, 2, "sync", batch // args.group_size), rows)
                scaling[str(batch)] = {"iteration_s_mean": run["timing"]["iteration"],
                                       "s_per_sample": _round(run["wall_s"] / run["trained_samples"], 5),
                                       "samples_per_s": run["samples_per_s"],
                                       "roles_cpu_s_per_sample": run["bound"]["roles_cpu_s_per_sample"],
                                       "timing": run["timing"]}
            result["batch_scaling"] = scaling
        ray.shutdown()
    result["ours"] = ours
    result["trl"] = trl
    if "samples_per_s" in trl:
        result["speedup_vs_trl"] = {mode: _round(r["samples_per_s"] / trl["samples_per_s"], 3)
                                    for mode, r in ours.items()}
        result["speedup_vs_trl_by_torch_threads"] = {
            mode: {t: _round(r["samples_per_s"] / tr["samples_per_s"], 3)
                   for t, tr in trl["by_torch_threads"].items() if "samples_per_s" in tr} for mode, r in ours.items()}
        if trl.get("cpu_s_per_sample"):
            result["trl_bound"] = {"cpu_s_per_sample": trl["cpu_s_per_sample"],
                                   "max_samples_per_s": _round(2 / trl["cpu_s_per_sample"], 2)}
        result["bound_vs_trl"] = {mode: _round(r["bound"]["max_samples_per_s"] / trl["samples_per_s"], 3)
                                  for mode, r in ours.items() if r["bound"]["max_samples_per_s"]}
    result["total_s"] = _round(time.perf_counter() - started, 1)
    # other work on the machine disturbs every figure: 1-minute load averages (2 cores) at start and end
    result["load_avg_1m"] = {"start": _round(load_start, 2), "end": _round(os.getloadavg()[0], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
