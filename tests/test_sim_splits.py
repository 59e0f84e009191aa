"""The world's three splits are disjoint by construction, and the leakage report says so (issue 19)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from rlhf_ray.sim import ShardConfig, World, WorldConfig, leakage_figures, leakage_report, plan_judge_shards
from rlhf_ray.sim.catalog import TOPICS
from rlhf_ray.sim.evaluation import truth_pairs
from rlhf_ray.sim.leakage import NEAR_DUPLICATE_JACCARD, jaccard, masked_tokens
from rlhf_ray.sim.shards import build_shard_rows

WORLDS = [World(WorldConfig(num_prompts=600), seed) for seed in (0, 1, 2)]
INTENTS = [intent for topic in TOPICS for intent in topic.intents]


def _eval_prompts(world: World) -> list:
    return [p for split in ("validation", "test") for s in ("seen_intent", "novel_intent")
            for p in world.split(split, s)]


def test_the_catalogue_leaves_variety_to_split() -> None:
    for intent in INTENTS:
        assert len(intent.questions) >= 4 and len(intent.items) >= 6, intent.name
        assert all("{item}" in q for q in intent.questions), intent.name
        assert len(set(intent.items)) == len(intent.items), intent.name
    masked = [frozenset(q.replace("{item}", "<item>").split()) for intent in INTENTS for q in intent.questions]
    # A held-out phrasing is never a near-duplicate of a phrasing train uses.
    assert max(jaccard(a, b) for a, b in itertools.combinations(masked, 2)) < NEAR_DUPLICATE_JACCARD


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: f"seed{w.seed}")
def test_validation_and_test_share_no_text_and_no_intent_item_pair_with_train(world: World) -> None:
    train = world.split("train")
    texts, pairs = {p.text for p in train}, {pair for p in train for pair in p.pairs}
    held = _eval_prompts(world)
    assert held and not any(p.text in texts for p in held)
    assert not any(pair in pairs for p in held for pair in p.pairs)
    validation = {pair for s in ("seen_intent", "novel_intent") for p in world.split("validation", s)
                  for pair in p.pairs}
    test = {pair for s in ("seen_intent", "novel_intent") for p in world.split("test", s) for pair in p.pairs}
    assert not validation & test  # validation and test are disjoint from each other too
    assert {p.split for p in world.prompts} == {"train", "validation", "test"}


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: f"seed{w.seed}")
def test_at_least_half_of_validation_and_test_use_a_phrasing_train_never_uses(world: World) -> None:
    used = {phrasing for p in world.split("train") for phrasing in zip(p.intents, p.templates, strict=True)}
    for split in ("validation", "test"):
        prompts = world.split(split)
        unseen = [p for p in prompts if any(ph not in used for ph in zip(p.intents, p.templates, strict=True))]
        assert len(prompts) >= 50 and len(unseen) >= len(prompts) / 2, split


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: f"seed{w.seed}")
def test_the_novel_intent_slice_exists_and_train_never_asks_it(world: World) -> None:
    novel = set(world.plan.novel)
    assert len(novel) == world.config.novel_intents == 2
    assert not novel & {intent for p in world.split("train") for intent in p.intents}
    for split in ("validation", "test"):
        sliced = world.split(split, "novel_intent")
        assert sliced and all(set(p.intents) <= novel for p in sliced)
        assert not novel & {intent for p in world.split(split) for intent in p.intents}  # the default: seen only
    assert not world.split("train", "novel_intent")
    with pytest.raises(ValueError, match="split must be one of"):
        world.split("heldout")


def test_the_tokenizer_corpus_holds_no_validation_or_test_prompt() -> None:
    world = World(WorldConfig(num_prompts=200), 0)
    text = "\n".join(world.corpus())
    assert all(p.text in text for p in world.split("train"))
    assert not [p.text for p in _eval_prompts(world) if p.text in text]
    novel = [i for i in INTENTS if i.name in world.plan.novel]
    assert not [s for intent in novel for s in intent.unsafe if s in text]


def test_policy_feedback_uses_train_and_the_judge_set_validation() -> None:
    world = World(WorldConfig(num_prompts=150), 11)
    clean = ShardConfig(rows=100, judge_rows=120, rows_per_shard=100, malformed_fraction=0.0,
                        duplicate_fraction=0.0, pii_fraction=0.0)
    for signal_type in ("pairwise", "ranking", "rating", "implicit", "correction"):
        rows, _ = build_shard_rows(world, clean, SimpleNamespace(signal_type=signal_type, index=0, rows=150,
                                                                 fmt="jsonl", split="train",
                                                                 relative_path="shards/x"))
        assert all(world.prompt(r["prompt_id"]).split == "train" for r in rows), signal_type
    plan = plan_judge_shards(clean)
    assert [(s.signal_type, s.rows, s.split) for s in plan] == [("pairwise", 100, "validation"),
                                                                ("pairwise", 20, "validation")]
    assert plan[0].relative_path == "judge/shards/pairwise/part-00000.parquet"
    judge, result = build_shard_rows(world, clean, plan[0])
    assert judge and {world.prompt(r["prompt_id"]).split for r in judge} == {"validation"}
    assert {world.prompt(r["prompt_id"]).slice for r in judge} == {"seen_intent"}
    train, _ = build_shard_rows(world, clean, SimpleNamespace(signal_type="pairwise", index=0, rows=100,
                                                              fmt="parquet", split="train", relative_path="x"))
    assert not {r["signal_id"] for r in judge} & {r["signal_id"] for r in train}
    assert all(item["item_id"].startswith("judge-") for item in result.items)
    assert not plan_judge_shards(ShardConfig(judge_rows=0))


def test_truth_pairs_come_from_validation_or_test_never_train() -> None:
    world = World(WorldConfig(num_prompts=200), 0)
    texts = {split: {p.text for p in world.split(split)} for split in ("validation", "test")}
    for split in ("validation", "test"):
        pairs = truth_pairs(world, per_prompt=2, split=split)
        assert pairs and {p["prompt"] for p in pairs} <= texts[split]
        assert all(p["chosen_utility"] > p["rejected_utility"] for p in pairs)
    with pytest.raises(ValueError, match="never from train"):
        truth_pairs(world, split="train")


def test_the_leakage_report_counts() -> None:
    world = WORLDS[0]
    report = leakage_report(world)
    assert report["train_prompts"] == len(world.split("train"))
    for split in ("validation", "test"):
        for slice_name in ("seen_intent", "novel_intent"):
            counts = report[split][slice_name]
            assert counts["prompts"] == len(world.split(split, slice_name)) > 0
            assert counts["shared_texts"] == counts["shared_pairs"] == 0
            assert counts["heldout_phrasing"] >= counts["prompts"] / 2
        # Near-duplicates are the prompts that reuse a seen phrasing: only an unseen item tells them apart.
        seen = report[split]["seen_intent"]
        assert 0 < seen["near_duplicates"] <= seen["prompts"] - seen["heldout_phrasing"]
        assert report[split]["novel_intent"]["near_duplicates"] == 0
    figures = leakage_figures(report)
    assert figures["leakage/validation/seen_intent/shared_texts"] == 0
    assert len(figures) == 2 * 2 * 5

    # A leaky world is caught: a train prompt copied into validation, and one with only its item swapped.
    train = world.split("train")
    copy, near = train[0], train[1]
    swapped = SimpleNamespace(**{**vars(near), "text": near.text.replace(near.items[0], "zzz"),
                                 "pairs": tuple((i, "zzz") for i in near.intents)})
    leaky = SimpleNamespace(split=lambda name, slice="seen_intent": (
        train if name == "train" else (copy, swapped) if slice == "seen_intent" else ()))
    counts = leakage_report(leaky)["validation"]["seen_intent"]
    assert counts == {"prompts": 2, "shared_texts": 1, "shared_pairs": 1, "near_duplicates": 2,
                      "heldout_phrasing": 0}
    assert jaccard(masked_tokens(near), masked_tokens(swapped)) == 1.0
