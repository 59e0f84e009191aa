"""The synthetic production world: prompts, people and the hidden quality function, all from one seed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from rlhf_ray.sim.catalog import CANNED_PHRASES, FILLER_SENTENCES, HEDGES, SYSTEM_PROMPT, TOPICS
from rlhf_ray.sim.config import WorldConfig
from rlhf_ray.sim.population import AnnotatorProfile, UserProfile, build_annotators, build_users
from rlhf_ray.sim.prompts import SEEN_INTENT, SLICES, SPLITS, PromptSpec, SplitPlan, build_prompts, plan_splits
from rlhf_ray.sim.responses import REFERENCE_STYLE_MIX, STYLES, compose_response, draw_style
from rlhf_ray.sim.utility import UtilityBreakdown, true_utility

# Independent random streams, so that e.g. adding a user never changes the prompt catalogue.
STREAM_PROMPTS, STREAM_USERS, STREAM_ANNOTATORS, STREAM_REFERENCES, STREAM_CORPUS, STREAM_SPLITS = range(6)
STREAM_SHARDS = 100


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A generator that depends only on the seed and the stream path."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


@dataclass(frozen=True)
class ReferenceExample:
    prompt_id: str
    prompt: str
    response: str
    style: str


class World:
    """A pure function of (seed, config): constructing it twice gives the same world."""

    def __init__(self, config: WorldConfig | None = None, seed: int = 0) -> None:
        self.config = config or WorldConfig()
        self.seed = seed

    @cached_property
    def plan(self) -> SplitPlan:
        """Which intents, items and phrasings each split may use (hidden, like the facts)."""
        return plan_splits(self.config, rng_for(self.seed, STREAM_SPLITS))

    @cached_property
    def prompts(self) -> tuple[PromptSpec, ...]:
        return build_prompts(self.config, rng_for(self.seed, STREAM_PROMPTS), self.plan)

    @cached_property
    def _by_id(self) -> dict[str, PromptSpec]:
        return {p.prompt_id: p for p in self.prompts}

    @cached_property
    def users(self) -> tuple[UserProfile, ...]:
        return build_users(self.config.population, rng_for(self.seed, STREAM_USERS))

    @cached_property
    def annotators(self) -> tuple[AnnotatorProfile, ...]:
        return build_annotators(self.config.population, rng_for(self.seed, STREAM_ANNOTATORS))

    def prompt(self, prompt_id: str) -> PromptSpec:
        try:
            return self._by_id[prompt_id]
        except KeyError:
            raise KeyError(f"prompt_id {prompt_id!r} is not in this world (seed {self.seed})") from None

    def split(self, name: str, slice: str = SEEN_INTENT) -> tuple[PromptSpec, ...]:
        """Prompts of the "train", "validation" or "test" split in one slice: "seen_intent" (the default: what
        is measured) or "novel_intent" (validation and test only, reported on its own). Policy feedback, SFT
        references and the tokenizer corpus only ever use "train"."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {name!r}")
        if slice not in SLICES:
            raise ValueError(f"slice must be one of {SLICES}; got {slice!r}")
        return tuple(p for p in self.prompts if p.split == name and p.slice == slice)

    def utility(self, prompt_id: str, response: str) -> UtilityBreakdown:
        """Hidden ground truth, for evaluation only (see `rlhf_ray.sim.utility`)."""
        return true_utility(self.prompt(prompt_id), response, self.config.utility)

    def reference_responses(self, per_prompt: int = 1, split: str = "train") -> list[ReferenceExample]:
        """SFT warm-start data: answers of varied quality, mostly decent, some sloppy or padded."""
        rng = rng_for(self.seed, STREAM_REFERENCES)
        examples = []
        for spec in self.split(split):
            for _ in range(per_prompt):
                style = draw_style(REFERENCE_STYLE_MIX, rng)
                response = compose_response(spec, STYLES[style], rng)
                examples.append(ReferenceExample(spec.prompt_id, spec.text, response, style))
        return examples

    def corpus(self, samples_per_prompt: int = 3) -> Iterator[str]:
        """Text a tokenizer should cover, from train only: its prompts, answers in every style, and the catalogue's
        style and unsafe sentences of the intents train asks."""
        rng = rng_for(self.seed, STREAM_CORPUS)
        yield SYSTEM_PROMPT
        yield from CANNED_PHRASES + HEDGES + FILLER_SENTENCES
        for topic in TOPICS:
            for intent in topic.intents:
                if intent.name not in self.plan.novel:
                    yield from intent.unsafe
        for spec in self.split("train"):
            yield spec.text
            for _ in range(samples_per_prompt):
                yield compose_response(spec, STYLES[str(rng.choice(list(STYLES)))], rng)
