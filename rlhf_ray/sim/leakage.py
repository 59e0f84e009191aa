"""How far validation and test sit from train: the counts that must be 0, and the near-duplicates to watch.

Per split and slice: `shared_texts` (prompts whose exact text is a train prompt's), `shared_pairs` (prompts
asking an (intent, item) pair some train prompt asks), `near_duplicates` (prompts whose token set, item slots
masked, has Jaccard ≥ 0.8 with some train prompt's: a seen phrasing with an unseen item is one) and
`heldout_phrasing` (prompts using a phrasing template of one of their intents that no train prompt uses).
Required facts do not depend on the item, so shared fact sets are expected and not counted.
"""

from __future__ import annotations

from typing import Any

from rlhf_ray.sim.prompts import EVAL_SPLITS, SLICES, PromptSpec
from rlhf_ray.sim.world import World

NEAR_DUPLICATE_JACCARD = 0.8
ITEM_MASK = "<item>"
COUNTS = ("shared_texts", "shared_pairs", "near_duplicates", "heldout_phrasing")


def masked_tokens(spec: PromptSpec) -> frozenset[str]:
    """The prompt's tokens with every item slot replaced by one mask token."""
    return frozenset(" also , ".join(t.replace("{item}", ITEM_MASK) for t in spec.templates).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def leakage_report(world: World) -> dict[str, Any]:
    """{"train_prompts", "<split>": {"<slice>": {"prompts", *COUNTS}}} for validation and test."""
    train = world.split("train")
    texts = {p.text for p in train}
    pairs = {pair for p in train for pair in p.pairs}
    phrasings = {phrasing for p in train for phrasing in zip(p.intents, p.templates, strict=True)}
    masks = {masked_tokens(p) for p in train}
    report: dict[str, Any] = {"train_prompts": len(train)}
    for split in EVAL_SPLITS:
        report[split] = {}
        for slice_name in SLICES:
            prompts = world.split(split, slice_name)
            report[split][slice_name] = {
                "prompts": len(prompts),
                "shared_texts": sum(p.text in texts for p in prompts),
                "shared_pairs": sum(any(pair in pairs for pair in p.pairs) for p in prompts),
                "near_duplicates": sum(any(jaccard(masked_tokens(p), m) >= NEAR_DUPLICATE_JACCARD for m in masks)
                                       for p in prompts),
                "heldout_phrasing": sum(any(ph not in phrasings for ph in zip(p.intents, p.templates, strict=True))
                                        for p in prompts),
            }
    return report


def leakage_figures(report: dict[str, Any]) -> dict[str, int]:
    """The report as flat figures, `leakage/<split>/<slice>/<count>`."""
    return {f"leakage/{split}/{slice_name}/{name}": value for split in EVAL_SPLITS
            for slice_name, counts in report[split].items() for name, value in counts.items()}


def describe(report: dict[str, Any]) -> str:
    """One readable line: per split and slice, prompts and the four counts."""
    parts = [f"{split}/{slice_name.removesuffix('_intent')} {c['prompts']} prompts: shared texts "
             f"{c['shared_texts']}, shared (intent, item) {c['shared_pairs']}, near-duplicates {c['near_duplicates']}"
             f", held-out phrasing {c['heldout_phrasing']}"
             for split in EVAL_SPLITS for slice_name, c in report[split].items()]
    return f"leakage vs {report['train_prompts']} train prompts — " + "; ".join(parts)
