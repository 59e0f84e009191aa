"""Calibration of the loop's default data and reward-model gates (`jobs/loop_config.py` GatesSection) on the
simulated world: how far good and bad inputs sit from each threshold.

    python benchmarks/gates.py --seeds 40     # the published figures
    python benchmarks/gates.py --seeds 5      # quick run

Prints one JSON line:

* `data_gate`: the quickstart's pairwise labels (world of 600 prompts, 8 000 rows × 30 % pairwise = 2 400 rows
  in one shard, default annotator population, 5 % gold, no malformed/duplicate/PII rows since ingest would drop
  them) for world seeds 0 … N−1, run through `curate`. The gate's figure is `kappa_ratio` (the function the data
  gate calls): the observed Fleiss κ of the pairwise labels ÷ the κ their annotators' gold accuracies predict
  (curate's `expected_agreement` → `expected_fleiss_kappa`; an annotator without gold labels takes the pooled gold
  accuracy). Conditions: the labels as simulated (`good`), and with 30 % / 60 % of the non-gold annotator labels
  replaced by coin flips between a and b (`coin_flips_30`, `coin_flips_60`; gold labels untouched, so the expected κ
  still reads the annotators as accurate). Per condition: min/max ratio, the range of gold labels the expected κ
  rests on, seeds the gate cannot judge (fewer than `min_gold_labels` gold labels or expected κ ≤ 0; the gate
  fails those), and per threshold how many seeds fail (ratio below it, or unjudgeable). Good data should fail
  none; corrupted data should fail as many as possible.
* `rm_length_gate`: `length_correlation_at_equal_utility` (what train-rm reports as
  `heldout_length_correlation_at_equal_utility`) of synthetic rewards on the world's validation truth pairs (6 per
  prompt) for the same seeds. Rewards, in units of the utility's sd: `true_utility` (u / sd(u)); `noisy` (plus
  N(0, 0.5²) noise, accuracy ≈ 0.87 like a trained RM); `length_bonus_0.25` / `length_bonus_0.5` (the noisy reward
  plus 0.25 / 0.5 per sd of word count: a verbosity-biased RM). The noisy conditions share one noise draw per seed,
  so they differ only in the bonus. Per condition: min/mean/max of the figure, mean accuracy on the pairs, and how
  many seeds exceed the gate's `max_rm_length_correlation` (unbiased rewards should exceed it on none).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.loop_config import GatesSection
from rlhf_ray.annotation.curate import CurateSettings, curate
from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
from rlhf_ray.evaluation.reward_model import reward_model_report
from rlhf_ray.evaluation.stage_gates import kappa_ratio
from rlhf_ray.inputs.world import truth_pairs
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.shards import build_shard_rows

NUM_PROMPTS = 600  # configs/quickstart.yaml world.num_prompts
PAIRWISE_ROWS = 2_400  # quickstart shards.rows 8 000 × SignalMix.pairwise 0.3
COIN_FLIP_SHARES = {"good": 0.0, "coin_flips_30": 0.3, "coin_flips_60": 0.6}
KAPPA_THRESHOLDS = (0.3, 0.5)
REWARD_NOISE_SD = 0.5  # in utility sds: accuracy ≈ 0.87 on the truth pairs
LENGTH_BONUSES = {"length_bonus_0.25": 0.25, "length_bonus_0.5": 0.5}
HELDOUT_PAIRS_PER_PROMPT = 6  # quickstart reward_model.heldout_pairs_per_prompt


def pairwise_table(seed: int) -> tuple[pa.Table, dict[str, str]]:
    """The quickstart's pairwise rows for one world seed, clean, and its gold answers by item id."""
    world = World(WorldConfig(num_prompts=NUM_PROMPTS), seed=seed)
    shards = ShardConfig(malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    rows, result = build_shard_rows(world, shards, ShardSpec("pairwise", 0, PAIRWISE_ROWS, "parquet"))
    table = pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMAS[SignalType("pairwise")])
    return table, {g["item_id"]: g["answer"] for g in result.gold}


def with_coin_flips(table: pa.Table, gold: Mapping[str, str], share: float, seed: int) -> pa.Table:
    """Each annotator label on a non-gold item replaced, with probability `share`, by a fair coin flip a/b."""
    if share == 0:
        return table
    rng = np.random.default_rng(seed)
    rows = table.to_pylist()
    for row in rows:
        if row["source"] == "annotator" and row["item_id"] not in gold and rng.random() < share:
            row["choice"] = "a" if rng.random() < 0.5 else "b"
    return pa.Table.from_pylist(rows, schema=table.schema)


def curated_ratio(table: pa.Table, gold: Mapping[str, str], min_gold_labels: int) -> tuple[float | None, int]:
    """The data gate's κ ratio (None: unjudgeable) from curate's figures, as `jobs/curate.py` summarises them,
    and the number of gold labels the expected κ rests on."""
    report = curate({"pairwise": table}, gold, CurateSettings()).report
    pairwise = report.get("pairwise", {})
    summary = {"fleiss_kappa": report["agreement"]["pairwise"]["overall"].get("fleiss_kappa"),
               "expected_fleiss_kappa": pairwise.get("expected_fleiss_kappa"),
               "expected_fleiss_kappa_gold_labels": pairwise.get("gold_labels", 0)}
    ratio, _ = kappa_ratio(summary, min_gold_labels)
    return ratio, summary["expected_fleiss_kappa_gold_labels"]


def ratio_summary(ratios: Sequence[float | None], gold_labels: Sequence[int]) -> dict[str, Any]:
    """Min/max of the judged ratios, unjudgeable seeds, and seeds failing each threshold (unjudgeable fails)."""
    judged = [r for r in ratios if r is not None]
    return {
        "seeds": len(ratios),
        "min_ratio": round(min(judged), 3) if judged else None,
        "max_ratio": round(max(judged), 3) if judged else None,
        "gold_labels": [min(gold_labels), max(gold_labels)],
        "unjudgeable": len(ratios) - len(judged),
        "fail_at": {str(t): sum(r is None or r < t for r in ratios) for t in KAPPA_THRESHOLDS},
    }


def data_gate(seeds: int, min_gold_labels: int) -> dict[str, Any]:
    ratios: dict[str, list[float | None]] = {name: [] for name in COIN_FLIP_SHARES}
    gold_labels: dict[str, list[int]] = {name: [] for name in COIN_FLIP_SHARES}
    for seed in range(seeds):
        table, gold = pairwise_table(seed)
        for name, share in COIN_FLIP_SHARES.items():
            ratio, labels = curated_ratio(with_coin_flips(table, gold, share, seed), gold, min_gold_labels)
            ratios[name].append(ratio)
            gold_labels[name].append(labels)
    return {name: ratio_summary(ratios[name], gold_labels[name]) for name in COIN_FLIP_SHARES}


def synthetic_rewards(utility: np.ndarray, words: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Rewards for each condition, shape (pairs, 2) like `utility`:

        true_utility = u / sd(u),   noisy = u / sd(u) + ε,  ε ~ N(0, 0.5²),
        length_bonus_b = noisy + b · (w − mean w) / sd(w)      (w: words)
    """
    base = utility / utility.std()
    noisy = base + np.random.default_rng(seed).normal(0.0, REWARD_NOISE_SD, utility.shape)
    z_words = (words - words.mean()) / words.std()
    return {"true_utility": base, "noisy": noisy,
            **{name: noisy + bonus * z_words for name, bonus in LENGTH_BONUSES.items()}}


def length_figures(seed: int) -> dict[str, dict[str, Any]]:
    """`reward_model_report` of every condition's rewards on one seed's validation truth pairs."""
    pairs = truth_pairs(WorldConfig(num_prompts=NUM_PROMPTS), seed, HELDOUT_PAIRS_PER_PROMPT, "validation")
    words = np.array([[len(p["chosen"].split()), len(p["rejected"].split())] for p in pairs], dtype=float)
    utility = np.array([[p["chosen_utility"], p["rejected_utility"]] for p in pairs], dtype=float)
    return {name: reward_model_report(r[:, 0], r[:, 1], words[:, 0], words[:, 1], utility[:, 0], utility[:, 1])
            for name, r in synthetic_rewards(utility, words, seed).items()}


def rm_length_gate(seeds: int, max_correlation: float) -> dict[str, Any]:
    reports = [length_figures(seed) for seed in range(seeds)]
    out: dict[str, Any] = {}
    for name in reports[0]:
        corr = [r[name]["length_correlation_at_equal_utility"] for r in reports]
        judged = [c for c in corr if c is not None]
        out[name] = {
            "min": round(min(judged), 3), "mean": round(float(np.mean(judged)), 3), "max": round(max(judged), 3),
            "undefined": len(corr) - len(judged),
            "accuracy_mean": round(float(np.mean([r[name]["accuracy"] for r in reports])), 3),
            f"above_{max_correlation}": sum(c > max_correlation for c in judged),
        }
    return {"pairs_per_seed": [min(r["noisy"]["pairs"] for r in reports), max(r["noisy"]["pairs"] for r in reports)],
            **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=40, help="world seeds 0 … N−1 (5 for a quick run)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be ≥ 1, got {args.seeds}")
    defaults = GatesSection()
    started = time.perf_counter()
    kappa = data_gate(args.seeds, defaults.min_gold_labels)
    kappa_seconds = time.perf_counter() - started
    length = rm_length_gate(args.seeds, defaults.max_rm_length_correlation)
    print(json.dumps({
        "seeds": args.seeds,
        "defaults": {"min_kappa_ratio": defaults.min_kappa_ratio, "min_gold_labels": defaults.min_gold_labels,
                     "max_rm_length_correlation": defaults.max_rm_length_correlation},
        "data_gate": kappa,
        "rm_length_gate": length,
        "seconds": {"data_gate": round(kappa_seconds, 1),
                    "rm_length_gate": round(time.perf_counter() - started - kappa_seconds, 1)},
    }))


if __name__ == "__main__":
    main()
