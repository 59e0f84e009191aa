"""Rewards beyond one reward model: the specs of reward sources (a trained RM, a remote RM over HTTP, a Python
function, an LLM judge), their weighted combination, the judge-output parser and the judge spec strings that
`evaluate --judge` and `reward.sources` take. The sources that hold a model live in `rlhf_ray.rewards.sources`;
the Ray side (the scorer actor, `serve-rm`) in `actors/`."""

from rlhf_ray.rewards.combine import SourceFailedError, combine_scores, with_retries
from rlhf_ray.rewards.judge import JUDGE_RUBRIC, judge_prompt, parse_score
from rlhf_ray.rewards.spec import RewardSourceSpec, load_function, parse_judge_spec

__all__ = ["JUDGE_RUBRIC", "RewardSourceSpec", "SourceFailedError", "combine_scores", "judge_prompt",
           "load_function", "parse_judge_spec", "parse_score", "with_retries"]
