"""`rlhf-ray train-rm` throughput (pairs/s) with two DDP workers vs a plain single-process PyTorch loop.

    python benchmarks/rm.py --pairs 2000 --epochs 1

Both train the tiny (or `--size small`) reward model on the same simulated pairs with the same global batch (16)
and length limit; the reference is one process, run once per torch thread count in `--reference-threads` (1 and
2: on busy shared cores two OpenMP threads stall at every barrier), the fastest being the baseline; the job is Ray
Train with 2 workers × 1 CPU (one torch thread each). Reports pairs/s of the training loop alone on both sides and
end-to-end seconds; `--breakdown` also times a step's parts alone over the first batches (`step_breakdown`:
tokenizing, forward + backward + AdamW on the global batch with 1 and 2 threads and on each rank's half with 1,
the gradient all-reduce between two gloo processes) and the step time they predict for each side. The 1-minute
load average (2 shared cores) at start and end is in the JSON. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from jobs.train_rm import TrainRMConfig, train_reward_model
from rlhf_ray.algos.preference import bradley_terry_loss
from rlhf_ray.annotation.curate import CurateSettings, curate
from rlhf_ray.config import RayConfig, WandbConfig
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.models import init_model, load_tokenizer
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.shards import build_shard_rows
from rlhf_ray.training.encoding import encode_chat
from rlhf_ray.training.reward_model import RewardModel
from rlhf_ray.training.steps import pair_rewards

GLOBAL_BATCH = 16
MAX_LENGTH = 128


def simulated_pairs(world: World, count: int) -> pa.Table:
    clean = ShardConfig(rows=100, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    rows: list = []
    for shard in range(64):  # add ranking shards until consensus yields `count` pairs
        built, _ = build_shard_rows(world, clean, ShardSpec("ranking", shard, max(60, count // 2), "parquet"))
        rows += built
        table = pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMAS[SignalType.RANKING])
        pairs = curate({"ranking": table}, {}, CurateSettings()).pairs
        if pairs.num_rows >= count:
            return pairs.slice(0, count)
    raise RuntimeError(f"could not simulate {count} pairs")


def reference_loop(model_dir: str, pairs: pa.Table, epochs: int, threads: int) -> float:
    """The same objective and batches in one process with `threads` torch threads; returns pairs/s of the
    training loop."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    model = RewardModel.from_causal_lm(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rows = pairs.to_pylist()
    started = time.perf_counter()
    for _ in range(epochs):
        for first in range(0, len(rows), GLOBAL_BATCH):
            chunk = rows[first : first + GLOBAL_BATCH]
            rc, rr = pair_rewards(model, tokenizer, [r["prompt"] for r in chunk], [r["chosen"] for r in chunk],
                                  [r["rejected"] for r in chunk], MAX_LENGTH)
            loss = bradley_terry_loss(rc, rr, weights=torch.tensor([r["weight"] for r in chunk]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return len(rows) * epochs / (time.perf_counter() - started)


def _allreduce_rank(rank: int, numel: int, port: int, repeats: int, out: str) -> None:
    """One of two gloo ranks (one torch thread each, as a Ray Train worker with 1 CPU): the median seconds of an
    all-reduce of `numel` float32s, what DDP sends per step, written by rank 0."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    grads = torch.ones(numel)
    torch.distributed.all_reduce(grads)
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        started = time.perf_counter()
        torch.distributed.all_reduce(grads)
        times.append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps(statistics.median(times)))
    torch.distributed.destroy_process_group()


def step_breakdown(model_dir: str, pairs: pa.Table, workers: int, batches: int, work: Path) -> dict[str, Any]:
    """Where a step's time goes, each part alone in this process, averaged over the first `batches` global batches
    (lengths differ between batches): tokenizing, forward + backward + AdamW on the global batch with `workers`
    torch threads (the reference) and with one, each rank's share with one thread (a DDP rank; the slower share
    gates the step, since the ranks meet at the gradient all-reduce), and that all-reduce between two one-thread
    gloo processes. The step they predict: reference = tokenize(B) + step(B, W threads); DDP = tokenize(B/W) +
    max over ranks of step(B/W, 1 thread) + all-reduce, every rank on a core of its own."""
    tokenizer = load_tokenizer(model_dir)
    model = RewardModel.from_causal_lm(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rows = pairs.slice(0, GLOBAL_BATCH * batches).to_pylist()
    share = GLOBAL_BATCH // workers

    def encode(chunk: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return encode_chat(tokenizer, [r["prompt"] for r in chunk] * 2,
                           [r["chosen"] for r in chunk] + [r["rejected"] for r in chunk], MAX_LENGTH)

    def timed_step(batch: dict[str, torch.Tensor], count: int, threads: int) -> float:
        torch.set_num_threads(threads)
        started = time.perf_counter()
        rewards = model(batch["input_ids"], batch["attention_mask"]).float()
        loss = bradley_terry_loss(rewards[:count], rewards[count:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    def timed_encode(chunk: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        encode(chunk)
        return time.perf_counter() - started

    default_threads = torch.get_num_threads()
    timed_step(encode(rows[:GLOBAL_BATCH]), GLOBAL_BATCH, workers)  # warm
    parts: dict[str, list[float]] = {}
    for first in range(0, len(rows), GLOBAL_BATCH):
        chunk = rows[first : first + GLOBAL_BATCH]
        halves = [chunk[r * share : (r + 1) * share] for r in range(workers)]
        whole = encode(chunk)
        rank_steps = [timed_step(encode(half), share, 1) for half in halves]
        for name, value in (("tokenize_global_batch_s", timed_encode(chunk)),
                            ("tokenize_rank_batch_s", statistics.fmean(timed_encode(h) for h in halves)),
                            ("step_global_batch_all_threads_s", timed_step(whole, GLOBAL_BATCH, workers)),
                            ("step_global_batch_1_thread_s", timed_step(whole, GLOBAL_BATCH, 1)),
                            ("step_rank_batch_1_thread_s", statistics.fmean(rank_steps)),
                            ("step_slowest_rank_1_thread_s", max(rank_steps))):
            parts.setdefault(name, []).append(value)
    torch.set_num_threads(default_threads)
    figures: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()), "batches": batches,
                               **{name: statistics.fmean(values) for name, values in parts.items()}}
    out = work / "allreduce.json"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_allreduce_rank, args=(figures["params"], port, 10, str(out)), nprocs=2)
    figures["allreduce_s"] = json.loads(out.read_text())
    reference = figures["tokenize_global_batch_s"] + figures["step_global_batch_all_threads_s"]
    ddp = figures["tokenize_rank_batch_s"] + figures["step_slowest_rank_1_thread_s"] + figures["allreduce_s"]
    figures.update({"threads_speedup": figures["step_global_batch_1_thread_s"]
                    / figures["step_global_batch_all_threads_s"],
                    "rank_imbalance": figures["step_slowest_rank_1_thread_s"] / figures["step_rank_batch_1_thread_s"],
                    "model_reference_step_s": reference, "model_ddp_step_s": ddp, "model_speedup": reference / ddp})
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny", help="model preset (init_model)")
    parser.add_argument("--breakdown", action="store_true", help="also time a step's parts alone (step_breakdown)")
    parser.add_argument("--breakdown-batches", type=int, default=8, help="global batches step_breakdown times")
    parser.add_argument("--reference-threads", default="1,2",
                        help="torch thread counts of the single-process loop; the fastest is the reference")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    world_config = WorldConfig(num_prompts=300)
    world = World(world_config, 0)
    with tempfile.TemporaryDirectory() as work:
        model_dir = str(init_model(world.corpus(), Path(work) / "model", args.size, seed=0).path)
        pairs = simulated_pairs(world, args.pairs)
        breakdown = (step_breakdown(model_dir, pairs, args.workers, args.breakdown_batches, Path(work))
                     if args.breakdown else None)
        (Path(work) / "pairs").mkdir()
        pq.write_table(pairs, Path(work) / "pairs" / "part-0.parquet")
        # One process with 2 OpenMP threads stalls at every barrier when the shared cores are busy (a step took
        # 2.5 s with 2 threads against 0.43 s with 1 at load ~6): the fastest thread count is the baseline.
        default_threads = torch.get_num_threads()
        by_threads = {str(t): round(reference_loop(model_dir, pairs, args.epochs, t), 1)
                      for t in sorted({int(t) for t in args.reference_threads.split(",")})}
        torch.set_num_threads(default_threads)
        best = max(by_threads, key=lambda t: by_threads[t])
        reference = by_threads[best]
        started = time.perf_counter()
        result = train_reward_model(TrainRMConfig(
            model_path=model_dir, pairs=str(Path(work) / "pairs"), output_dir=str(Path(work) / "rm"),
            world=world_config, ray=RayConfig(num_cpus=args.workers, log_to_driver=False),
            wandb=WandbConfig(mode="disabled"),
            train={"epochs": args.epochs, "batch_size": GLOBAL_BATCH // args.workers, "max_length": MAX_LENGTH},
            scaling={"num_workers": args.workers, "cpus_per_worker": 1.0}))
        seconds = time.perf_counter() - started
        metrics = json.loads((Path(work) / "rm" / "evaluation.json").read_text())
        job = result["train_pairs_per_s"]
    print(json.dumps({
        "benchmark": "rm", "size": args.size, "pairs": pairs.num_rows, "epochs": args.epochs, "workers": args.workers,
        "reference_pairs_per_s": reference, "reference_threads": int(best),
        "reference_pairs_per_s_by_threads": by_threads, "train_rm_pairs_per_s": round(job, 1),
        "speedup_vs_reference": round(job / reference, 3), "train_rm_end_to_end_s": round(seconds, 1),
        "heldout_accuracy": metrics["accuracy"], "steps": result["steps"],
        **({"step_breakdown": breakdown} if breakdown else {}),
        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
    }))


if __name__ == "__main__":
    main()
