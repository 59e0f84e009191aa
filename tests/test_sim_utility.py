"""The hidden utility's penalty side is drawn per world seed (issue 19, item 2): ranges, determinism, the fixed
reward side, the convex verbosity cost, and the seed's own boilerplate in what the world's people see."""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict

import numpy as np
import pytest
from pydantic import ValidationError

from rlhf_ray.algos.penalties import verbosity_penalty
from rlhf_ray.algos.phrases import PhraseSettings, learn_canned_phrases
from rlhf_ray.sim import ShardConfig, ShardSpec, UtilityRanges, World, WorldConfig, true_utility
from rlhf_ray.sim.catalog import (
    CLOSER_POOL,
    FILLER_SENTENCES,
    HEDGE_POOL,
    OPENER_POOL,
    SYSTEM_PROMPT,
    TOPICS,
    banned_phrases,
)
from rlhf_ray.sim.evaluation import truth_pairs
from rlhf_ray.sim.responses import REFUSAL_SENTENCE, STYLES
from rlhf_ray.sim.shards import build_shard_rows
from rlhf_ray.sim.utility import relative_excess, verbosity_cost

CONFIG = WorldConfig(num_prompts=200)
SEEDS = (0, 1, 2)
WORLDS = {seed: World(CONFIG, seed) for seed in SEEDS}
POOL = OPENER_POOL + CLOSER_POOL + HEDGE_POOL
DRAWN = ("safety_penalty", "verbosity_penalty", "verbosity_exponent", "canned_penalty", "repetition_penalty")
INTENTS = [intent for topic in TOPICS for intent in topic.intents]


def _boilerplate_in(text: str) -> set[str]:
    return {phrase for phrase in POOL if phrase in text}


@pytest.mark.parametrize("seed", SEEDS)
def test_each_seed_draws_its_penalties_within_the_documented_ranges(seed: int) -> None:
    world, ranges = WORLDS[seed], CONFIG.utility
    weights = asdict(world.utility_weights)
    for name in DRAWN:
        low, high = getattr(ranges, name)
        assert low <= weights[name] <= high, (name, weights[name])
    low, high = ranges.ideal_slack_words
    assert set(world.hidden_utility.ideal_slack) == {i.name for i in INTENTS}
    assert all(low <= s <= high for s in world.hidden_utility.ideal_slack.values())
    boilerplate = world.hidden_utility.boilerplate
    for drawn, pool in ((boilerplate.openers, OPENER_POOL), (boilerplate.closers, CLOSER_POOL),
                        (boilerplate.hedges, HEDGE_POOL)):
        assert len(set(drawn)) == ranges.phrases_per_kind and set(drawn) <= set(pool)
    assert world.canned_phrases == boilerplate.openers + boilerplate.closers + boilerplate.hedges


def test_seeds_differ_in_weights_phrases_and_ideal_lengths() -> None:
    for a, b in itertools.combinations(WORLDS.values(), 2):
        wa, wb = asdict(a.utility_weights), asdict(b.utility_weights)
        assert all(wa[name] != wb[name] for name in DRAWN)
        assert set(a.canned_phrases) != set(b.canned_phrases)
        assert a.hidden_utility.ideal_slack != b.hidden_utility.ideal_slack


def test_one_seed_draws_the_same_hidden_utility_every_time() -> None:
    again = World(CONFIG, 1)
    assert again.hidden_utility == WORLDS[1].hidden_utility
    assert again.prompts == WORLDS[1].prompts
    # Drawn on its own stream: the prompt catalogue's texts and splits do not move with the utility's ranges.
    other = World(CONFIG.model_copy(update={"utility": UtilityRanges(ideal_slack_words=(0, 0))}), 1)
    assert [(p.text, p.split) for p in other.prompts] == [(p.text, p.split) for p in again.prompts]


def test_coverage_and_success_weights_are_fixed_across_seeds() -> None:
    assert {(w.utility_weights.coverage, w.utility_weights.success_bonus) for w in WORLDS.values()} == {(1.0, 0.5)}
    # Hence a complete, plain, safe answer scores the same on every seed: the figures keep one scale.
    totals = set()
    for world in WORLDS.values():
        spec = next(p for p in world.prompts if not p.unsafe and not p.refusal)
        totals.add(world.utility(spec.prompt_id, " ".join(min(f.sentences, key=len) for f in spec.facts)).total)
    assert totals == {1.5}


def test_the_hidden_verbosity_cost_is_convex_not_the_framework_linear_penalty() -> None:
    # x = max(0, words − ideal) / ideal; g(x) = x^γ.
    assert relative_excess(15, 20) == 0.0 and relative_excess(30, 20) == 0.5 and relative_excess(60, 20) == 2.0
    assert verbosity_cost(0.5, 2.0) == pytest.approx(0.25)
    assert verbosity_cost(2.0, 2.0) == pytest.approx(4.0)
    assert verbosity_cost(2.0, 1.5) == pytest.approx(2.0 * np.sqrt(2.0))
    # The framework's penalty is coef·x: the two disagree at both ends, so neither is the other rescaled.
    linear = verbosity_penalty([30, 60], target_length=20, coef=1.0).tolist()
    assert linear == pytest.approx([0.5, 2.0])
    assert linear[1] / linear[0] == pytest.approx(4.0)
    assert verbosity_cost(2.0, 2.0) / verbosity_cost(0.5, 2.0) == pytest.approx(16.0)


def test_true_utility_by_hand_on_a_pinned_world() -> None:
    """A range with low == high pins a weight; the total follows the docstring's equation."""
    pinned = UtilityRanges(safety_penalty=(1.5, 1.5), verbosity_penalty=(0.4, 0.4), verbosity_exponent=(2.0, 2.0),
                           canned_penalty=(0.1, 0.1), repetition_penalty=(0.2, 0.2), ideal_slack_words=(4, 4),
                           phrases_per_kind=len(OPENER_POOL))
    world = World(WorldConfig(num_prompts=60, utility=pinned), seed=3)
    weights = world.utility_weights
    assert (weights.safety_penalty, weights.verbosity_penalty, weights.verbosity_exponent, weights.canned_penalty,
            weights.repetition_penalty) == (1.5, 0.4, 2.0, 0.1, 0.2)
    assert set(world.canned_phrases) == set(POOL)
    spec = next(p for p in world.prompts if len(p.intents) == 1 and not p.refusal)
    plain = [min(f.sentences, key=len) for f in spec.facts]
    assert spec.ideal_words == sum(len(s.split()) for s in plain) + 4
    # Double the ideal length in words (x = 1 → cost 0.4), one canned phrase, one repeat, one fact missing.
    answer = " ".join([OPENER_POOL[0], *plain[:-1], plain[0]])
    text = " ".join([answer, *["padding"] * (2 * spec.ideal_words - len(answer.split()))])
    breakdown = true_utility(spec, text, world.hidden_utility)
    coverage = (len(plain) - 1) / len(plain)
    assert (breakdown.words, breakdown.boilerplate, breakdown.repeated_sentences) == (2 * spec.ideal_words, 1, 1)
    assert breakdown.verbosity_cost == pytest.approx(1.0)
    assert breakdown.total == pytest.approx(1.0 * coverage - 0.4 * 1.0 - 0.1 - 0.2)


@pytest.mark.parametrize("seed", SEEDS)
def test_responses_and_feedback_use_the_seed_boilerplate(seed: int) -> None:
    world, rng = WORLDS[seed], np.random.default_rng(seed)
    own = set(world.canned_phrases)
    texts = [world.respond(p, STYLES[style], rng) for p in world.prompts for style in ("verbose", "sloppy")]
    texts += [e.response for e in world.reference_responses()]
    texts += [t for pair in truth_pairs(world, per_prompt=2) for t in (pair["chosen"], pair["rejected"])]
    rows, _ = build_shard_rows(world, ShardConfig(rows=200, malformed_fraction=0, duplicate_fraction=0,
                                                  pii_fraction=0), ShardSpec("pairwise", 0, 200, "jsonl"))
    texts += [r[k] for r in rows for k in ("response_a", "response_b")]
    seen = set().union(*map(_boilerplate_in, texts))
    assert seen == own  # every phrase of the seed's list shows up, and no other pool phrase ever does
    assert set(world.corpus(samples_per_prompt=1)) >= own


@pytest.mark.parametrize("seed", SEEDS)
def test_a_phrase_list_learned_from_the_world_finds_its_seed_phrases_only(seed: int) -> None:
    """What `rlhf-ray curate` does to feedback, here on pairs the hidden utility orders: the learned list has some of
    this seed's boilerplate to find, and none of the pool phrases another seed would use."""
    world = World(WorldConfig(num_prompts=600), seed)
    pairs = [p for split in ("validation", "test") for p in truth_pairs(world, per_prompt=8, split=split)]
    learned = [row["phrase"] for row in learn_canned_phrases([p["rejected"] for p in pairs],
                                                             [p["chosen"] for p in pairs], PhraseSettings())]
    words = {phrase: " ".join(re.findall(r"[a-z']+", phrase)) for phrase in POOL}
    own = [words[p] for p in world.canned_phrases]
    others = [w for p, w in words.items() if p not in world.canned_phrases]
    assert any(phrase in text for phrase in learned for text in own), learned
    assert not any(phrase in text for phrase in learned for text in others), learned


def test_pool_phrases_never_overlap_each_other_or_the_catalogue() -> None:
    """Counting one phrase never counts another, and boilerplate never covers a fact or trips the safety check."""
    assert len(set(POOL)) == len(POOL)
    for a, b in itertools.permutations(POOL, 2):
        assert a not in b, (a, b)
    catalogue = [SYSTEM_PROMPT, REFUSAL_SENTENCE, *FILLER_SENTENCES, *banned_phrases()]
    for intent in INTENTS:
        for item in intent.items:
            catalogue += [q.replace("{item}", item) for q in intent.questions]
            catalogue += [s.replace("{item}", item) for f in intent.facts for s in f.sentences]
    terms = {f.term for intent in INTENTS for f in intent.facts}
    for phrase in POOL:
        assert not any(phrase in text for text in catalogue), phrase
        assert not any(term in phrase for term in terms), phrase


@pytest.mark.parametrize(("update", "field"), [
    ({"verbosity_penalty": (0.6, 0.2)}, "utility.verbosity_penalty"),
    ({"canned_penalty": (-0.1, 0.2)}, "utility.canned_penalty"),
    ({"verbosity_exponent": (0.5, 2.0)}, "utility.verbosity_exponent"),
    ({"phrases_per_kind": len(OPENER_POOL) + 1}, "phrases_per_kind"),
])
def test_bad_ranges_fail_naming_the_field(update: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        UtilityRanges(**update)
