"""Label consensus at curation scale: majority vote vs Dawid–Skene, speed and accuracy against the truth.

    python benchmarks/consensus.py --items 100000 --per-item 5 --pool 50

Simulates binary labels: a pool of `--pool` annotators, accuracies uniform in [0.65, 0.95] under a
symmetric flip model, except a share of spammers who answer at random (accuracy 0.5); each item is
labelled by `--per-item` distinct annotators. Times `majority_vote` and `dawid_skene` (best of
`--repeats`) at the headline spammer share, and scores both against the true labels at each share in
`--spammer-shares`. Prints one JSON line on stdout and a readable table on stderr. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rlhf_ray.annotation.consensus import dawid_skene, majority_vote


class Labels(NamedTuple):
    truth: np.ndarray
    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    accuracy: np.ndarray
    spammer: np.ndarray


def simulate(n_items: int, per_item: int, pool: int, spammer_share: float, seed: int) -> Labels:
    """Binary truth, `per_item` distinct annotators per item, symmetric flips at each annotator's accuracy."""
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(0.65, 0.95, pool)
    spammer = np.zeros(pool, dtype=bool)
    spammer[rng.permutation(pool)[: round(spammer_share * pool)]] = True
    accuracy[spammer] = 0.5
    truth = rng.integers(0, 2, n_items)
    annotator = np.argpartition(rng.random((n_items, pool)), per_item, axis=1)[:, :per_item].ravel()
    item = np.repeat(np.arange(n_items), per_item)
    correct = rng.random(len(item)) < accuracy[annotator]
    label = np.where(correct, truth[item], 1 - truth[item])
    return Labels(truth, item, annotator, label, accuracy, spammer)


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def score(data: Labels, pool: int) -> dict:
    """Label accuracy of both methods against the truth, and how well DS recovers annotator accuracies."""
    n_items = len(data.truth)
    votes = majority_vote(data.item, data.label, n_items, 2)
    ds = dawid_skene(data.item, data.annotator, data.label, n_items, pool, 2)
    honest = ~data.spammer
    return {
        "majority_accuracy": round(float((votes.label == data.truth).mean()), 4),
        "dawid_skene_accuracy": round(float((ds.label == data.truth).mean()), 4),
        "ds_iterations": ds.iterations,
        "ds_converged": ds.converged,
        "ds_annotator_accuracy_mae": round(float(np.abs(ds.annotator_accuracy - data.accuracy)[honest].mean()), 4),
        "ds_spammer_accuracy_mean": (
            round(float(ds.annotator_accuracy[data.spammer].mean()), 4) if data.spammer.any() else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-item", type=int, default=5, help="labels per item, from distinct annotators")
    parser.add_argument("--pool", type=int, default=50, help="number of annotators")
    parser.add_argument("--spammer-share", type=float, default=0.2, help="spammer share for the timings")
    parser.add_argument("--spammer-shares", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = simulate(args.items, args.per_item, args.pool, args.spammer_share, args.seed)
    n_items = len(data.truth)
    mv_seconds = best_seconds(lambda: majority_vote(data.item, data.label, n_items, 2), args.repeats)
    ds_seconds = best_seconds(
        lambda: dawid_skene(data.item, data.annotator, data.label, n_items, args.pool, 2), args.repeats
    )
    by_share = {
        f"{share:.0%}": score(simulate(args.items, args.per_item, args.pool, share, args.seed), args.pool)
        for share in args.spammer_shares
    }

    print(f"{'spammers':>8}  {'majority':>8}  {'dawid-skene':>11}  {'DS iters':>8}", file=sys.stderr)
    for share, row in by_share.items():
        print(
            f"{share:>8}  {row['majority_accuracy']:>8.4f}  {row['dawid_skene_accuracy']:>11.4f}  "
            f"{row['ds_iterations']:>8}",
            file=sys.stderr,
        )
    headline = by_share.get(f"{args.spammer_share:.0%}") or score(data, args.pool)
    print(json.dumps({
        "benchmark": "consensus",
        "items": n_items,
        "labels": len(data.label),
        "annotators": args.pool,
        "spammer_share": args.spammer_share,
        "majority_items_per_s": round(n_items / mv_seconds),
        "dawid_skene_items_per_s": round(n_items / ds_seconds),
        "dawid_skene_seconds": round(ds_seconds, 3),
        "ds_iterations": headline["ds_iterations"],
        "ds_seconds_per_iteration": round(ds_seconds / headline["ds_iterations"], 4),
        "accuracy_by_spammer_share": by_share,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
