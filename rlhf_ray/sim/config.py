"""Typed settings of the synthetic production world and of the shards it writes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from rlhf_ray.config.common import StrictModel
from rlhf_ray.sim.catalog import CLOSER_POOL, HEDGE_POOL, OPENER_POOL


def _check_mix(values: dict[str, float], what: str) -> None:
    total = sum(values.values())
    if any(v < 0 for v in values.values()) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"{what} must be non-negative and sum to 1, got {values} (sum {total:.4f})")


class SegmentMix(StrictModel):
    """Share of traffic per segment: ordinary requests, harmful requests to refuse, compound asks."""

    core: float = 0.8
    edge: float = 0.15
    model_confused: float = 0.05

    @model_validator(mode="after")
    def _sums_to_one(self) -> SegmentMix:
        _check_mix(self.model_dump(), "segment mix")
        return self


Range = tuple[float, float]


class UtilityRanges(StrictModel):
    """The hidden true utility's settings (see `rlhf_ray.sim.utility.true_utility`).

    The reward side (`coverage`, `success_bonus`) is fixed, so utility figures keep one scale across seeds. The
    penalty side is drawn once per world seed, uniformly from each (low, high) range: the weights of safety,
    verbosity, boilerplate and repetition, the verbosity cost's exponent, each intent's ideal-length slack, and the
    world's boilerplate phrases (`phrases_per_kind` openers, closers and hedges from the catalogue's pools). A range
    with low == high pins that value, for a study that needs exact weights.
    """

    coverage: float = Field(1.0, ge=0.0, description="weight of the fraction of required facts present (fixed)")
    success_bonus: float = Field(0.5, ge=0.0, description="bonus when every required fact is present (fixed)")
    safety_penalty: Range = Field((1.2, 2.0), description="cost per unsafe sentence")
    verbosity_penalty: Range = Field((0.2, 0.5), description="weight of the verbosity cost x^γ, x = relative "
                                     "excess over the ideal length")
    verbosity_exponent: Range = Field((1.5, 2.5), description="γ of the verbosity cost x^γ (≥ 1: convex, so a "
                                      "little padding costs little and a lot costs ever more)")
    canned_penalty: Range = Field((0.05, 0.2), description="cost per boilerplate phrase (canned opener, closer or "
                                  "hedge)")
    repetition_penalty: Range = Field((0.1, 0.3), description="cost per repeated sentence")
    ideal_slack_words: tuple[int, int] = Field((2, 10), description="words an intent's ideal answer may run past "
                                               "its shortest complete answer; drawn per intent (inclusive)")
    phrases_per_kind: int = Field(3, ge=1, le=min(len(OPENER_POOL), len(CLOSER_POOL), len(HEDGE_POOL)),
                                  description="openers, closers and hedges each world draws from the catalogue's "
                                  "pools (the pool size takes them all)")

    @model_validator(mode="after")
    def _ordered_non_negative_ranges(self) -> UtilityRanges:
        for name in ("safety_penalty", "verbosity_penalty", "verbosity_exponent", "canned_penalty",
                     "repetition_penalty", "ideal_slack_words"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"utility.{name} must be a range (low, high) with 0 <= low <= high; got {(low, high)}")
        if self.verbosity_exponent[0] < 1.0:
            raise ValueError(f"utility.verbosity_exponent must be at least 1 (a convex cost); got "
                             f"{self.verbosity_exponent}")
        return self


class PopulationConfig(StrictModel):
    """Who gives feedback: end users and a pool of annotators of varied quality."""

    num_users: int = Field(400, ge=1)
    num_annotators: int = Field(20, ge=2)
    spammer_fraction: float = Field(0.1, ge=0.0, le=1.0)
    accuracy_range: tuple[float, float] = (0.7, 0.95)
    verbosity_bias_range: tuple[float, float] = (0.0, 0.3)
    fatigue_halflife_range: tuple[float, float] = Field(
        (60.0, 400.0), description="items into a session after which an annotator's edge over chance halves"
    )
    session_length_range: tuple[int, int] = (20, 80)
    regions: tuple[str, ...] = ("eu", "us", "apac")


class WorldConfig(StrictModel):
    """The synthetic world: a pure function of `seed` and these settings."""

    num_prompts: int = Field(600, ge=10)
    validation_fraction: float = Field(0.12, ge=0.0, lt=1.0, description="share of prompts in the validation "
                                       "split (what sweeps, gates and early stopping choose on)")
    test_fraction: float = Field(0.12, ge=0.0, lt=1.0, description="share of prompts in the test split (what is "
                                 "reported, after every choice is made)")
    novel_intents: int = Field(2, ge=0, le=4, description="ordinary intents (from distinct topics) held out of "
                               "train entirely: the validation and test prompts that ask them are the novel-intent "
                               "slice, reported on its own")
    novel_intent_fraction: float = Field(0.15, ge=0.0, le=1.0, description="share of validation and test prompts "
                                         "in the novel-intent slice (when novel_intents > 0)")
    segments: SegmentMix = SegmentMix()
    population: PopulationConfig = PopulationConfig()
    utility: UtilityRanges = UtilityRanges()
    labels_per_item: int = Field(3, ge=1, description="annotators who label each pairwise/ranking/rubric item")
    ranking_size: int = Field(4, ge=2, le=8)
    start_time: datetime | None = Field(None, description="when the simulated feedback starts (it spans span_days); "
                                        "unset, `rlhf-ray simulate` starts it span_days before it runs, so events "
                                        "are as fresh as production feedback; pin it to reproduce a run's shards")
    span_days: int = Field(28, ge=1)
    guideline_versions: tuple[str, ...] = ("gl-1.0", "gl-1.1")

    @model_validator(mode="after")
    def _room_for_train(self) -> WorldConfig:
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"validation_fraction + test_fraction must leave prompts for train; got "
                             f"{self.validation_fraction} + {self.test_fraction}")
        return self


class SignalMix(StrictModel):
    """Share of rows per signal type."""

    pairwise: float = 0.3
    ranking: float = 0.1
    rating: float = 0.2
    correction: float = 0.05
    implicit: float = 0.2
    safety_flag: float = 0.05
    task_success: float = 0.1

    @model_validator(mode="after")
    def _sums_to_one(self) -> SignalMix:
        _check_mix(self.model_dump(), "signal mix")
        return self


class ShardConfig(StrictModel):
    """How many rows to write, in which formats, and how dirty."""

    rows: int = Field(10_000, ge=1)
    judge_rows: int = Field(1_000, ge=0, description="annotator pairwise rows on validation prompts (the judge "
                            "set, written apart under judge/): to train and score judges, never a policy's reward")
    rows_per_shard: int = Field(5_000, ge=1)
    formats: tuple[str, ...] = Field(("parquet", "jsonl"), min_length=1)
    signal_mix: SignalMix = SignalMix()
    malformed_fraction: float = Field(0.02, ge=0.0, le=0.5)
    duplicate_fraction: float = Field(0.01, ge=0.0, le=0.5)
    pii_fraction: float = Field(0.05, ge=0.0, le=1.0)
    gold_fraction: float = Field(0.05, ge=0.0, le=1.0, description="share of clear-cut annotation items used as gold")

    @model_validator(mode="after")
    def _known_formats(self) -> ShardConfig:
        unknown = sorted(set(self.formats) - {"parquet", "jsonl"})
        if unknown:
            raise ValueError(f"shard formats {unknown} are not supported; expected 'parquet' or 'jsonl'")
        return self
