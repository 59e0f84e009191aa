"""The synthetic production world: prompts, people and the hidden quality function, all from one seed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from rlhf_ray.sim.catalog import FILLER_SENTENCES, SYSTEM_PROMPT, TOPICS
from rlhf_ray.sim.config import WorldConfig
from rlhf_ray.sim.population import AnnotatorProfile, UserProfile, build_annotators, build_users
from rlhf_ray.sim.prompts import SEEN_INTENT, SLICES, SPLITS, PromptSpec, SplitPlan, build_prompts, plan_splits
from rlhf_ray.sim.responses import REFERENCE_STYLE_MIX, STYLES, ResponseStyle, compose_response, draw_style
from rlhf_ray.sim.utility import HiddenUtility, UtilityBreakdown, UtilityWeights, draw_hidden_utility, true_utility

# Independent random streams, so that e.g. adding a user never changes the prompt catalogue.
STREAM_PROMPTS, STREAM_USERS, STREAM_ANNOTATORS, STREAM_REFERENCES, STREAM_CORPUS, STREAM_SPLITS = range(6)
STREAM_UTILITY = 6  # the hidden utility's penalty side: weights, ideal-length slack, boilerplate phrases
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
    def hidden_utility(self) -> HiddenUtility:
        """The hidden utility's penalty side as this seed drew it from `config.utility` (evaluation and reports
        only)."""
        return draw_hidden_utility(self.config.utility, rng_for(self.seed, STREAM_UTILITY))

    @property
    def utility_weights(self) -> UtilityWeights:
        return self.hidden_utility.weights

    @property
    def canned_phrases(self) -> tuple[str, ...]:
        """The boilerplate this world's responses use and its hidden utility charges: canned openers, closers and
        hedges (what a phrase list learned from its feedback should find)."""
        return self.hidden_utility.boilerplate.phrases

    @cached_property
    def plan(self) -> SplitPlan:
        """Which intents, items and phrasings each split may use (hidden, like the facts)."""
        return plan_splits(self.config, rng_for(self.seed, STREAM_SPLITS))

    @cached_property
    def prompts(self) -> tuple[PromptSpec, ...]:
        return build_prompts(self.config, rng_for(self.seed, STREAM_PROMPTS), self.plan,
                             self.hidden_utility.ideal_slack)

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
        return true_utility(self.prompt(prompt_id), response, self.hidden_utility)

    def respond(self, spec: PromptSpec, style: ResponseStyle, rng: np.random.Generator) -> str:
        """A response of `style` to `spec`, its boilerplate from this world's phrases (see `compose_response`)."""
        return compose_response(spec, style, rng, self.hidden_utility.boilerplate)

    def reference_responses(self, per_prompt: int = 1, split: str = "train") -> list[ReferenceExample]:
        """SFT warm-start data: answers of varied quality, mostly decent, some sloppy or padded."""
        rng = rng_for(self.seed, STREAM_REFERENCES)
        examples = []
        for spec in self.split(split):
            for _ in range(per_prompt):
                style = draw_style(REFERENCE_STYLE_MIX, rng)
                response = self.respond(spec, STYLES[style], rng)
                examples.append(ReferenceExample(spec.prompt_id, spec.text, response, style))
        return examples

    def corpus(self, samples_per_prompt: int = 3) -> Iterator[str]:
        """Text a tokenizer should cover, from train only: its prompts, answers in every style, and the catalogue's
        style and unsafe sentences of the intents train asks."""
        rng = rng_for(self.seed, STREAM_CORPUS)
        yield SYSTEM_PROMPT
        yield from self.canned_phrases + FILLER_SENTENCES
        for topic in TOPICS:
            for intent in topic.intents:
                if intent.name not in self.plan.novel:
                    yield from intent.unsafe
        for spec in self.split("train"):
            yield spec.text
            for _ in range(samples_per_prompt):
                yield self.respond(spec, STYLES[str(rng.choice(list(STYLES)))], rng)
