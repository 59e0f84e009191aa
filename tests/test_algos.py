"""Unit tests of rlhf_ray.algos: hand-computed cases (arithmetic in comments) and a few properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_ray.algos import (
    DPO_LOSSES,
    bradley_terry_loss,
    dpo_loss,
    expected_calibration_error,
    masked_mean,
    masked_sum,
    preference_accuracy,
    reliability_bins,
    response_mask_from_lengths,
    sequence_logprob,
    token_logprobs,
)


def softplus_neg(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x})."""
    return math.log1p(math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------------
# Bradley–Terry
# ------------------------------------------------------------------------------------------------------------

def test_bradley_terry_loss_hand_computed() -> None:
    # diffs r_c − r_r = 2 − 1 = 1, 0 − 0 = 0, 1 − 3 = −2
    # ℓ = log(1+e^−1) = 0.31326, log 2 = 0.69315, log(1+e^2) = 2.12693; mean = 3.13334 / 3 = 1.04445
    chosen, rejected = t(2.0, 0.0, 1.0), t(1.0, 0.0, 3.0)
    expected = (softplus_neg(1.0) + softplus_neg(0.0) + softplus_neg(-2.0)) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.044446, abs=1e-6)


def test_bradley_terry_loss_margin_and_weights() -> None:
    chosen, rejected = t(2.0, 0.0, 1.0), t(1.0, 0.0, 3.0)
    # scalar margin 0.5: x = 1 − 0.5, 0 − 0.5, −2 − 0.5 = 0.5, −0.5, −2.5
    expected = (softplus_neg(0.5) + softplus_neg(-0.5) + softplus_neg(-2.5)) / 3
    assert bradley_terry_loss(chosen, rejected, margin=0.5).item() == pytest.approx(expected, rel=1e-12)
    # per-pair margin [1, 0, 0]: x = 0, 0, −2
    expected = (softplus_neg(0.0) + softplus_neg(0.0) + softplus_neg(-2.0)) / 3
    assert bradley_terry_loss(chosen, rejected, margin=t(1.0, 0.0, 0.0)).item() == pytest.approx(expected)
    # weights [1, 0, 3]: (1·ℓ(1) + 0·ℓ(0) + 3·ℓ(−2)) / 4 = (0.313262 + 3·2.126928) / 4 = 6.694046 / 4 = 1.673511
    weights = t(1.0, 0.0, 3.0)
    expected = (softplus_neg(1.0) + 3 * softplus_neg(-2.0)) / 4
    assert bradley_terry_loss(chosen, rejected, weights=weights).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.673511, abs=1e-6)
    # all-zero weights: nothing to learn from, loss 0 (not nan)
    assert bradley_terry_loss(chosen, rejected, weights=torch.zeros(3, dtype=torch.float64)).item() == 0.0


def test_bradley_terry_loss_stable_for_huge_gaps() -> None:
    loss = bradley_terry_loss(t(-1000.0, 1000.0), t(0.0, 0.0))
    # ℓ(−1000) ≈ 1000, ℓ(1000) ≈ 0 → mean 500
    assert torch.isfinite(loss) and loss.item() == pytest.approx(500.0)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-30, 30, allow_nan=False),
    st.floats(-30, 30, allow_nan=False),
    st.floats(0.01, 10, allow_nan=False),
)
def test_bradley_terry_loss_nonnegative_and_decreasing(chosen: float, rejected: float, step: float) -> None:
    loss = bradley_terry_loss(t(chosen), t(rejected)).item()
    better = bradley_terry_loss(t(chosen + step), t(rejected)).item()
    assert loss >= 0.0 and better >= 0.0
    assert better <= loss
    # the derivative −σ(−x) is strictly negative, so it strictly decreases wherever float64 can tell
    if loss > 1e-12:
        assert better < loss


def test_preference_accuracy_counts_ties_half() -> None:
    # correct, wrong, tie, correct → (1 + 0 + 0.5 + 1) / 4 = 0.625
    acc = preference_accuracy(t(2.0, 0.0, 1.0, 5.0), t(1.0, 3.0, 1.0, -1.0))
    assert acc.item() == pytest.approx(0.625)
    assert preference_accuracy(torch.empty(0), torch.empty(0)).item() == 0.0


# ------------------------------------------------------------------------------------------------------------
# DPO family
# ------------------------------------------------------------------------------------------------------------

def _dpo(h: torch.Tensor, beta: float, **kwargs):
    """DPO with the whole margin h in the chosen policy log-prob (ref and rejected at 0)."""
    zeros = torch.zeros_like(h)
    return dpo_loss(h, zeros, zeros, zeros, beta, **kwargs)


def test_dpo_sigmoid_at_zero_margin_is_log2() -> None:
    # policy = reference ⇒ h = 0 ⇒ −log σ(0) = log 2 whatever β
    logps = t(-5.0, -7.5)
    for beta in (0.1, 1.0):
        out = dpo_loss(logps, logps - 1, logps, logps - 1, beta)
        assert out.loss.item() == pytest.approx(math.log(2.0))
        assert torch.equal(out.margins, torch.zeros(2, dtype=torch.float64))


def test_dpo_sigmoid_hand_computed_and_implicit_rewards() -> None:
    # π_c − ref_c = −4 − (−5) = 1, π_r − ref_r = −6 − (−5) = −1 ⇒ h = 2; β = 0.5 ⇒ βh = 1
    # ℓ = log(1 + e^−1) = 0.31326; rewards β·1 = 0.5, β·(−1) = −0.5, margin 1
    out = dpo_loss(t(-4.0), t(-6.0), t(-5.0), t(-5.0), beta=0.5)
    assert out.loss.item() == pytest.approx(softplus_neg(1.0))
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)
    assert out.margins.item() == pytest.approx(1.0)


def test_dpo_gradient_sign_and_detached_rewards() -> None:
    policy_chosen = t(-4.0, -3.0).requires_grad_()
    policy_rejected = t(-6.0, -2.0).requires_grad_()
    out = dpo_loss(policy_chosen, policy_rejected, t(-5.0, -3.0), t(-5.0, -3.0), beta=0.1)
    out.loss.backward()
    # raising log π(chosen) lowers the loss, raising log π(rejected) raises it
    assert (policy_chosen.grad < 0).all()
    assert (policy_rejected.grad > 0).all()
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert not out.margins.requires_grad


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_minimum_at_half_inverse_beta(beta: float) -> None:
    # ℓ(h) = (h − 1/(2β))²: β = 0.5 ⇒ target 1; at h = 0 the loss is 1² = 1
    target = 1.0 / (2.0 * beta)
    grid = torch.linspace(target - 3, target + 3, 601, dtype=torch.float64)  # step 0.01, contains target
    losses = torch.stack([_dpo(h.reshape(1), beta, loss_type="ipo").loss for h in grid])
    assert grid[losses.argmin()].item() == pytest.approx(target, abs=1e-9)
    assert losses.min().item() == pytest.approx(0.0, abs=1e-18)
    assert _dpo(t(0.0), 0.5, loss_type="ipo").loss.item() == pytest.approx(1.0)


def test_hinge_zero_beyond_margin() -> None:
    # β = 0.5: ℓ = max(0, 1 − 0.5 h); h = 0 → 1, h = 1 → 0.5, h = 2 → 0, h = 5 → 0, h = −2 → 2
    losses = [_dpo(t(h), 0.5, loss_type="hinge").loss.item() for h in (0.0, 1.0, 2.0, 5.0, -2.0)]
    assert losses == pytest.approx([1.0, 0.5, 0.0, 0.0, 2.0])
    h = t(3.0).requires_grad_()
    _dpo(h, 0.5, loss_type="hinge").loss.backward()
    assert h.grad.item() == 0.0  # no push once βh ≥ 1


def test_label_smoothing_half_is_symmetric() -> None:
    h = t(-3.0, -0.7, 0.0, 0.4, 2.5)
    for i in range(len(h)):
        plus = _dpo(h[i : i + 1], 0.3, label_smoothing=0.5).loss.item()
        minus = _dpo(-h[i : i + 1], 0.3, label_smoothing=0.5).loss.item()
        assert plus == pytest.approx(minus, rel=1e-12)
    # ε = 0.1, βh = 1: 0.9·log(1+e^−1) + 0.1·log(1+e^1) = 0.9·0.31326 + 0.1·1.31326 = 0.41326
    smoothed = _dpo(t(2.0), 0.5, label_smoothing=0.1).loss.item()
    assert smoothed == pytest.approx(0.9 * softplus_neg(1.0) + 0.1 * softplus_neg(-1.0))
    assert smoothed == pytest.approx(0.413262, abs=1e-6)


def test_dpo_weights() -> None:
    # β = 1, h = [0, 2]: ℓ = [log 2, log(1+e^−2)] = [0.693147, 0.126928]
    # weights [3, 1]: (3·0.693147 + 0.126928) / 4 = 2.206370 / 4 = 0.551592
    out = _dpo(t(0.0, 2.0), 1.0, weights=t(3.0, 1.0))
    assert out.loss.item() == pytest.approx((3 * math.log(2) + softplus_neg(2.0)) / 4)
    assert out.loss.item() == pytest.approx(0.551592, abs=1e-6)


def test_dpo_registry_and_bad_arguments() -> None:
    assert set(DPO_LOSSES) >= {"sigmoid", "ipo", "hinge"}
    with pytest.raises(ValueError, match=r"loss_type='kto_pair'.*hinge.*ipo.*sigmoid"):
        _dpo(t(1.0), 0.1, loss_type="kto_pair")
    with pytest.raises(ValueError, match="beta"):
        _dpo(t(1.0), 0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        _dpo(t(1.0), 0.1, label_smoothing=0.7)
    with pytest.raises(ValueError, match=r"label_smoothing=0.1.*'ipo'"):
        _dpo(t(1.0), 0.1, loss_type="ipo", label_smoothing=0.1)


# ------------------------------------------------------------------------------------------------------------
# Log-probs and masking
# ------------------------------------------------------------------------------------------------------------

def test_token_logprobs_matches_naive_loop_and_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    B, T, V = 3, 7, 11
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(0, V, (B, T), generator=gen)
    out = token_logprobs(logits, labels)
    assert out.shape == (B, T - 1)
    naive = torch.empty(B, T - 1, dtype=torch.float64)
    for b in range(B):
        for s in range(T - 1):
            z = logits[b, s]
            naive[b, s] = z[labels[b, s + 1]] - torch.log(torch.exp(z).sum())
    torch.testing.assert_close(out, naive)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="none")
    torch.testing.assert_close(out, -ce.reshape(B, T - 1))


def test_token_logprobs_low_precision_and_extreme_logits() -> None:
    logits = torch.tensor([[[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    labels = torch.tensor([[0, 1]])
    out = token_logprobs(logits, labels)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.item() == pytest.approx(-1e4, rel=1e-2)  # log p(token 1 | logits[0]) ≈ 0 − 1e4
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))


def test_sequence_logprob_excludes_prompt_and_padding() -> None:
    gen = torch.Generator().manual_seed(1)
    B, T, V = 2, 6, 5
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=gen)
    # row 0: prompt = tokens 0..1, response = tokens 2..4, token 5 padding (right-padded)
    # row 1: token 0 padding (left-padded), prompt = tokens 1..2, response = tokens 3..5
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
    mask = response_mask_from_lengths(torch.tensor([2, 2]), attention)
    assert mask.tolist() == [[False, False, True, True, True, False], [False, False, False, True, True, True]]
    per_token = token_logprobs(logits, labels)  # column s scores token s + 1
    # row 0: tokens 2,3,4 → columns 1,2,3; row 1: tokens 3,4,5 → columns 2,3,4
    expected = torch.stack([per_token[0, 1:4].sum(), per_token[1, 2:5].sum()])
    torch.testing.assert_close(sequence_logprob(logits, labels, mask), expected)
    # whatever the logits say at prompt/padding positions, the result does not move
    poisoned = logits.clone()
    poisoned[0, 0] = poisoned[0, 4:] = poisoned[1, :2] = float("nan")  # columns only for tokens 1, 5 / 1, 2
    torch.testing.assert_close(sequence_logprob(poisoned, labels, mask), expected)
    with pytest.raises(ValueError, match="response_mask"):
        sequence_logprob(logits, labels, mask[:, 1:])


def test_response_mask_from_lengths_edge_cases() -> None:
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # prompt covers everything (no response) / prompt length 0 (everything real is response)
    mask = response_mask_from_lengths(torch.tensor([3, 0]), attention)
    assert mask.tolist() == [[False] * 4, [True] * 4]
    with pytest.raises(ValueError, match="prompt_lengths"):
        response_mask_from_lengths(torch.tensor([1, 2, 3]), attention)


def test_masked_sum_and_mean() -> None:
    values = t(1.0, 2.0, 3.0, 4.0).reshape(2, 2)
    mask = torch.tensor([[1, 0], [1, 1]])
    # sums per row: [1, 3 + 4] = [1, 7]; mean over all = (1 + 3 + 4) / 3 = 8/3; per row: [1, 3.5]
    assert masked_sum(values, mask).tolist() == [1.0, 7.0]
    assert masked_mean(values, mask).item() == pytest.approx(8 / 3)
    assert masked_mean(values, mask.bool(), dim=-1).tolist() == [1.0, 3.5]
    # masked-out −inf does not leak
    values_inf = t(float("-inf"), 2.0)
    assert masked_sum(values_inf, torch.tensor([0, 1])).item() == 2.0


def test_masked_mean_empty_mask_is_zero() -> None:
    values = t(1.0, 2.0, 3.0).reshape(1, 3)
    empty = torch.zeros(1, 3, dtype=torch.bool)
    assert masked_mean(values, empty).item() == 0.0
    assert masked_mean(values, empty, dim=-1).tolist() == [0.0]
    assert not torch.isnan(masked_mean(values, empty))


# ------------------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------------------

def test_ece_hand_computed() -> None:
    # bins=2: [0, 0.5) holds p = 0.2, 0.4 with y = 0, 1 → conf 0.3, acc 0.5, gap 0.2
    #         [0.5, 1] holds p = 0.9, 1.0 with y = 1, 1 → conf 0.95, acc 1, gap 0.05
    # ECE = 2/4·0.2 + 2/4·0.05 = 0.125
    rb = reliability_bins([0.2, 0.4, 0.9, 1.0], [0, 1, 1, 1], bins=2)
    assert rb.count.tolist() == [2, 2]
    np.testing.assert_allclose(rb.confidence, [0.3, 0.95])
    np.testing.assert_allclose(rb.accuracy, [0.5, 1.0])
    assert expected_calibration_error([0.2, 0.4, 0.9, 1.0], [0, 1, 1, 1], bins=2) == pytest.approx(0.125)


def test_ece_calibrated_vs_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50_000)
    calibrated = rng.uniform(size=p.size) < p  # y ~ Bernoulli(p)
    assert expected_calibration_error(p, calibrated) < 0.02
    # overconfident: forecasts pushed to 0.95 / 0.05 while the truth is only 0.6 / 0.4 → gap 0.35
    truth = rng.uniform(size=p.size) < 0.5
    confident = np.where(truth, 0.95, 0.05)
    outcome = np.where(rng.uniform(size=p.size) < 0.6, truth, ~truth)
    assert expected_calibration_error(confident, outcome) > 0.2
    # torch input gives the same number as numpy input
    assert expected_calibration_error(torch.from_numpy(p).float(), torch.from_numpy(calibrated)) == pytest.approx(
        expected_calibration_error(p.astype(np.float32), calibrated), abs=1e-9
    )


def test_reliability_bins_empty_bins_and_bad_input() -> None:
    rb = reliability_bins(torch.tensor([0.05, 0.95]), torch.tensor([0.0, 1.0]), bins=4)
    assert rb.count.tolist() == [1, 0, 0, 1]
    assert np.isnan(rb.confidence[1]) and np.isnan(rb.accuracy[2])
    assert rb.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([0.5, 1.5], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error([0.5, 0.5], [0, 1, 1])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error([0.5], [1], bins=0)
