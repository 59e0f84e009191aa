"""`rlhf-ray ppo`: RLHF with separate Ray actors — rollout workers, reward scorer, reference model, critic and
a policy learner group — driven by one controller loop (`actors.ppo_controller`).

The estimator is selectable: `gae` (PPO with a critic), `grpo`, `rloo`, `reinforce_pp` (critic-free). The
training reward is the reward model (or a configured rule reward) minus rule penalties; the simulated world's
hidden utility is computed for evaluation only and never reaches the learner.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from actors.ppo_config import PPOEngineConfig
from jobs.common import add_config_arguments, add_prompt_file_arguments, prompt_file_flags, resolve_config
from rlhf_ray.inputs import Evaluator, FilePromptSource, PromptFilesSection, PromptSource
from rlhf_ray.inputs.world import WorldConfig, WorldOracle, WorldPromptSource
from rlhf_ray.models import prepare_checkpoint
from rlhf_ray.telemetry import MetricsSink
from rlhf_ray.telemetry.sink import sink_for

if TYPE_CHECKING:
    from actors.ppo_controller import PPOController

NAME = "ppo"
HELP = "PPO / GRPO / RLOO / REINFORCE++ on separate Ray actors (rollout, reward, reference, critic, learner)"


class PPOConfig(PPOEngineConfig):
    """The job's config: the engine's settings plus where its prompts come from. Without `prompts` the
    synthetic world (`world`) gives the prompts and judges held-out answers with its hidden utility."""

    world: WorldConfig = WorldConfig()
    prompts: PromptFilesSection | None = Field(None, description="a user's prompt files per split (JSONL/Parquet "
                                               "rows with `prompt`); null: the synthetic world's prompts")

    @model_validator(mode="after")
    def _evaluated_split_has_prompts(self) -> PPOConfig:
        if self.prompts is not None and getattr(self.prompts, self.eval_split) is None:
            raise ValueError(f"eval_split={self.eval_split!r} needs prompts.{self.eval_split} (a prompt file): the "
                             f"engine evaluates on it")
        return self


def inputs_for(config: PPOConfig) -> tuple[PromptSource, list[Evaluator]]:
    """The engine's prompts and quality judges: the user's prompt files (judged by `judge_model_path`, if any,
    inside the engine), or the world's prompts with its oracle."""
    if config.prompts is not None:
        return FilePromptSource(config.prompts), []
    return WorldPromptSource(config.world, config.seed), [WorldOracle(config.world, config.seed)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="starting policy directory, e.g. an SFT model (sets model_path)")
    parser.add_argument("--reward-model", dest="reward_model", help="reward model directory (sets reward.model_path)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_prompt_file_arguments(parser, "prompts", "evaluated during training, what sweeps and early stopping "
                              "choose on", "read once for the report")
    parser.add_argument("--resume", action="store_const", const="true",
                        help="continue from the last checkpoint in the output directory")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"model": "model_path", "reward_model": "reward.model_path", "out": "output_dir", "resume": "resume",
             **prompt_file_flags("prompts")}
    return run(resolve_config(PPOConfig, args, flags))


def controller_for(config: PPOConfig, sink: MetricsSink, **options: Any) -> PPOController:
    """The engine with this config's prompts and evaluators; `options` go to `PPOController` (e.g. a trial's
    placement group and report callback)."""
    from actors.ppo_controller import PPOController

    return PPOController(with_chat_template(config), sink, *inputs_for(config), **options)


def with_chat_template(config: PPOConfig) -> PPOConfig:
    """`config` with its policy and reference checkpoints carrying `model.chat_template` (`prepare_checkpoint`),
    so every actor renders prompts alike; unchanged when no template is configured."""
    if config.model.chat_template is None or config.model_path is None:
        return config
    template, out = config.model.chat_template, config.output_dir
    policy = prepare_checkpoint(config.model_path, template, out)
    reference = config.reference_path and prepare_checkpoint(config.reference_path, template, f"{out}/reference")
    return config.model_copy(update={"model_path": policy, "reference_path": reference})


def run(config: PPOConfig) -> dict[str, Any]:
    sink = sink_for(NAME, config)
    controller = controller_for(config, sink)
    try:
        figures = controller.train()
    finally:
        controller.shutdown()
    return sink.close(figures)
