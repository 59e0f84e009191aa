"""`rlhf-ray train-rm` throughput (pairs/s) with two DDP workers vs a plain single-process PyTorch loop.

    python benchmarks/rm.py --pairs 2000 --epochs 1

Both train the tiny reward model on the same simulated pairs with the same global batch (16) and length
limit; the reference is one process (torch using both cores), the job is Ray Train with 2 workers × 1 CPU.
Reports steady-state pairs/s (the training loop alone) and end-to-end seconds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

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


def reference_loop(model_dir: str, pairs: pa.Table, epochs: int) -> float:
    """The same objective and batches in one process; returns pairs/s of the training loop."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    world_config = WorldConfig(num_prompts=300)
    world = World(world_config, 0)
    with tempfile.TemporaryDirectory() as work:
        model_dir = str(init_model(world.corpus(), Path(work) / "model", "tiny", seed=0).path)
        pairs = simulated_pairs(world, args.pairs)
        (Path(work) / "pairs").mkdir()
        pq.write_table(pairs, Path(work) / "pairs" / "part-0.parquet")
        reference = reference_loop(model_dir, pairs, args.epochs)
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
        "benchmark": "rm", "pairs": pairs.num_rows, "epochs": args.epochs, "workers": args.workers,
        "reference_pairs_per_s": round(reference, 1), "train_rm_pairs_per_s": round(job, 1),
        "speedup_vs_reference": round(job / reference, 3), "train_rm_end_to_end_s": round(seconds, 1),
        "heldout_accuracy": metrics["accuracy"], "steps": result["steps"],
    }))


if __name__ == "__main__":
    main()
