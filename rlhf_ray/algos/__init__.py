"""Algorithms as small pure functions over tensors: log-probs and masking, preference losses, calibration.

Each function carries its equation in the docstring; trainers call these and never re-derive a loss inline.
"""

from rlhf_ray.algos.calibration import ReliabilityBins, expected_calibration_error, reliability_bins
from rlhf_ray.algos.logprobs import (
    masked_mean,
    masked_sum,
    response_mask_from_lengths,
    sequence_logprob,
    token_logprobs,
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
    "DPO_LOSSES",
    "DPOLossFn",
    "DPOOutput",
    "ReliabilityBins",
    "bradley_terry_loss",
    "dpo_hinge_loss",
    "dpo_ipo_loss",
    "dpo_loss",
    "dpo_sigmoid_loss",
    "expected_calibration_error",
    "masked_mean",
    "masked_sum",
    "preference_accuracy",
    "reliability_bins",
    "response_mask_from_lengths",
    "sequence_logprob",
    "sft_loss",
    "token_logprobs",
]
