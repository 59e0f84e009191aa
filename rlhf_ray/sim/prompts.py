"""The prompt catalogue: what production traffic asks, by topic, intent and segment, in three splits.

The splits are disjoint by construction. Before any prompt is drawn, a `SplitPlan` (a function of the seed alone)
keeps, per intent, some items for validation and others for test, one phrasing template out of train, and a few
intents out of train entirely. So validation and test never share a prompt text or an (intent, item) pair with
train; every other one of their prompts uses a phrasing train never saw; and their novel-intent slice asks
intents train never asked (reported on its own: no policy can know an unseen intent's facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rlhf_ray.sim.catalog import TOPICS, Fact, Intent, Topic
from rlhf_ray.sim.config import WorldConfig

SEGMENTS: tuple[str, ...] = ("core", "edge", "model_confused")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
EVAL_SPLITS: tuple[str, ...] = SPLITS[1:]
SEEN_INTENT, NOVEL_INTENT = "seen_intent", "novel_intent"
SLICES: tuple[str, ...] = (SEEN_INTENT, NOVEL_INTENT)
HELDOUT_PHRASINGS = 1  # phrasing templates per intent that train never uses
ITEMS_PER_EVAL_SPLIT = 1  # items per intent that only validation uses, and as many that only test uses
HELDOUT_PHRASING_EVERY = 2  # every second validation/test prompt of seen intents uses a held-out phrasing


@dataclass(frozen=True)
class PromptSpec:
    """One prompt and what a good answer to it must (and must not) contain.

    `facts` and `unsafe` are part of the hidden world: training code sees only `text`. `items[k]` fills the
    slot of `templates[k]`, the phrasing of `intents[k]`; `slice` is "seen_intent" or (validation and test only)
    "novel_intent". `ideal_words` is hidden too: the sum over its intents of the shortest complete answer plus the
    intent's slack drawn per world seed.
    """

    prompt_id: str
    topic: str
    intents: tuple[str, ...]
    segment: str
    split: str
    slice: str
    items: tuple[str, ...]
    templates: tuple[str, ...]
    text: str
    facts: tuple[Fact, ...]
    unsafe: tuple[str, ...]
    refusal: bool
    ideal_words: int

    @property
    def item(self) -> str:
        return self.items[0]

    @property
    def required_terms(self) -> tuple[str, ...]:
        return tuple(fact.term for fact in self.facts)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (intent, item) pairs this prompt asks about."""
        return tuple(zip(self.intents, self.items, strict=True))


@dataclass(frozen=True)
class SplitPlan:
    """What each split may use, drawn once per seed: `items[(intent, split)]`, the train phrasings of each
    intent (`train_phrasings`; the rest are held out), and the intents held out of train (`novel`)."""

    novel: tuple[str, ...]
    items: Mapping[tuple[str, str], tuple[str, ...]]
    train_phrasings: Mapping[str, tuple[str, ...]]

    def phrasings(self, intent: Intent, split: str, heldout: bool) -> tuple[str, ...]:
        train = self.train_phrasings[intent.name]
        if split == "train":
            return train
        return tuple(q for q in intent.questions if q not in train) if heldout or not train else train


def _fill(template: str, item: str) -> str:
    return template.replace("{item}", item)


def _bind_facts(intent: Intent, item: str) -> tuple[Fact, ...]:
    return tuple(Fact(f.term, tuple(_fill(s, item) for s in f.sentences)) for f in intent.facts)


def _ideal_words(facts: tuple[Fact, ...], slack: int) -> int:
    """The ideal length of one intent's answer: its shortest complete answer (the shortest sentence per fact) plus
    the intent's slack, drawn per world seed with the hidden utility."""
    return sum(min(len(s.split()) for s in f.sentences) for f in facts) + slack


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _permuted(rng: np.random.Generator, options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(options[int(k)] for k in rng.permutation(len(options)))


def _ordinary_intents(topic: Topic, plan: SplitPlan) -> tuple[Intent, ...]:
    """A topic's intents that train asks: neither refusals nor held out as novel."""
    return tuple(i for i in topic.intents if not i.refusal and i.name not in plan.novel)


def plan_splits(config: WorldConfig, rng: np.random.Generator) -> SplitPlan:
    """Novel intents from distinct topics that keep two ordinary intents for train (so every topic still has
    compound asks), then per intent: which items validation and test own, and which phrasings train uses."""
    roomy = [t for t in TOPICS if sum(not i.refusal for i in t.intents) > 2]
    if config.novel_intents > len(roomy):
        raise ValueError(f"novel_intents must be at most {len(roomy)} (topics with three ordinary intents); got "
                         f"{config.novel_intents}")
    novel = tuple(sorted(str(_pick(rng, tuple(i.name for i in roomy[int(k)].intents if not i.refusal)))
                         for k in rng.permutation(len(roomy))[: config.novel_intents]))
    items: dict[tuple[str, str], tuple[str, ...]] = {}
    train_phrasings: dict[str, tuple[str, ...]] = {}
    for intent in (i for t in TOPICS for i in t.intents):
        shuffled = _permuted(rng, intent.items)
        phrasings = _permuted(rng, intent.questions)
        if intent.name in novel:
            half = len(shuffled) // 2
            items.update({(intent.name, "train"): (), (intent.name, "validation"): shuffled[:half],
                          (intent.name, "test"): shuffled[half:]})
            train_phrasings[intent.name] = ()
            continue
        k = ITEMS_PER_EVAL_SPLIT
        items.update({(intent.name, "validation"): shuffled[:k], (intent.name, "test"): shuffled[k : 2 * k],
                      (intent.name, "train"): shuffled[2 * k :]})
        train_phrasings[intent.name] = tuple(q for q in intent.questions if q not in phrasings[:HELDOUT_PHRASINGS])
    return SplitPlan(novel, items, train_phrasings)


def _intents_for(segment: str, slice_name: str, plan: SplitPlan, rng: np.random.Generator) -> tuple[Intent, ...]:
    if slice_name == NOVEL_INTENT:
        return (_pick(rng, tuple(i for t in TOPICS for i in t.intents if i.name in plan.novel)),)
    if segment == "edge":
        return (_pick(rng, tuple(i for t in TOPICS for i in t.intents if i.refusal)),)
    topic: Topic = _pick(rng, TOPICS)
    ordinary = _ordinary_intents(topic, plan)
    if segment == "model_confused":
        first, second = rng.choice(len(ordinary), size=2, replace=False)
        return ordinary[int(first)], ordinary[int(second)]
    return (_pick(rng, ordinary),)


def _make_prompt(index: int, segment: str, split: str, slice_name: str, heldout_phrasing: bool, plan: SplitPlan,
                 ideal_slack: Mapping[str, int], rng: np.random.Generator) -> PromptSpec:
    """One prompt of `split`: its intents, then items and phrasings from what the plan leaves that split.
    A novel-intent prompt is an ordinary single ask (its segment is "core"); its ideal length sums its intents'."""
    intents = _intents_for(segment, slice_name, plan, rng)
    topic = next(t for t in TOPICS if intents[0] in t.intents)
    items = tuple(str(_pick(rng, plan.items[(intent.name, split)])) for intent in intents)
    templates = tuple(str(_pick(rng, plan.phrasings(intent, split, heldout_phrasing))) for intent in intents)
    bound = tuple(_bind_facts(intent, item) for intent, item in zip(intents, items, strict=True))
    facts = tuple(f for intent_facts in bound for f in intent_facts)
    return PromptSpec(
        prompt_id=f"p-{index:06d}",
        topic=topic.name,
        intents=tuple(i.name for i in intents),
        segment="core" if slice_name == NOVEL_INTENT else segment,
        split=split,
        slice=slice_name,
        items=items,
        templates=templates,
        text=" also , ".join(_fill(t, item) for t, item in zip(templates, items, strict=True)),
        facts=facts,
        unsafe=tuple(s for intent in intents for s in intent.unsafe),
        refusal=any(i.refusal for i in intents),
        ideal_words=sum(_ideal_words(f, ideal_slack[i.name]) for i, f in zip(intents, bound, strict=True)),
    )


def _assign_splits(config: WorldConfig, rng: np.random.Generator, has_novel: bool) -> tuple[list[str], list[str]]:
    """Exactly round(fraction × num_prompts) prompts per evaluation split at random positions, and exactly
    round(novel_intent_fraction × its size) of each in the novel-intent slice."""
    splits, slices = ["train"] * config.num_prompts, [SEEN_INTENT] * config.num_prompts
    order = [int(k) for k in rng.permutation(config.num_prompts)]
    for split, fraction in (("validation", config.validation_fraction), ("test", config.test_fraction)):
        size = round(fraction * config.num_prompts)
        chosen, order = order[:size], order[size:]
        novel = set(chosen[: round(config.novel_intent_fraction * size)] if has_novel else ())
        for index in chosen:
            splits[index] = split
            slices[index] = NOVEL_INTENT if index in novel else SEEN_INTENT
    return splits, slices


def build_prompts(config: WorldConfig, rng: np.random.Generator, plan: SplitPlan,
                  ideal_slack: Mapping[str, int]) -> tuple[PromptSpec, ...]:
    """Draw the catalogue: segment by the configured mix, split by the configured fractions, the novel-intent
    slice among validation and test prompts; then topic, intent, slot and phrasing within the split's plan.
    `ideal_slack` is each intent's ideal-length slack, drawn with the world's hidden utility."""
    mix = config.segments.model_dump()
    weights = np.array([mix[s] for s in SEGMENTS])
    segments = rng.choice(len(SEGMENTS), size=config.num_prompts, p=weights)
    splits, slices = _assign_splits(config, rng, bool(plan.novel))
    seen_so_far = dict.fromkeys(EVAL_SPLITS, 0)
    prompts = []
    for i, (seg, split, slice_name) in enumerate(zip(segments, splits, slices, strict=True)):
        heldout_phrasing = False
        if split != "train" and slice_name == SEEN_INTENT:
            heldout_phrasing = seen_so_far[split] % HELDOUT_PHRASING_EVERY == 0
            seen_so_far[split] += 1
        prompts.append(_make_prompt(i, SEGMENTS[int(seg)], split, slice_name, heldout_phrasing, plan, ideal_slack,
                                    rng))
    return tuple(prompts)
