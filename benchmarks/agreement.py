"""Agreement statistics on long-form labels at production scale (default: 500k labels, 20 annotators).

    python benchmarks/agreement.py --labels 500000 --annotators 20 --per-item 5

Synthetic labels: every item gets `--per-item` distinct annotators; each annotator is right with its own accuracy
(0.55..0.95), otherwise picks a uniform category. Item and annotator ids are strings, as in curated feedback.
Times each public long-form function once (best of `--repeats`) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rlhf_ray.annotation.agreement import (
    agreement_report,
    agreement_with_reference,
    category_counts,
    krippendorff_alpha,
    pairwise_cohen,
    reliability_matrix,
)


def synthetic_labels(n_labels: int, n_annotators: int, per_item: int, n_categories: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_items = n_labels // per_item
    truth = rng.integers(0, n_categories, size=n_items)
    annotator = np.argsort(rng.random((n_items, n_annotators)), axis=1)[:, :per_item].ravel()
    item = np.repeat(np.arange(n_items), per_item)
    accuracy = np.linspace(0.55, 0.95, n_annotators)[annotator]
    noise = rng.integers(0, n_categories, size=item.size)
    labels = np.where(rng.random(item.size) < accuracy, truth[item], noise)
    item_ids = np.char.add("item-", item.astype(str))
    return {
        "item_ids": item_ids,
        "annotator_ids": np.char.add("ann-", annotator.astype(str)),
        "labels": labels,
        "reference": dict(zip(np.char.add("item-", np.arange(n_items).astype(str)).tolist(), truth.tolist(),
                              strict=True)),
        "guideline_version": np.where(item % 2 == 0, "v1", "v2"),
        "topic": np.array(["chat", "code", "math", "safety"])[item % 4],
    }


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=500_000)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--per-item", type=int, default=5)
    parser.add_argument("--categories", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    d = synthetic_labels(args.labels, args.annotators, args.per_item, args.categories, args.seed)
    long_form = (d["item_ids"], d["annotator_ids"], d["labels"])
    matrix, _, _ = reliability_matrix(*long_form)
    groups = {"guideline_version": d["guideline_version"], "topic": d["topic"]}
    timings = {
        "reliability_matrix": best_seconds(lambda: reliability_matrix(*long_form), args.repeats),
        "category_counts": best_seconds(lambda: category_counts(d["item_ids"], d["labels"]), args.repeats),
        "krippendorff_alpha_ordinal": best_seconds(lambda: krippendorff_alpha(matrix, "ordinal"), args.repeats),
        "pairwise_cohen": best_seconds(lambda: pairwise_cohen(*long_form), args.repeats),
        "agreement_with_reference": best_seconds(
            lambda: agreement_with_reference(*long_form, d["reference"]), args.repeats),
        "agreement_report_2_groupings": best_seconds(
            lambda: agreement_report(*long_form, groups=groups, level="ordinal"), args.repeats),
    }
    report = agreement_report(*long_form, level="ordinal")["overall"]
    print(json.dumps({
        "benchmark": "annotation_agreement",
        "n_labels": int(d["labels"].size),
        "n_items": report["n_items"],
        "n_annotators": args.annotators,
        "n_pairs": len(pairwise_cohen(*long_form)),
        "fleiss_kappa": round(report["fleiss_kappa"], 4),
        "krippendorff_alpha_ordinal": round(report["krippendorff_alpha"], 4),
        "seconds": timings,
    }))


if __name__ == "__main__":
    main()
