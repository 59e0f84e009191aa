"""What a training or evaluation run is given from outside: prompts by split, and evaluators of answers.

The PPO engine, the sweep and the gate read prompts through a `PromptSource` and judge answers through
`Evaluator`s, so the same engine runs on a user's prompt files with a reward-model judge, or on the synthetic
world with its oracle (`rlhf_ray.inputs.world`, the one module that adapts the simulator).
"""

from rlhf_ray.inputs.evaluators import Evaluator, mean_figures
from rlhf_ray.inputs.prompts import SPLITS, FilePromptSource, Prompt, PromptFilesSection, PromptSource, SplitName

__all__ = [
    "SPLITS",
    "Evaluator",
    "FilePromptSource",
    "Prompt",
    "PromptFilesSection",
    "PromptSource",
    "SplitName",
    "mean_figures",
]
