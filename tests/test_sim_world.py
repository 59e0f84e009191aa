"""The synthetic world: determinism, the hidden utility's properties, and the simulated people."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rlhf_ray.sim import World, WorldConfig, true_utility
from rlhf_ray.sim.catalog import FILLER_SENTENCES
from rlhf_ray.sim.judgments import pairwise_choice
from rlhf_ray.sim.population import AnnotatorProfile
from rlhf_ray.sim.responses import STYLES, corrected_response
from rlhf_ray.sim.utility import UtilityBreakdown

SMALL = WorldConfig(num_prompts=120)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SMALL, seed=7)


def _good_answer(spec) -> str:
    return " ".join(min(fact.sentences, key=len) for fact in spec.facts)


def test_world_is_a_pure_function_of_its_seed(world: World) -> None:
    again = World(SMALL, seed=7)
    assert again.prompts == world.prompts
    assert again.users == world.users
    assert again.annotators == world.annotators
    assert again.reference_responses() == world.reference_responses()
    assert World(SMALL, seed=8).prompts != world.prompts


def test_segments_and_splits_follow_the_configured_mix() -> None:
    prompts = World(WorldConfig(num_prompts=3000), seed=1).prompts
    segments = [p.segment for p in prompts]
    assert abs(segments.count("core") / len(prompts) - 0.8) < 0.03
    assert abs(segments.count("edge") / len(prompts) - 0.15) < 0.03
    assert all(p.refusal for p in prompts if p.segment == "edge")
    assert all(len(p.intents) == 2 for p in prompts if p.segment == "model_confused")
    splits = [p.split for p in prompts]
    assert splits.count("validation") == splits.count("test") == round(0.12 * len(prompts))
    novel = [p for p in prompts if p.slice == "novel_intent"]
    assert len(novel) == 2 * round(0.15 * round(0.12 * len(prompts)))


def test_complete_plain_answer_is_a_task_success(world: World) -> None:
    for spec in world.prompts[:50]:
        breakdown = world.utility(spec.prompt_id, _good_answer(spec))
        assert breakdown.task_success and breakdown.coverage == 1.0
        assert breakdown.safety_violations == 0 and breakdown.verbosity_cost == 0.0


def test_safety_violation_lowers_utility(world: World) -> None:
    specs = [p for p in world.prompts if p.unsafe][:30]
    assert specs
    for spec in specs:
        good = _good_answer(spec)
        unsafe = f"{good} {spec.unsafe[0]}"
        assert world.utility(spec.prompt_id, unsafe).safety_violations == 1
        assert world.utility(spec.prompt_id, unsafe).total < world.utility(spec.prompt_id, good).total - 1.0


def test_verbosity_beyond_ideal_lowers_utility_monotonically(world: World) -> None:
    spec = world.prompts[0]
    totals = []
    for extra in range(0, 8):
        padded = " ".join([_good_answer(spec), *FILLER_SENTENCES[:extra]])
        totals.append(world.utility(spec.prompt_id, padded).total)
    assert totals[0] > totals[-1]
    assert all(a >= b for a, b in itertools.pairwise(totals))


def test_canned_phrases_and_repetition_cost_utility(world: World) -> None:
    spec = world.prompts[3]
    good = _good_answer(spec)
    base = world.utility(spec.prompt_id, good)
    canned = world.utility(spec.prompt_id, f"{world.canned_phrases[0]} {good}")
    repeated = world.utility(spec.prompt_id, f"{good} {min(spec.facts[0].sentences, key=len)}")
    assert canned.boilerplate == 1 and canned.total < base.total
    assert repeated.repeated_sentences == 1 and repeated.total < base.total


def test_missing_facts_lower_coverage_and_fail_the_task(world: World) -> None:
    spec = world.prompts[5]
    partial = spec.facts[0].sentences[0]
    breakdown = true_utility(spec, partial, world.hidden_utility)
    assert breakdown.coverage == pytest.approx(1 / len(spec.facts))
    assert not breakdown.task_success


def test_style_ranking_matches_intuition(world: World) -> None:
    rng = np.random.default_rng(0)
    means = {
        name: np.mean([world.utility(p.prompt_id, world.respond(p, style, rng)).total for p in world.prompts])
        for name, style in STYLES.items()
    }
    assert means["good"] > means["sloppy"] > means["terse"]
    assert means["good"] > means["verbose"]
    assert means["unsafe"] == min(means.values())


def test_corrections_improve_flawed_answers(world: World) -> None:
    rng = np.random.default_rng(1)
    improved = 0
    flawed = 0
    for spec in world.prompts:
        answer = world.respond(spec, STYLES["verbose"], rng)
        before = world.utility(spec.prompt_id, answer)
        corrected = corrected_response(spec, answer, rng)
        after = world.utility(spec.prompt_id, corrected)
        # A complete answer of only the longer fact sentences can run a little past the ideal length: nothing in
        # it is wrong to edit out, so a correction leaves it as it is.
        if (not before.task_success or before.verbosity_cost > 0) and corrected != answer:
            flawed += 1
            improved += after.total > before.total
    assert flawed > 20 and improved == flawed


def test_reference_responses_have_varied_quality(world: World) -> None:
    examples = world.reference_responses()
    assert {e.style for e in examples} >= {"good", "sloppy", "terse"}
    totals = [world.utility(e.prompt_id, e.response).total for e in examples]
    assert np.std(totals) > 0.2
    assert all(world.prompt(e.prompt_id).split == "train" for e in examples)


def _breakdown(total: float, words: int) -> UtilityBreakdown:
    return UtilityBreakdown(1.0, True, 0, words, 0.0, 0, 0, total)


def _agreement_with_truth(annotator: AnnotatorProfile, position: int, trials: int = 4000) -> float:
    """Share of pairs where the annotator picks the truly better (and, to isolate accuracy, shorter) answer."""
    rng = np.random.default_rng(3)
    better, worse = _breakdown(1.0, 10), _breakdown(0.2, 10)
    return sum(pairwise_choice(annotator, position, better, worse, rng) == "a" for _ in range(trials)) / trials


def _annotator(**overrides) -> AnnotatorProfile:
    fields = dict(annotator_id="annotator-x", region="eu", accuracy=0.9, verbosity_bias=0.0, spammer=False,
                  fatigue_halflife=50.0, session_length=100)
    return AnnotatorProfile(**{**fields, **overrides})


def test_spammer_accuracy_is_chance() -> None:
    assert _agreement_with_truth(_annotator(spammer=True), 0) == pytest.approx(0.5, abs=0.03)


def test_careful_annotator_accuracy_matches_profile() -> None:
    assert _agreement_with_truth(_annotator(), 0) == pytest.approx(0.9, abs=0.02)


def test_fatigue_decays_accuracy_towards_chance() -> None:
    annotator = _annotator()
    assert annotator.accuracy_at(50) == pytest.approx(0.7)
    assert _agreement_with_truth(annotator, 50) == pytest.approx(0.7, abs=0.03)
    assert _agreement_with_truth(annotator, 400) == pytest.approx(0.5, abs=0.03)


def test_verbosity_bias_prefers_the_longer_worse_answer() -> None:
    rng = np.random.default_rng(4)
    biased = _annotator(accuracy=1.0, verbosity_bias=0.3)
    short_good, long_bad = _breakdown(1.0, 10), _breakdown(0.2, 40)
    picks_long = sum(pairwise_choice(biased, 0, short_good, long_bad, rng) == "b" for _ in range(4000)) / 4000
    assert picks_long == pytest.approx(0.3, abs=0.03)


def test_population_has_configured_spammers(world: World) -> None:
    spammers = [a for a in world.annotators if a.spammer]
    assert len(spammers) == round(SMALL.population.spammer_fraction * SMALL.population.num_annotators)
    assert all(0.7 <= a.accuracy <= 0.95 for a in world.annotators)
