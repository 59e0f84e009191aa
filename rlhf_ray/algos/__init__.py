"""Algorithms as small pure functions over tensors: log-probs and masking, preference losses, calibration, RL
(advantages, policy/value losses, KL).

Each function carries its equation in the docstring; trainers call these and never re-derive a loss inline.
"""

from rlhf_ray.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    GRPO_SCALES,
    AdvantageEstimator,
    AdvantageSettings,
    broadcast_to_tokens,
    compute_advantages,
    discounted_returns,
    gae,
    grpo_advantages,
    masked_whiten,
    needs_critic,
    reinforce_pp_advantages,
    rloo_advantages,
    token_level_rewards,
)
from rlhf_ray.algos.calibration import ReliabilityBins, expected_calibration_error, reliability_bins
from rlhf_ray.algos.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLEstimatorFn,
    kl_penalty,
)
from rlhf_ray.algos.logprobs import (
    logprob_parity,
    masked_mean,
    masked_sum,
    response_mask_from_lengths,
    sequence_logprob,
    token_logprobs,
)
from rlhf_ray.algos.policy_loss import (
    POLICY_LOSSES,
    PolicyLossFn,
    PolicyLossOutput,
    decoupled_ppo_loss,
    entropy_from_logits,
    ppo_policy_loss,
    token_entropy,
    value_loss,
)
from rlhf_ray.algos.preference import (
    DPO_LOSSES,
    DPOLossFn,
    DPOOutput,
    bradley_terry_loss,
    dpo_hinge_loss,
    dpo_ipo_loss,
    dpo_loss,
    dpo_sigmoid_loss,
    preference_accuracy,
)
from rlhf_ray.algos.sft import sft_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "DPO_LOSSES",
    "GRPO_SCALES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "AdaptiveKLController",
    "AdvantageEstimator",
    "AdvantageSettings",
    "DPOLossFn",
    "DPOOutput",
    "FixedKLController",
    "KLEstimatorFn",
    "PolicyLossFn",
    "PolicyLossOutput",
    "ReliabilityBins",
    "bradley_terry_loss",
    "broadcast_to_tokens",
    "compute_advantages",
    "decoupled_ppo_loss",
    "discounted_returns",
    "dpo_hinge_loss",
    "dpo_ipo_loss",
    "dpo_loss",
    "dpo_sigmoid_loss",
    "entropy_from_logits",
    "expected_calibration_error",
    "gae",
    "grpo_advantages",
    "kl_penalty",
    "logprob_parity",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "needs_critic",
    "ppo_policy_loss",
    "preference_accuracy",
    "reinforce_pp_advantages",
    "reliability_bins",
    "response_mask_from_lengths",
    "rloo_advantages",
    "sequence_logprob",
    "sft_loss",
    "token_entropy",
    "token_level_rewards",
    "token_logprobs",
    "value_loss",
]
