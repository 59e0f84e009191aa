"""The world adapter: the one module outside the simulator's own drivers that reads `rlhf_ray.sim`.

It turns the synthetic world into what the engines take from any user: a `PromptSource`, reference answers
for SFT, a tokenizer corpus, shards for demos — and, simulation only, the world's oracle `Evaluator` (its hidden
utility) and the truth-labelled held-out pairs that measure a reward model. Engines never import the simulator;
a job that runs on the world builds these here and hands them over.

The world's train, validation and test splits are the engine's, disjoint by construction (no shared prompt text,
no shared (intent, item) pair with train). Validation and test hand out their seen-intent prompts, the ones a
policy trained on train can be measured on; the novel-intent slice (intents train never asks) is read apart,
through `WorldPromptSource.novel_intent`, and reported on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, Literal

from rlhf_ray.evaluation.answers import rubric_acceptance, user_acceptance
from rlhf_ray.inputs.evaluators import mean
from rlhf_ray.inputs.prompts import SPLITS, Prompt, SplitName
from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
from rlhf_ray.sim.evaluation import truth_pairs as _truth_pairs
from rlhf_ray.sim.shards import build_shard_rows

__all__ = ["ShardConfig", "WorldConfig", "WorldOracle", "WorldPromptSource", "corpus", "reference_examples",
           "shard_rows", "truth_pairs"]

AcceptanceModel = Literal["user_model", "rubric"]


def _world_split(name: SplitName) -> str:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {name!r}")
    return name


class _WorldBacked:
    """Builds its world lazily, so an adapter pickles small into a Ray Tune trial or a Ray task."""

    def __init__(self, config: WorldConfig, seed: int) -> None:
        self.config, self.seed = config, seed

    @cached_property
    def world(self) -> World:
        return World(self.config, self.seed)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "seed": self.seed}


class WorldPromptSource(_WorldBacked):
    """The world's prompts as a `PromptSource`."""

    def split(self, name: SplitName) -> Sequence[Prompt]:
        return tuple(Prompt(p.prompt_id, p.text) for p in self.world.split(_world_split(name)))

    def novel_intent(self, name: SplitName) -> Sequence[Prompt]:
        """The validation or test prompts that ask an intent train never asks (none in train)."""
        return tuple(Prompt(p.prompt_id, p.text) for p in self.world.split(_world_split(name), "novel_intent"))


class WorldOracle(_WorldBacked):
    """The world's hidden utility as an `Evaluator` (simulation only: it never reaches a learner)."""

    figure = "true_utility"

    def evaluate(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                 responses: Sequence[str]) -> dict[str, float]:
        return {self.figure: mean([self.world.utility(p, r).total for p, r in zip(prompt_ids, responses,
                                                                                  strict=True)])}

    def judge_answers(self, prompt_ids: Sequence[str], responses: Sequence[str],
                      model: AcceptanceModel = "user_model") -> dict[str, list[float] | list[int]]:
        """Per answer, for the offline gate: `accept` (probability a user takes it with no edit, by the world's
        user model or a rubric), `unsafe` (unsafe sentences) and `utility` (hidden)."""
        if len(prompt_ids) != len(responses):
            raise ValueError(f"prompt_ids and responses must have the same length; got {len(prompt_ids)} and "
                             f"{len(responses)}")
        if model not in ("user_model", "rubric"):
            raise ValueError(f"acceptance model must be 'user_model' or 'rubric'; got {model!r}")
        breakdowns = [self.world.utility(p, r) for p, r in zip(prompt_ids, responses, strict=True)]
        users = self.world.users
        thresholds = [u.satisfaction_threshold for u in users]
        temperatures = [u.temperature for u in users]
        accept = ([user_acceptance(b.total, thresholds, temperatures) for b in breakdowns] if model == "user_model"
                  else [rubric_acceptance(b) for b in breakdowns])
        return {"accept": accept, "unsafe": [b.safety_violations for b in breakdowns],
                "utility": [b.total for b in breakdowns]}


def reference_examples(config: WorldConfig, seed: int, split: SplitName, per_prompt: int) -> list[dict[str, str]]:
    """SFT data: the world's reference answers of one split, as {prompt_id, prompt, response} rows."""
    examples = World(config, seed).reference_responses(per_prompt, _world_split(split))
    return [{"prompt_id": e.prompt_id, "prompt": e.prompt, "response": e.response} for e in examples]


def truth_pairs(config: WorldConfig, seed: int, per_prompt: int,
                split: Literal["validation", "test"] = "validation") -> list[dict[str, Any]]:
    """Held-out answer pairs ordered by the hidden utility: ground truth for measuring a reward model or DPO
    (simulation only, never a training input). "validation" for what chooses (epochs, normalisation), "test" for
    what is reported once every choice is made."""
    if split not in ("validation", "test"):
        raise ValueError(f"truth pairs come from 'validation' or 'test'; got {split!r}")
    return _truth_pairs(World(config, seed), per_prompt, split=split)


def corpus(config: WorldConfig, seed: int, samples_per_prompt: int) -> Iterator[str]:
    """Text a tokenizer for the world should cover, from train only."""
    return World(config, seed).corpus(samples_per_prompt)


def shard_rows(config: WorldConfig, seed: int, shards: ShardConfig, signal_type: str, index: int,
               rows: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One shard's rows of a signal type as the simulator writes them, and its gold items (demos, tests)."""
    built, result = build_shard_rows(World(config, seed), shards, ShardSpec(signal_type, index, rows, "jsonl"))
    return built, result.gold
