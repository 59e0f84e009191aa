"""The sweep's config: the PPO settings every trial starts from, the search space, the scheduler, and the
reward-hacking flags that rule a trial out; and how one trial's PPO config is made from them.

Read by `jobs.sweep` (which runs the trials) and `jobs.sweep_report` (which judges them and writes the chosen
settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from actors.ppo_resources import groups_without_resources
from jobs.ppo import PPOConfig
from rlhf_ray.config import ConfigError, JobConfig, StrictModel, apply_overrides
from rlhf_ray.evaluation.hacking import FLAGS, HackingThresholds

# Keys a trial must not change: where it writes, how the job reaches Ray / logs / records lineage, and the split
# and judge the trials are compared on.
FIXED_KEYS = ("output_dir", "resume", "ray", "wandb", "lineage", "eval_split", "judge_model_path")
# The split trials are judged on, the one the chosen trial is reported on, and the engine's figure of each judge
# (the judge RM's, the world oracle's).
CHOICE_SPLIT, REPORT_SPLIT = "validation", "test"
QUALITY = {"judge_rm": "judge_reward", "oracle": "true_utility"}


class ParamSpec(StrictModel):
    """One searched setting: exactly one of a grid (every value, crossed with the other grids), a random
    choice, or a uniform / log-uniform range sampled `num_samples` times."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [name for name in ("grid", "choice", "uniform", "loguniform") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform; got {given or 'none'}")
        values = self.grid if self.grid is not None else self.choice
        if values is not None and not values:
            raise ValueError(f"{given[0]} needs at least one value")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high; got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0; got {list(self.loguniform)}")
        return self

    def examples(self) -> list[Any]:
        """Values a trial may get, for validating the key before anything runs."""
        return list(self.grid or self.choice or self.uniform or self.loguniform or [])

    def domain(self) -> Any:
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        return tune.loguniform(*self.loguniform)  # type: ignore[misc]


class SchedulerSection(StrictModel):
    kind: Literal["asha", "fifo"] = Field("asha", description="asha stops weak trials early; fifo runs all")
    grace_period: int = Field(10, ge=1, description="iterations before ASHA may stop a trial (a multiple of "
                              "ppo.eval_every, so it compares fresh held-out figures)")
    reduction_factor: int = Field(2, ge=2, description="ASHA keeps 1/reduction_factor of trials at each rung")


class HackingSection(StrictModel):
    """Reward-hacking flags per trial (`rlhf_ray.evaluation.hacking`) and which of them rule a trial out."""

    reward_rise: float = 0.1
    quality_gain_floor: float = 0.0
    length_ratio: float = Field(1.3, gt=0)
    canned_rate_rise: float = 0.1
    reward_length_corr: float = Field(0.5, ge=-1, le=1)
    disqualify: list[Literal[FLAGS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["reward_up_quality_down", "length_drift", "canned_phrases_up"])

    def thresholds(self) -> HackingThresholds:
        return HackingThresholds(**self.model_dump(exclude={"disqualify"}))


class SweepConfig(JobConfig):
    output_dir: str = "runs/sweep"
    name: str = Field("ppo-sweep", pattern=r"^[A-Za-z0-9_.-]+$", description="the Tune experiment's name")
    ppo: PPOConfig = Field(PPOConfig(), description="the PPO settings every trial starts from")
    search_space: dict[str, ParamSpec] = Field(
        default_factory=lambda: {"kl.coef": ParamSpec(grid=[0.02, 0.1]),
                                 "reward.verbosity_coef": ParamSpec(grid=[0.0, 1.0])},
        description="dotted PPO keys → values to search")
    num_samples: int = Field(1, ge=1, description="repeats of the grid (random choices drawn anew each time)")
    max_concurrent_trials: int = Field(1, ge=1)
    trial_cpus: float = Field(0.1, gt=0, description="CPUs of each trial's driver (the PPO controller loop)")
    judge_by: Literal["judge_rm", "oracle"] = Field(
        "judge_rm", description="who judges the trials on validation: the judge reward model (ppo.judge_model_path, "
        "trained on the judge set) or the world's hidden utility (oracle: simulation studies only)")
    scheduler: SchedulerSection = SchedulerSection()
    hacking: HackingSection = HackingSection()
    max_failures: int = Field(0, ge=0, description="Tune retries of a failed trial")
    resume: bool = Field(False, description="continue the interrupted sweep in output_dir")

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        if not self.search_space:
            raise ValueError("search_space needs at least one key")
        base = self.ppo.model_dump(mode="json")
        for key, spec in self.search_space.items():
            if key.split(".")[0] in FIXED_KEYS:
                raise ValueError(f"search_space.{key}: a trial cannot change {key.split('.')[0]!r} "
                                 f"(fixed keys: {list(FIXED_KEYS)})")
            for value in spec.examples():
                try:
                    PPOConfig.model_validate(with_params(base, {key: value}))
                except (ValueError, ConfigError) as error:
                    raise ValueError(f"search_space.{key}={value!r} is not a valid PPO setting: {error}") from None
        if self.ppo.eval_split != CHOICE_SPLIT:
            raise ValueError(f"ppo.eval_split={self.ppo.eval_split!r}: a sweep chooses on {CHOICE_SPLIT!r} (the test "
                             "split is read once, after the choice)")
        if self.judge_by == "judge_rm" and not self.ppo.judge_model_path:
            raise ValueError("judge_by='judge_rm' needs ppo.judge_model_path (--judge-model DIR: a reward model "
                             "trained on the judge set, not the policy's reward model); or judge_by: oracle in a "
                             "simulation study")
        if self.judge_by == "oracle" and self.ppo.prompts is not None:
            raise ValueError("judge_by='oracle' reads the world's hidden utility, but ppo.prompts names prompt files: "
                             "the oracle judges only the world's prompts; use judge_by: judge_rm")
        if self.scheduler.kind == "asha":
            if self.scheduler.grace_period % self.ppo.eval_every:
                raise ValueError(f"scheduler.grace_period={self.scheduler.grace_period} must be a multiple of "
                                 f"ppo.eval_every={self.ppo.eval_every}: ASHA would compare stale held-out figures")
            if self.scheduler.grace_period > self.ppo.iterations:
                raise ValueError(f"scheduler.grace_period={self.scheduler.grace_period} exceeds ppo.iterations="
                                 f"{self.ppo.iterations}")
        empty = groups_without_resources(self.ppo)
        if empty:
            raise ValueError(f"every PPO actor needs num_cpus or num_gpus > 0 to be placed in a trial; "
                             f"{empty[0]} has neither")
        return self

    @property
    def quality(self) -> str:
        """The validation figure the trials are judged on (`eval/<quality>` in the PPO engine's reports)."""
        return QUALITY[self.judge_by]

    @property
    def metric(self) -> str:
        return f"eval/{self.quality}"


def with_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The PPO settings `base` (a JSON dump) with dotted keys → values applied, as a config override would."""
    return apply_overrides(base, [f"{key}={json.dumps(value)}" for key, value in params.items()])


def trial_config(base: dict[str, Any], params: dict[str, Any], trial_dir: Path) -> PPOConfig:
    """The PPO config of one trial: the base plus the trial's settings, writing under its own directory and
    resuming from its own checkpoint when Tune restarts it."""
    resume = (trial_dir / "checkpoints" / "latest").exists()
    data = with_params(base, params)
    data.update(output_dir=str(trial_dir), resume=resume, wandb={"mode": "disabled"})
    return PPOConfig.model_validate(data)
