"""Unit tests of the RL maths in rlhf_ray.algos (kl, advantages, policy_loss): hand-computed cases with the
arithmetic in comments, padding invariance, gradients, and argument validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rlhf_ray.algos import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    AdaptiveKLController,
    AdvantageSettings,
    FixedKLController,
    broadcast_to_tokens,
    compute_advantages,
    discounted_returns,
    entropy_from_logits,
    gae,
    grpo_advantages,
    kl_penalty,
    masked_whiten,
    needs_critic,
    ppo_policy_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    token_entropy,
    token_level_rewards,
    value_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def rows(*values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor | list | float, atol: float = 1e-9) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-7)


# ------------------------------------------------------------------------------------------------------------
# KL estimators
# ------------------------------------------------------------------------------------------------------------


def test_kl_estimators_hand_computed():
    logp, ref = t(-1.0, -2.0), t(-1.5, -1.0)  # log r = [0.5, −1]
    close(kl_penalty(logp, ref, "k1"), [0.5, -1.0])
    close(kl_penalty(logp, ref, "k2"), [0.125, 0.5])  # ½·0.25, ½·1
    # k3 = e^{−log r} − 1 + log r: e^{−0.5} − 0.5 = 0.1065306597;  e^{1} − 2 = 0.7182818285
    close(kl_penalty(logp, ref, "k3"), [math.exp(-0.5) - 0.5, math.e - 2.0])
    assert torch.equal(kl_penalty(logp, ref), kl_penalty(logp, ref, "k1"))  # default kind
    assert sorted(KL_ESTIMATORS) == ["k1", "k2", "k3"]


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    # Over a full categorical distribution, E_π[k1] = E_π[k3] = KL(π ‖ π_ref) exactly (E_π[π_ref/π] = 1).
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    exact = (p * (p / q).log()).sum()  # 0.5 ln 2.5 + 0.3 ln 1.5 + 0.2 ln(1/3) = 0.3575
    for kind in ("k1", "k3"):
        close((p * kl_penalty(p.log(), q.log(), kind)).sum(), exact)
    # k2 and k3 are ≥ 0 pointwise; k1 is not.
    assert (kl_penalty(p.log(), q.log(), "k2") >= 0).all() and (kl_penalty(p.log(), q.log(), "k3") >= 0).all()
    assert (kl_penalty(p.log(), q.log(), "k1") < 0).any()


def test_kl_penalty_mask_selects_padding_away():
    logp = rows([-1.0, float("-inf")])
    ref = rows([-1.5, -1.0])
    mask = torch.tensor([[1, 0]])
    out = kl_penalty(logp, ref, "k3", mask=mask)
    close(out, rows([math.exp(-0.5) - 0.5, 0.0]))


def test_kl_penalty_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind='k4'"):
        kl_penalty(t(0.0), t(0.0), "k4")
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl_penalty(t(0.0, 1.0), t(0.0), "k1")


# ------------------------------------------------------------------------------------------------------------
# KL controllers
# ------------------------------------------------------------------------------------------------------------


def test_adaptive_kl_controller_moves_towards_target_clipped_at_20_percent():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # KL 9 > 6: e = 9/6 − 1 = 0.5 → clipped to 0.2; mult = 1 + 0.2·256/10000 = 1.00512
    assert ctl.update(9.0, n_steps=256) == pytest.approx(0.1 * 1.00512)
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    # KL 3 < 6: e = −0.5 → −0.2; mult = 1 − 0.00512
    assert ctl.update(torch.tensor(3.0), n_steps=256) == pytest.approx(0.1 * 0.99488)
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    # KL 6.6: e = 0.1 (inside the clip); mult = 1 + 0.1·256/10000 = 1.00256
    assert ctl.update(6.6, n_steps=256) == pytest.approx(0.1 * 1.00256)
    ctl = AdaptiveKLController(0.1, 6.0, 10_000)
    assert ctl.update(6.0, n_steps=256) == pytest.approx(0.1)  # on target: no change
    # horizon = n_steps: one update is a full ±20 % at most, however far the KL is.
    up, down = AdaptiveKLController(1.0, 1.0, 1), AdaptiveKLController(1.0, 1.0, 1)
    assert up.update(1000.0, 1) == pytest.approx(1.2)
    assert down.update(0.0, 1) == pytest.approx(0.8)
    # factor floored at 0: β never goes negative even when n_steps ≫ horizon
    assert AdaptiveKLController(1.0, 1.0, 1).update(0.0, 10) == 0.0


def test_kl_controllers_state_round_trip_and_fixed_never_moves():
    ctl = AdaptiveKLController(0.2, 4.0, 1000)
    ctl.update(8.0, 100)  # 0.2 · 1.02 = 0.204
    state = ctl.state_dict()
    restored = AdaptiveKLController(1.0, 1.0, 1)
    restored.load_state_dict(state)
    assert (restored.value, restored.target, restored.horizon) == (pytest.approx(0.204), 4.0, 1000.0)
    assert restored.update(8.0, 100) == ctl.update(8.0, 100)

    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 1000) == 0.05 and fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
    with pytest.raises(ValueError, match="kind='adaptive'"):
        restored.load_state_dict(fixed.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        restored.load_state_dict({"kind": "adaptive", "value": 1.0})


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: AdaptiveKLController(0.1, 0.0, 10), "target"),
        (lambda: AdaptiveKLController(0.1, 1.0, -5), "horizon"),
        (lambda: AdaptiveKLController(-0.1, 1.0, 10), "init_kl_coef"),
        (lambda: AdaptiveKLController(0.1, 1.0, 10).update(float("nan"), 1), "current_kl"),
        (lambda: AdaptiveKLController(0.1, 1.0, 10).update(1.0, -1), "n_steps"),
        (lambda: FixedKLController(-1.0), "value"),
        (lambda: FixedKLController(1.0).update(1.0, 1.5), "n_steps"),
    ],
)
def test_kl_controllers_reject_bad_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ------------------------------------------------------------------------------------------------------------
# Whitening, token rewards, broadcasting
# ------------------------------------------------------------------------------------------------------------


def test_masked_whiten_hand_computed_and_zero_outside_mask():
    values = rows([1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 100.0, float("nan")])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # real entries 1..5: μ = 3, σ² = (4 + 1 + 0 + 1 + 4)/5 = 2
    std = math.sqrt(2.0 + 1e-8)
    out = masked_whiten(values, mask)
    close(out, rows([-2 / std, -1 / std, 0.0, 0.0], [1 / std, 2 / std, 0.0, 0.0]))
    real = out[mask.bool()]
    close(real.mean(), 0.0, atol=1e-12)
    close(real.var(unbiased=False), 1.0, atol=1e-7)
    # shift_mean=False keeps the mean: (x − μ)/σ + μ
    kept_mean = rows([3 - 2 / std, 3 - 1 / std, 3, 0], [3 + 1 / std, 3 + 2 / std, 0, 0])
    close(masked_whiten(values, mask, shift_mean=False), kept_mean)
    assert values[0, 3] == 100.0  # input untouched
    close(masked_whiten(values, torch.zeros_like(mask)), torch.zeros(2, 4, dtype=torch.float64))


def test_token_level_rewards_kl_everywhere_score_at_last_real_token():
    scores = t(1.0, 2.0, 3.0, 4.0)
    kl = rows([0.1, 0.2, 0.3], [0.5, 9.0, float("inf")], [0.2, 0.4, 0.6], [1.0, 1.0, 1.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    out = token_level_rewards(scores, kl, mask, kl_coef=0.5)
    expected = rows(
        [-0.05, -0.1, -0.15 + 1.0],  # −½·KL, score 1 at t = 2
        [-0.25 + 2.0, 0.0, 0.0],  # one real token: it is the last
        [0.0, -0.2, -0.3 + 3.0],  # left padding: the last real token is still t = 2
        [0.0, 0.0, 0.0],  # no response token: no score
    )
    close(out, expected)
    close(token_level_rewards(scores, kl, mask, kl_coef=0.0)[0], [0.0, 0.0, 1.0])


def test_token_level_rewards_rejects_bad_arguments():
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="kl_coef"):
        token_level_rewards(t(1.0, 2.0), torch.zeros(2, 3, dtype=torch.float64), mask, kl_coef=-0.1)
    with pytest.raises(ValueError, match="scores"):
        token_level_rewards(t(1.0), torch.zeros(2, 3, dtype=torch.float64), mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="mask"):
        token_level_rewards(t(1.0, 2.0), torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 2), kl_coef=0.1)


def test_broadcast_to_tokens():
    out = broadcast_to_tokens(t(1.5, -2.0), torch.tensor([[1, 1, 0], [0, 1, 1]]))
    close(out, rows([1.5, 1.5, 0.0], [0.0, -2.0, -2.0]))
    with pytest.raises(ValueError, match="seq_advantages"):
        broadcast_to_tokens(t(1.0, 2.0, 3.0), torch.ones(2, 3))


# ------------------------------------------------------------------------------------------------------------
# GAE and returns-to-go
# ------------------------------------------------------------------------------------------------------------

# 3-step episode, γ = 0.9, λ = 0.8 (γλ = 0.72), score 1 at the last token, V = [0.5, 0.6, 0.7]:
#   δ2 = 1 + 0.9·0   − 0.7 = 0.3          A2 = 0.3
#   δ1 = 0 + 0.9·0.7 − 0.6 = 0.03         A1 = 0.03 + 0.72·0.3   = 0.246
#   δ0 = 0 + 0.9·0.6 − 0.5 = 0.04         A0 = 0.04 + 0.72·0.246 = 0.21712
#   returns = A + V = [0.71712, 0.846, 1.0]
GAE_REWARDS = [0.0, 0.0, 1.0]
GAE_VALUES = [0.5, 0.6, 0.7]
GAE_ADV = [0.21712, 0.246, 0.3]
GAE_RET = [0.71712, 0.846, 1.0]


def test_gae_three_steps_hand_computed():
    adv, ret = gae(rows(GAE_REWARDS), rows(GAE_VALUES), torch.ones(1, 3), gamma=0.9, lam=0.8)
    close(adv, rows(GAE_ADV))
    close(ret, rows(GAE_RET))


def test_gae_padded_rows_match_unpadded_rows():
    # Row 0: the 3-step episode right-padded with garbage; row 1: the same episode left-padded;
    # row 2: a 1-step episode (δ0 = 2 − 0.5 = 1.5).
    nan = float("nan")
    rewards = rows([0.0, 0.0, 1.0, 7.0, nan], [9.0, 9.0, 0.0, 0.0, 1.0], [2.0, 3.0, 3.0, 3.0, 3.0])
    values = rows([0.5, 0.6, 0.7, 5.0, nan], [nan, 4.0, 0.5, 0.6, 0.7], [0.5, 8.0, 8.0, 8.0, 8.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, rows([*GAE_ADV, 0, 0], [0, 0, *GAE_ADV], [1.5, 0, 0, 0, 0]))
    close(ret, rows([*GAE_RET, 0, 0], [0, 0, *GAE_RET], [2.0, 0, 0, 0, 0]))


def test_gae_padding_invariance_random():
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 2, 7, 1]
    rewards = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    values = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    adv, ret = gae(rewards, values, mask, gamma=0.97, lam=0.9)
    for b, n in enumerate(lengths):
        row_adv, row_ret = gae(rewards[b : b + 1, :n], values[b : b + 1, :n], torch.ones(1, n), gamma=0.97, lam=0.9)
        close(adv[b : b + 1, :n], row_adv)
        close(ret[b : b + 1, :n], row_ret)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    # γ = 0.9, λ = 1: A_t = G_t − V_t with G = [0.81, 0.9, 1.0] → A = [0.31, 0.3, 0.3]
    adv, ret = gae(rows(GAE_REWARDS), rows(GAE_VALUES), torch.ones(1, 3), gamma=0.9, lam=1.0)
    close(adv, rows([0.31, 0.3, 0.3]))
    close(ret, rows([0.81, 0.9, 1.0]))
    close(discounted_returns(rows(GAE_REWARDS), torch.ones(1, 3), gamma=0.9), rows([0.81, 0.9, 1.0]))


def test_gae_has_no_gradient_and_rejects_bad_arguments():
    values = rows(GAE_VALUES).requires_grad_()
    adv, ret = gae(rows(GAE_REWARDS), values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError, match="gamma"):
        gae(rows(GAE_REWARDS), rows(GAE_VALUES), torch.ones(1, 3), gamma=1.5, lam=0.8)
    with pytest.raises(ValueError, match="lam"):
        gae(rows(GAE_REWARDS), rows(GAE_VALUES), torch.ones(1, 3), gamma=0.9, lam=-0.1)
    with pytest.raises(ValueError, match="values"):
        gae(rows(GAE_REWARDS), rows([0.5, 0.6]), torch.ones(1, 3), gamma=0.9, lam=0.8)
    with pytest.raises(ValueError, match="mask"):
        gae(rows(GAE_REWARDS), rows(GAE_VALUES), torch.ones(1, 4), gamma=0.9, lam=0.8)


# ------------------------------------------------------------------------------------------------------------
# GRPO, RLOO, REINFORCE++
# ------------------------------------------------------------------------------------------------------------


def test_grpo_two_groups_all_scales():
    rewards = t(1.0, 2.0, 3.0, 0.0, 0.0, 6.0)
    eps = 1e-6
    # group 1: μ = 2, deviations [−1, 0, 1], Bessel std = sqrt(2/2) = 1
    # group 2: μ = 2, deviations [−2, −2, 4], Bessel std = sqrt((4 + 4 + 16)/2) = sqrt(12)
    s2 = math.sqrt(12.0)
    close(
        grpo_advantages(rewards, group_size=3, scale="group", eps=eps),
        [-1 / (1 + eps), 0.0, 1 / (1 + eps), -2 / (s2 + eps), -2 / (s2 + eps), 4 / (s2 + eps)],
    )
    close(grpo_advantages(rewards, group_size=3, scale="none"), [-1.0, 0.0, 1.0, -2.0, -2.0, 4.0])  # Dr. GRPO
    # batch: std of all six rewards (μ = 2): Σ dev² = 1 + 0 + 1 + 4 + 4 + 16 = 26, Bessel var = 26/5
    sb = math.sqrt(26 / 5)
    close(grpo_advantages(rewards, 3, scale="batch", eps=eps), [d / (sb + eps) for d in (-1, 0, 1, -2, -2, 4)])
    # a group whose rewards are all equal gets 0, not nan
    # second group [1, 3]: μ = 2, Bessel std = sqrt((1 + 1)/1) = sqrt(2)
    s = math.sqrt(2) + 1e-6
    close(grpo_advantages(t(5.0, 5.0, 1.0, 3.0), group_size=2), [0.0, 0.0, -1 / s, 1 / s])


def test_grpo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="group_size=4"):
        grpo_advantages(t(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(t(1.0, 2.0), group_size=0)
    with pytest.raises(ValueError, match="scale='std'"):
        grpo_advantages(t(1.0, 2.0), group_size=2, scale="std")
    with pytest.raises(ValueError, match="rewards"):
        grpo_advantages(rows([1.0, 2.0]), group_size=2)


def test_rloo_leave_one_out():
    # group 1 [1, 2, 6]: 1 − (2+6)/2 = −3;  2 − (1+6)/2 = −1.5;  6 − (1+2)/2 = 4.5   (= 3/2 · (r − 3))
    # group 2 [0, 0, 3]: 0 − 1.5 = −1.5 (twice);  3 − 0 = 3
    close(rloo_advantages(t(1.0, 2.0, 6.0, 0.0, 0.0, 3.0), group_size=3), [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    close(rloo_advantages(t(1.0, 3.0), group_size=2), [-2.0, 2.0])
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(t(1.0, 2.0), group_size=1)
    with pytest.raises(ValueError, match="group_size=3"):
        rloo_advantages(t(1.0, 2.0, 3.0, 4.0), group_size=3)


def test_reinforce_pp_returns_then_batch_whitening():
    token_rewards = rows([-0.1, -0.2, 1.0], [0.5, 99.0, 99.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # γ = 1: returns-to-go row 0 = [−0.1−0.2+1, −0.2+1, 1] = [0.7, 0.8, 1.0]; row 1 = [0.5]
    close(discounted_returns(token_rewards, mask), rows([0.7, 0.8, 1.0], [0.5, 0.0, 0.0]))
    # whitening over the 4 real tokens: μ = 0.75, dev = [−0.05, 0.05, 0.25, −0.25], σ² = 0.13/4 = 0.0325
    std = math.sqrt(0.0325 + 1e-8)
    out = reinforce_pp_advantages(token_rewards, mask, gamma=1.0)
    close(out, rows([-0.05 / std, 0.05 / std, 0.25 / std], [-0.25 / std, 0.0, 0.0]))
    # γ = 0.5, row 0: G2 = 1, G1 = −0.2 + 0.5 = 0.3, G0 = −0.1 + 0.15 = 0.05
    close(discounted_returns(token_rewards, mask, gamma=0.5)[0], [0.05, 0.3, 1.0])


# ------------------------------------------------------------------------------------------------------------
# Advantage registry
# ------------------------------------------------------------------------------------------------------------


def test_advantage_registry_adapters_agree_with_the_functions():
    assert sorted(ADVANTAGE_ESTIMATORS) == ["gae", "grpo", "reinforce_pp", "rloo"]
    assert [needs_critic(n) for n in ("gae", "grpo", "rloo", "reinforce_pp")] == [True, False, False, False]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    scores = t(1.0, 2.0, 6.0, 3.0)
    token_rewards = token_level_rewards(scores, torch.full((4, 3), 0.1, dtype=torch.float64), mask, kl_coef=0.1)
    values = torch.full((4, 3), 0.5, dtype=torch.float64)
    settings = AdvantageSettings(gamma=0.9, lam=0.8, group_size=2)

    adv, ret = compute_advantages("gae", scores, token_rewards, values, mask, settings)
    exp_adv, exp_ret = gae(token_rewards, values, mask, 0.9, 0.8)
    close(adv, exp_adv)
    close(ret, exp_ret)

    adv, ret = ADVANTAGE_ESTIMATORS["grpo"](scores, None, None, mask, settings)
    assert ret is None
    close(adv, broadcast_to_tokens(grpo_advantages(scores, 2), mask))

    adv, ret = ADVANTAGE_ESTIMATORS["rloo"](scores, None, None, mask, settings)
    # groups [1, 2] → [−1, 1]; [6, 3] → [3, −3]
    close(adv, rows([-1.0, -1.0, -1.0], [1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [-3.0, -3.0, -3.0]))
    assert ret is None

    adv, ret = ADVANTAGE_ESTIMATORS["reinforce_pp"](scores, token_rewards, None, mask, settings)
    close(adv, reinforce_pp_advantages(token_rewards, mask, gamma=0.9))
    assert ret is None

    whitened, _ = compute_advantages("rloo", scores, None, None, mask, dataclasses.replace(settings, whiten=True))
    close(whitened, masked_whiten(broadcast_to_tokens(rloo_advantages(scores, 2), mask), mask))


def test_advantage_registry_rejects_bad_arguments():
    mask = torch.ones(3, 2)
    scores = t(1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="name='ppo'"):
        needs_critic("ppo")
    with pytest.raises(ValueError, match="name='a2c'"):
        compute_advantages("a2c", scores, None, None, mask, AdvantageSettings())
    with pytest.raises(ValueError, match="values"):
        compute_advantages("gae", scores, torch.zeros(3, 2), None, mask, AdvantageSettings())
    with pytest.raises(ValueError, match="token_rewards"):
        compute_advantages("reinforce_pp", scores, None, None, mask, AdvantageSettings())
    with pytest.raises(ValueError, match="group_size=2"):
        compute_advantages("grpo", scores, None, None, mask, AdvantageSettings(group_size=2))
    with pytest.raises(ValueError, match="group_size"):
        AdvantageSettings(group_size=0)
    with pytest.raises(ValueError, match="grpo_scale"):
        AdvantageSettings(grpo_scale="nope")
    with pytest.raises(ValueError, match="gamma"):
        AdvantageSettings(gamma=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        AdvantageSettings().gamma = 0.5  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------------------
# PPO policy loss
# ------------------------------------------------------------------------------------------------------------

# ε = 0.2. Tokens (A, ρ) → ℓ = max(−ρA, −clip(ρ)A), clipped branch?
#   a (+1, 1.1): max(−1.1, −1.1) = −1.1   no
#   b (+1, 1.5): max(−1.5, −1.2) = −1.2   yes (gradient 0)
#   c (−1, 0.5): max( 0.5,  0.8) =  0.8   yes (gradient 0)
#   d (−1, 1.5): max( 1.5,  1.2) =  1.5   no (pessimistic: unclipped)
#   e (+1, 0.5): max(−0.5, −0.8) = −0.5   no
#   loss = (−1.1 − 1.2 + 0.8 + 1.5 − 0.5)/5 = −0.1,  clip_fraction = 2/5,  ratio_mean = 5.1/5 = 1.02
PPO_ADV = [1.0, 1.0, -1.0, -1.0, 1.0]
PPO_RATIO = [1.1, 1.5, 0.5, 1.5, 0.5]


def ppo_inputs(extra_adv: list[float] = (), extra_ratio: list[float] = ()):
    ratios = torch.tensor([PPO_RATIO + list(extra_ratio)], dtype=torch.float64)
    old = torch.full_like(ratios, -2.0)
    logprobs = (old + ratios.log()).requires_grad_()
    advantages = torch.tensor([PPO_ADV + list(extra_adv)], dtype=torch.float64)
    return logprobs, old, advantages


def test_ppo_policy_loss_hand_computed():
    logprobs, old, adv = ppo_inputs()
    out = ppo_policy_loss(logprobs, old, adv, torch.ones_like(adv), clip_eps=0.2)
    close(out.loss, -0.1)
    close(out.clip_fraction, 0.4)
    close(out.ratio_mean, 1.02)
    # approx_kl = mean of ρ − 1 − log ρ
    close(out.approx_kl, sum(r - 1 - math.log(r) for r in PPO_RATIO) / 5)
    assert not out.clip_fraction.requires_grad and not out.approx_kl.requires_grad


def test_ppo_gradient_is_zero_exactly_on_clipped_tokens():
    logprobs, old, adv = ppo_inputs()
    ppo_policy_loss(logprobs, old, adv, torch.ones_like(adv), clip_eps=0.2).loss.backward()
    # unclipped: ∂ℓ/∂logπ = −A·ρ, divided by N = 5: a −1.1/5, d +1.5/5, e −0.5/5; b, c clipped → 0
    close(logprobs.grad, [[-0.22, 0.0, 0.0, 0.3, -0.1]])


def test_ppo_dual_clip_caps_negative_advantage_tokens():
    # extra token f: A = −1, ρ = 4: ℓ = max(4, 1.2) = 4; dual clip c = 3 caps it at −cA = 3 (gradient 0).
    # d (A = −1, ρ = 1.5): 1.5 < 3, unchanged; positive-advantage tokens are never dual-clipped.
    logprobs, old, adv = ppo_inputs([-1.0], [4.0])
    mask = torch.ones_like(adv)
    plain = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    close(plain.loss, (-0.5 + 4.0) / 6)
    close(plain.clip_fraction, 2 / 6)
    dual = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2, dual_clip=3.0)
    close(dual.loss, (-0.5 + 3.0) / 6)
    close(dual.clip_fraction, 3 / 6)
    dual.loss.backward()
    close(logprobs.grad, [[-1.1 / 6, 0.0, 0.0, 1.5 / 6, -0.5 / 6, 0.0]])


def test_ppo_padding_is_ignored():
    logprobs, old, adv = ppo_inputs()
    padded_lp = torch.cat([logprobs.detach(), torch.tensor([[float("-inf"), 3.0]], dtype=torch.float64)], dim=1)
    padded_old = torch.cat([old, torch.tensor([[0.0, float("nan")]], dtype=torch.float64)], dim=1)
    padded_adv = torch.cat([adv, torch.tensor([[5.0, float("nan")]], dtype=torch.float64)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    padded_lp.requires_grad_()
    out = ppo_policy_loss(padded_lp, padded_old, padded_adv, mask, clip_eps=0.2, dual_clip=2.0)
    close(out.loss, -0.1)
    close(out.clip_fraction, 0.4)
    close(out.ratio_mean, 1.02)
    out.loss.backward()
    close(padded_lp.grad, [[-0.22, 0.0, 0.0, 0.3, -0.1, 0.0, 0.0]])
    assert POLICY_LOSSES["ppo"] is ppo_policy_loss


def test_ppo_rejects_bad_arguments():
    logprobs, old, adv = ppo_inputs()
    mask = torch.ones_like(adv)
    with pytest.raises(ValueError, match=r"dual_clip=1\.0"):
        ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2, dual_clip=1.0)
    with pytest.raises(ValueError, match="clip_eps=0"):
        ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0)
    with pytest.raises(ValueError, match="advantages"):
        ppo_policy_loss(logprobs, old, adv[:, :3], mask, clip_eps=0.2)


# ------------------------------------------------------------------------------------------------------------
# Value loss and entropy
# ------------------------------------------------------------------------------------------------------------


def test_value_loss_clipped_and_unclipped():
    # ε = 0.2
    #   V=1.0, V_old=0.5, R=2.0: V_clip = 0.7; max((−1)², (−1.3)²) = 1.69
    #   V=2.0, V_old=1.9, R=1.0: V_clip = 2.0 (inside);            1
    #   V=0.0, V_old=1.0, R=0.5: V_clip = 0.8; max(0.25, 0.09)  = 0.25
    #   loss = ½ · (1.69 + 1 + 0.25)/3 = 0.49;   unclipped ½ · (1 + 1 + 0.25)/3 = 0.375
    values = rows([1.0, 2.0, 0.0, 50.0]).requires_grad_()
    old = rows([0.5, 1.9, 1.0, float("nan")])
    returns = rows([2.0, 1.0, 0.5, -50.0])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss = value_loss(values, old, returns, mask, clip_eps=0.2)
    close(loss, 0.49)
    close(value_loss(values, old, returns, mask, clip_eps=None), 0.375)
    loss.backward()
    # token 1 takes the clipped branch (constant in V) → 0; token 2: (V − R)/3 = 1/3; token 3: −0.5/3
    close(values.grad, [[0.0, 1 / 3, -0.5 / 3, 0.0]])
    with pytest.raises(ValueError, match="clip_eps"):
        value_loss(values, old, returns, mask, clip_eps=-0.1)
    with pytest.raises(ValueError, match="returns"):
        value_loss(values, old, returns[:, :2], mask)


def test_entropy_hand_computed_with_masked_vocabulary_and_padding():
    inf = float("inf")
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, -inf, -inf], [5.0, -inf, -inf, -inf]]], dtype=torch.float64
    ).requires_grad_()
    # uniform over 4 → ln 4; uniform over 2 → ln 2; one-hot → 0
    close(token_entropy(logits), [[math.log(4), math.log(2), 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    ent = entropy_from_logits(logits, mask)
    close(ent, (math.log(4) + math.log(2)) / 2)
    ent.backward()
    assert torch.isfinite(logits.grad).all()
    # agrees with torch.distributions on finite logits
    z = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    close(token_entropy(z), torch.distributions.Categorical(logits=z).entropy())
    assert token_entropy(z.to(torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="logits"):
        entropy_from_logits(z[0], mask)
