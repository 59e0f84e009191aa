"""The policy learner on samples of an older policy (decoupled PPO when a minibatch carries behaviour log-probs),
the `learner.is_cap` setting, and length-bucketed minibatches."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError

from actors.ppo_config import LearnerSection
from rlhf_ray.roles.learner import PolicyLearner, length_buckets
from rlhf_ray.rollout.batch import response_token_view

SETTINGS = {"seed": 0, "lr": 1e-2, "weight_decay": 0.0, "max_grad_norm": 1.0, "epochs": 1, "num_minibatches": 2,
            "policy_loss": "ppo", "clip_eps": 0.2, "dual_clip": None, "entropy_coef": 0.0, "kl_loss_coef": 0.0,
            "is_cap": LearnerSection().is_cap}


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    from rlhf_ray.models import init_model

    corpus = ["Where is my parcel? It left the depot this morning.", "Can I get a refund? Yes, it is on its way."]
    return str(init_model(corpus * 20, tmp_path_factory.mktemp("policy"), "tiny", seed=0).path)


def experience(learner: PolicyLearner) -> dict[str, torch.Tensor]:
    """4 right-padded rows of different lengths (prompt of 4 tokens), old log-probs from the learner itself."""
    ids = torch.randint(5, 200, (4, 14), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([14, 7, 11, 9])
    attention = (torch.arange(14) < lengths[:, None]).long()
    response = attention.clone()
    response[:, :4] = 0
    old, mask = response_token_view(learner.logprobs(ids, attention), response)
    advantages = torch.linspace(-1, 1, old.numel()).reshape(old.shape) * mask
    return {"input_ids": ids, "attention_mask": attention, "response_mask": response, "old_logprobs": old,
            "advantages": advantages}


Make = Callable[[torch.Tensor], torch.Tensor]


def step(path: str, settings: dict | None = None, proximal_in_update: bool = False,
         **extra: Make) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One update of a fresh learner; `extra` adds minibatch keys made from the old log-probs. With
    `proximal_in_update` the learner is not given the old log-probs (they are zeroed) and computes them itself."""
    threads = torch.get_num_threads()
    try:  # one thread: several on a busy 2-core machine made this step 10× slower
        learner = PolicyLearner(path, 1, {**SETTINGS, **(settings or {})}, num_threads=1)
        learner.init_group(*learner.address(), rank=0)
        rows = experience(learner)
        rows.update({key: make(rows["old_logprobs"]) for key, make in extra.items()})
        if proximal_in_update:
            rows["old_logprobs"] = torch.zeros_like(rows["old_logprobs"])
        figures = learner.train(rows, update=0, proximal_in_update=proximal_in_update)
    finally:
        torch.set_num_threads(threads)  # the learner set it for the whole process
    return figures, {name: p.detach().clone() for name, p in learner.model.named_parameters()}


def test_behaviour_equal_to_old_steps_exactly_as_plain_ppo(tiny_policy: str) -> None:
    plain_figures, plain = step(tiny_policy)
    fresh_figures, fresh = step(tiny_policy, behaviour_logprobs=lambda old: old.clone())
    assert all(torch.equal(plain[name], fresh[name]) for name in plain)
    assert {k: v for k, v in fresh_figures.items() if not k.startswith("is_")} == plain_figures
    assert fresh_figures["is_weight_mean"] == 1.0 and fresh_figures["is_capped_fraction"] == 0.0
    # a stale behaviour policy (π_prox/π_behav = e on every token, capped at 2) changes the step
    stale_figures, stale = step(tiny_policy, behaviour_logprobs=lambda old: old - 1.0)
    assert stale_figures["is_capped_fraction"] == 1.0 and stale_figures["is_weight_mean"] == pytest.approx(2.0)
    assert any(not torch.equal(plain[name], stale[name]) for name in plain)


@pytest.mark.parametrize("settings", [{}, {"num_minibatches": 1}, {"epochs": 2}],
                         ids=["2-minibatches", "1-minibatch", "2-epochs"])
def test_proximal_log_probs_computed_in_the_update_step_as_precomputed_ones(tiny_policy: str, settings: dict) -> None:
    """Samples one policy version old: the learner computing the proximal log-probs in its update (the first step's
    rows from that step's own forward pass) trains exactly as when the controller computed them before it."""
    stale = {"behaviour_logprobs": lambda old: old - 0.3}
    given_figures, given = step(tiny_policy, settings, **stale)
    computed_figures, computed = step(tiny_policy, settings, proximal_in_update=True, **stale)
    # the same proximal log-probs up to float rounding (a padded batch's forward pass against a trimmed one's),
    # which Adam's normalisation lifts to ≈ 1e-4 of a step's ≈ 1e-2 (lr) on parameters whose gradient is ≈ 0
    assert all(torch.allclose(given[name], computed[name], atol=2e-4) for name in given)
    assert computed_figures == pytest.approx(given_figures, abs=1e-5)
    # π_prox / π_behav = e^0.3 ≈ 1.35 on every token, under the cap of 2
    assert given_figures["is_capped_fraction"] == 0.0
    assert given_figures["is_weight_mean"] == pytest.approx(1.35, abs=0.01)


class RecordingLearner(PolicyLearner):
    """A policy learner that notes the width of every minibatch it trains on."""

    widths: list[int]

    def minibatch_loss(self, minibatch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        self.widths.append(minibatch["input_ids"].shape[1])
        return super().minibatch_loss(minibatch)


def test_train_steps_on_length_buckets_trimmed_to_their_longest_row(tiny_policy: str) -> None:
    threads = torch.get_num_threads()
    try:
        learner = RecordingLearner(tiny_policy, 1, {**SETTINGS, "epochs": 4, "lr": 1e-6}, num_threads=1)
        learner.init_group(*learner.address(), rank=0)
        learner.widths = []
        learner.train(experience(learner), update=0)
    finally:
        torch.set_num_threads(threads)
    # rows of 14, 7, 11 and 9 tokens in 2 minibatches: {7, 9} and {11, 14} in every epoch (a shuffle would pair
    # them otherwise 2 times in 3), in either order
    pairs = [sorted(learner.widths[i:i + 2]) for i in range(0, 8, 2)]
    assert pairs == [[9, 14]] * 4


def test_is_cap_is_a_learner_setting_above_one() -> None:
    assert LearnerSection().model_dump()["is_cap"] == 2.0
    assert LearnerSection(is_cap=5).model_dump()["is_cap"] == 5.0
    with pytest.raises(ValidationError, match="is_cap"):
        LearnerSection(is_cap=1.0)


def test_length_buckets_partition_rows_by_length_reproducibly() -> None:
    lengths = torch.randint(20, 300, (64,), generator=torch.Generator().manual_seed(0))
    lengths[:8] = 50  # ties

    def buckets(seed: int) -> list[torch.Tensor]:
        return length_buckets(lengths, 4, torch.Generator().manual_seed(seed))

    parts = buckets(1)
    assert sorted(torch.cat(parts).tolist()) == list(range(64)) and [len(p) for p in parts] == [16] * 4
    spans = sorted((int(lengths[p].min()), int(lengths[p].max())) for p in parts)
    assert all(high <= low for (_, high), (low, _) in itertools.pairwise(spans))  # no overlap
    assert all(torch.equal(a, b) for a, b in zip(parts, buckets(1), strict=True))  # a function of the seed
    orders = {tuple(int(lengths[p].min()) for p in buckets(seed)) for seed in range(6)}
    rows = {tuple(torch.cat(sorted(buckets(seed), key=lambda p: int(lengths[p].min()))).tolist()) for seed in range(6)}
    assert len(orders) > 1 and len(rows) > 1  # the bucket order and the order of equal-length rows are shuffled

    def padding(parts: list[torch.Tensor]) -> float:
        return 1 - sum(int(lengths[p].sum()) for p in parts) / sum(len(p) * int(lengths[p].max()) for p in parts)

    shuffled = torch.tensor_split(torch.randperm(64, generator=torch.Generator().manual_seed(1)), 4)
    assert padding(parts) < padding(shuffled) / 2
