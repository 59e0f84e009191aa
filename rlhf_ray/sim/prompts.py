"""The prompt catalogue: what production traffic asks, by topic, intent and segment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_ray.sim.catalog import TOPICS, Fact, Intent, Topic
from rlhf_ray.sim.config import WorldConfig

SEGMENTS: tuple[str, ...] = ("core", "edge", "model_confused")
IDEAL_LENGTH_SLACK_WORDS = 4


@dataclass(frozen=True)
class PromptSpec:
    """One prompt and what a good answer to it must (and must not) contain.

    `facts` and `unsafe` are part of the hidden world: training code sees only `text`.
    """

    prompt_id: str
    topic: str
    intents: tuple[str, ...]
    segment: str
    split: str
    item: str
    text: str
    facts: tuple[Fact, ...]
    unsafe: tuple[str, ...]
    refusal: bool
    ideal_words: int

    @property
    def required_terms(self) -> tuple[str, ...]:
        return tuple(fact.term for fact in self.facts)


def _fill(template: str, item: str) -> str:
    return template.replace("{item}", item)


def _bind_facts(intent: Intent, item: str) -> tuple[Fact, ...]:
    return tuple(Fact(f.term, tuple(_fill(s, item) for s in f.sentences)) for f in intent.facts)


def _ideal_words(facts: tuple[Fact, ...]) -> int:
    """The length of a complete, plain answer: the shortest sentence per fact plus a little slack."""
    return sum(min(len(s.split()) for s in f.sentences) for f in facts) + IDEAL_LENGTH_SLACK_WORDS


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _ordinary_intents(topic: Topic) -> tuple[Intent, ...]:
    return tuple(i for i in topic.intents if not i.refusal)


def _make_prompt(index: int, segment: str, split: str, rng: np.random.Generator) -> PromptSpec:
    topic: Topic = _pick(rng, TOPICS)
    if segment == "edge":
        refusals = tuple(i for t in TOPICS for i in t.intents if i.refusal)
        intent: Intent = _pick(rng, refusals)
        topic = next(t for t in TOPICS if intent in t.intents)
        intents = (intent,)
    elif segment == "model_confused":
        ordinary = _ordinary_intents(topic)
        first, second = rng.choice(len(ordinary), size=2, replace=False)
        intents = (ordinary[int(first)], ordinary[int(second)])
    else:
        intents = (_pick(rng, _ordinary_intents(topic)),)
    items = [str(_pick(rng, intent.items)) for intent in intents]
    questions = [_fill(str(_pick(rng, intent.questions)), item) for intent, item in zip(intents, items, strict=True)]
    facts = tuple(f for intent, item in zip(intents, items, strict=True) for f in _bind_facts(intent, item))
    return PromptSpec(
        prompt_id=f"p-{index:06d}",
        topic=topic.name,
        intents=tuple(i.name for i in intents),
        segment=segment,
        split=split,
        item=items[0],
        text=" also , ".join(questions),
        facts=facts,
        unsafe=tuple(s for intent in intents for s in intent.unsafe),
        refusal=any(i.refusal for i in intents),
        ideal_words=_ideal_words(facts),
    )


def build_prompts(config: WorldConfig, rng: np.random.Generator) -> tuple[PromptSpec, ...]:
    """Draw the catalogue: segment by the configured mix, then topic, intent, slot and phrasing."""
    mix = config.segments.model_dump()
    weights = np.array([mix[s] for s in SEGMENTS])
    segments = rng.choice(len(SEGMENTS), size=config.num_prompts, p=weights)
    heldout = rng.random(config.num_prompts) < config.heldout_fraction
    return tuple(
        _make_prompt(i, SEGMENTS[int(seg)], "heldout" if held else "train", rng)
        for i, (seg, held) in enumerate(zip(segments, heldout, strict=True))
    )
