"""Pure pieces of the pipelined RL issue: the decoupled PPO loss (hand-computed, equal to PPO on fresh samples,
gradient only through log π), the rollout/learner log-prob parity, and the per-sample ledger."""

from __future__ import annotations

import json
import math

import pyarrow.fs as pafs
import pytest
import torch

from rlhf_ray.algos import decoupled_ppo_loss, logprob_parity, ppo_policy_loss
from rlhf_ray.storage import StorageRoot
from rlhf_ray.training.ledger import LedgerError, SampleLedger


def close(actual: torch.Tensor | float, expected, tol: float = 1e-9) -> None:
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64),
                          atol=tol, rtol=0), (actual, expected)


# The 1×3 example, ε = 0.2, C = 2, all three tokens real:
#   token          t0      t1      t2
#   r = π/π_prox   1.1     1.5     0.5
#   A              +1      +1      −1
#   π_prox/π_behav 0.5     1.0     4.0   → w = min(·, 2) = 0.5, 1, 2   (t2 capped)
#   min(rA, clip(r)A):  t0 min(1.1, 1.1) = 1.1 (unclipped); t1 min(1.5, 1.2) = 1.2 (clipped);
#                       t2 min(−0.5, −0.8) = −0.8 (clipped)
#   ℓ = −w · that:      −0.55, −1.2, +1.6   → L = −0.15 / 3 = −0.05
#   clip fraction 2/3; mean w = 3.5/3; capped 1/3; mean r = 3.1/3
#   approx KL = mean(r − 1 − ln r) against π_prox
#   ∂L/∂log π: only t0 is unclipped: −w·A·r / 3 = −0.5 · 1 · 1.1 / 3; t1, t2 get 0
RATIO, ADV, WEIGHT = [1.1, 1.5, 0.5], [1.0, 1.0, -1.0], [0.5, 1.0, 4.0]


def example():
    proximal = torch.full((1, 3), -1.0, dtype=torch.float64, requires_grad=True)
    logprobs = (proximal.detach() + torch.tensor([RATIO], dtype=torch.float64).log()).requires_grad_()
    behaviour = (proximal.detach() - torch.tensor([WEIGHT], dtype=torch.float64).log()).requires_grad_()
    return logprobs, proximal, behaviour, torch.tensor([ADV], dtype=torch.float64)


def test_decoupled_ppo_hand_computed_and_gradient_only_through_policy():
    logprobs, proximal, behaviour, adv = example()
    out = decoupled_ppo_loss(logprobs, proximal, behaviour, adv, torch.ones_like(adv), clip_eps=0.2, is_cap=2.0)
    close(out.loss, -0.05)
    close(out.clip_fraction, 2 / 3)
    close(out.is_weight_mean, 3.5 / 3)
    close(out.is_capped_fraction, 1 / 3)
    close(out.ratio_mean, 3.1 / 3)
    close(out.approx_kl, sum(r - 1 - math.log(r) for r in RATIO) / 3)
    out.loss.backward()
    close(logprobs.grad, [[-0.5 * 1.1 / 3, 0.0, 0.0]])
    assert proximal.grad is None and behaviour.grad is None
    assert not any(x.requires_grad for x in out[1:])


def test_decoupled_ppo_dual_clip_and_padding():
    # a fourth token with A = −1, r = 4, w = 1: ℓ = max(4, 1.2) = 4, dual clip c = 3 caps it at 3; a fifth token
    # is padding with nan/inf everywhere and must not count
    logprobs, proximal, behaviour, adv = example()
    pad = torch.tensor([[float("nan")]], dtype=torch.float64)
    lp = torch.cat([logprobs.detach(), proximal.detach() [:, :1] + math.log(4.0), -pad.abs() * math.inf], 1)
    prox = torch.cat([proximal.detach(), torch.tensor([[-1.0]], dtype=torch.float64), pad], 1)
    behav = torch.cat([behaviour.detach(), torch.tensor([[-1.0]], dtype=torch.float64), pad], 1)
    adv = torch.cat([adv, torch.tensor([[-1.0]], dtype=torch.float64), pad], 1)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    lp.requires_grad_()
    out = decoupled_ppo_loss(lp, prox, behav, adv, mask, clip_eps=0.2, is_cap=2.0, dual_clip=3.0)
    close(out.loss, (-0.55 - 1.2 + 1.6 + 3.0) / 4)
    close(out.clip_fraction, 3 / 4)
    close(out.is_weight_mean, 4.5 / 4)
    out.loss.backward()
    close(lp.grad, [[-0.5 * 1.1 / 4, 0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("dual_clip", [None, 2.5])
def test_decoupled_ppo_equals_ppo_when_proximal_is_behaviour(dual_clip):
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=generator) * 3
    logprobs = (old + 0.4 * torch.randn(4, 6, generator=generator)).requires_grad_()
    adv = torch.randn(4, 6, generator=generator)
    mask = torch.rand(4, 6, generator=generator) > 0.3
    ppo = ppo_policy_loss(logprobs, old, adv, mask, 0.2, dual_clip)
    (grad_ppo,) = torch.autograd.grad(ppo.loss, logprobs)
    decoupled = decoupled_ppo_loss(logprobs, old, old.clone(), adv, mask, 0.2, 2.0, dual_clip)
    (grad_decoupled,) = torch.autograd.grad(decoupled.loss, logprobs)
    for a, b in zip(ppo[:4], decoupled[:4], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(grad_ppo, grad_decoupled)
    assert decoupled.is_weight_mean.item() == 1.0 and decoupled.is_capped_fraction.item() == 0.0


def test_decoupled_ppo_rejects_bad_arguments():
    logprobs, proximal, behaviour, adv = example()
    mask = torch.ones_like(adv)
    with pytest.raises(ValueError, match=r"is_cap=1\.0"):
        decoupled_ppo_loss(logprobs, proximal, behaviour, adv, mask, clip_eps=0.2, is_cap=1.0)
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        decoupled_ppo_loss(logprobs, proximal, behaviour[:, :2], adv, mask, clip_eps=0.2, is_cap=2.0)
    # a weight that overflows exp in float32 is still capped, not inf
    huge = decoupled_ppo_loss(logprobs.float(), proximal.float(), proximal.float() - 200.0, adv.float(),
                              mask, clip_eps=0.2, is_cap=2.0)
    assert huge.is_weight_mean.item() == 2.0 and math.isfinite(huge.loss.item())


def test_logprob_parity_ignores_masked_tokens_and_empty_mask_is_zero():
    rollout = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, -0.1, 9.0]])
    learner = torch.tensor([[-1.25, -2.0, -3.0], [-0.75, -0.6, float("nan")]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # |Δ| over real tokens: 0.25, 0, 0.25, 0.5
    assert logprob_parity(rollout, learner, mask) == pytest.approx({"mean": 0.25, "max": 0.5})
    assert logprob_parity(rollout, learner, torch.zeros_like(mask)) == {"mean": 0.0, "max": 0.0}
    with pytest.raises(ValueError, match="one shape"):
        logprob_parity(rollout, learner[:, :2], mask)


def run_one_draw(ledger: SampleLedger, epoch: int, prompt: int, iteration: int) -> str:
    key = ledger.draw(epoch, prompt)
    ledger.generated(key, policy_version=iteration)
    ledger.scored(key)
    ledger.trained(key, iteration)
    return key


def test_ledger_transitions_summary_and_reconcile():
    ledger = SampleLedger()
    assert run_one_draw(ledger, 0, 7, iteration=1) == "e0/7"
    assert ledger.entries["e0/7"]["policy_version"] == 1 and ledger.entries["e0/7"]["iteration"] == 1
    with pytest.raises(LedgerError, match="already trained in iteration 1"):
        ledger.trained("e0/7", 2)
    with pytest.raises(LedgerError, match="already trained"):
        ledger.draw(0, 7)
    run_one_draw(ledger, 1, 7, iteration=2)  # the same prompt in the next epoch is another draw

    waiting = ledger.draw(1, 8)
    with pytest.raises(LedgerError, match="cannot become scored from state 'drawn'"):
        ledger.scored(waiting)
    with pytest.raises(LedgerError, match="cannot become trained from state 'drawn'"):
        ledger.trained(waiting, 3)
    generated = ledger.draw(1, 9)
    ledger.generated(generated, 2)
    scored = ledger.draw(1, 10)
    ledger.generated(scored, 2)
    ledger.scored(scored)
    filtered = ledger.draw(1, 11)
    ledger.generated(filtered, 2)
    ledger.dropped(filtered, "zero_variance")
    with pytest.raises(LedgerError, match="not in the ledger"):
        ledger.generated("e9/1", 0)
    with pytest.raises(LedgerError, match="cannot become dropped from state 'trained'"):
        ledger.dropped("e0/7", "late")

    assert ledger.in_flight() == [waiting, generated, scored]
    assert ledger.summary() == {"drawn": 6, "trained": 2, "dropped": {"zero_variance": 1}, "in_flight": 3}
    assert ledger.reconcile("driver_restart") == [waiting, generated, scored]
    assert ledger.in_flight() == []
    assert ledger.summary() == {"drawn": 6, "trained": 2, "in_flight": 0,
                                "dropped": {"driver_restart": 3, "zero_variance": 1}}
    # a dropped draw may be replayed: it counts once, in its newest state
    run_one_draw(ledger, 1, 8, iteration=3)
    assert ledger.entries["e1/8"]["attempts"] == 2
    assert ledger.summary() == {"drawn": 6, "trained": 3, "in_flight": 0,
                                "dropped": {"driver_restart": 2, "zero_variance": 1}}


class MoveFails(pafs.FileSystemHandler):
    """The local filesystem, except that the rename after a write fails: a crash between write and rename."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()

    def get_type_name(self): return "move-fails"
    def normalize_path(self, path): return path
    def equals(self, other): return other is self
    def get_file_info(self, paths): return self.local.get_file_info(paths)
    def get_file_info_selector(self, selector): return self.local.get_file_info(selector)
    def create_dir(self, path, recursive): self.local.create_dir(path, recursive=recursive)
    def delete_dir(self, path): self.local.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False): self.local.delete_dir_contents(path, missing_dir_ok)
    def delete_root_dir_contents(self): raise OSError("not here")
    def delete_file(self, path): self.local.delete_file(path)
    def copy_file(self, src, dest): self.local.copy_file(src, dest)
    def open_input_stream(self, path): return self.local.open_input_stream(path)
    def open_input_file(self, path): return self.local.open_input_file(path)
    def open_output_stream(self, path, metadata): return self.local.open_output_stream(path)
    def open_append_stream(self, path, metadata): return self.local.open_append_stream(path)

    def move(self, src, dest):
        raise OSError("killed between write and rename")


def test_ledger_round_trip_and_atomic_save(tmp_path):
    ledger = SampleLedger()
    run_one_draw(ledger, 0, "p-1", iteration=0)
    ledger.generated(ledger.draw(0, "p-2"), 1)
    root = StorageRoot.from_uri(tmp_path)
    path = ledger.save(root, "ledger.json")
    loaded = SampleLedger.load(path)
    assert loaded.to_dict() == ledger.to_dict() and loaded.in_flight() == ["e0/p-2"]
    with pytest.raises(LedgerError, match="already trained"):
        loaded.trained("e0/p-1", 5)

    ledger.scored("e0/p-2")
    ledger.trained("e0/p-2", 1)
    crashing = StorageRoot(pafs.PyFileSystem(MoveFails()), str(tmp_path))
    with pytest.raises(OSError, match="between write and rename"):
        ledger.save(crashing, "ledger.json")
    assert SampleLedger.load(path).to_dict() == loaded.to_dict()  # the previous checkpoint's ledger, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]  # no temporary left behind
    with pytest.raises(ValueError, match="version"):
        SampleLedger.from_dict({**json.loads((tmp_path / "ledger.json").read_text()), "version": 99})
