"""Chunked token log-probs and entropy (`rlhf_ray.algos.chunked`) and the causal-LM helper around them
(`rlhf_ray.models.heads`): equal to the full-logits computation in values and gradients, whatever the budget."""

from __future__ import annotations

import math
import os

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from rlhf_ray.algos.chunked import chunked_token_logprobs
from rlhf_ray.algos.logprobs import token_logprobs
from rlhf_ray.algos.policy_loss import token_entropy
from rlhf_ray.models.heads import ChunkingUnsupportedError, causal_lm_token_logprobs_entropy, split_output_head
from rlhf_ray.models.lora import LoraSection, add_lora
from rlhf_ray.roles.learner import free_port
from rlhf_ray.roles.scoring import position_ids_from_mask


def test_hand_checked_values() -> None:
    # V = 2, H = 1, W = [[1], [0]]: logits (h, 0). h = ln 3 gives p = (3/4, 1/4).
    hidden = torch.tensor([[[math.log(3.0)], [0.0]]])
    weight = torch.tensor([[1.0], [0.0]])
    logp, entropy = chunked_token_logprobs(hidden, weight, torch.tensor([[0, 1]]), 1, with_entropy=True)
    assert logp.shape == entropy.shape == (1, 1)
    assert logp.item() == pytest.approx(math.log(0.25))  # the label of token 1 is 1: p = 1/4
    assert entropy.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # bias and scale: z = 2·(h·W + b) = 2·(0 + (ln 2, 0)) = (2 ln 2, 0), p(0) = 4/5
    logp, none = chunked_token_logprobs(torch.zeros(1, 2, 1), weight, torch.tensor([[1, 0]]), 5,
                                        bias=torch.tensor([math.log(2.0), 0.0]), logit_scale=2.0)
    assert none is None
    assert logp.item() == pytest.approx(math.log(0.8))


def _full(hidden, weight, bias, labels, scale):
    logits = torch.nn.functional.linear(hidden, weight, bias).float() * scale
    return token_logprobs(logits, labels), token_entropy(logits[:, :-1])


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("budget", [1, 5, 1000])  # below one row (T − 1 = 6), across rows, above everything
def test_matches_full_logits_values_and_gradients(dtype: torch.dtype, rtol: float, budget: int) -> None:
    generator = torch.Generator().manual_seed(0)
    batch, length, width, vocab, scale = 3, 7, 16, 50, 0.7
    hidden = torch.randn(batch, length, width, generator=generator).to(dtype).requires_grad_()
    weight = torch.randn(vocab, width, generator=generator).to(dtype).requires_grad_()
    bias = torch.randn(vocab, generator=generator).to(dtype).requires_grad_()
    labels = torch.randint(vocab, (batch, length), generator=generator)
    up_logp, up_entropy = torch.randn(2, batch, length - 1, generator=generator)

    logp, entropy = _full(hidden, weight, bias, labels, scale)
    expected = torch.autograd.grad((up_logp * logp + up_entropy * entropy).sum(), (hidden, weight, bias))
    chunked_logp, chunked_entropy = chunked_token_logprobs(hidden, weight, labels, budget, bias=bias,
                                                           logit_scale=scale, with_entropy=True)
    got = torch.autograd.grad((up_logp * chunked_logp + up_entropy * chunked_entropy).sum(), (hidden, weight, bias))

    assert chunked_logp.dtype == chunked_entropy.dtype == torch.float32
    torch.testing.assert_close(chunked_logp, logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_entropy, entropy, rtol=1e-5, atol=1e-5)
    for name, want, have in zip(("hidden", "weight", "bias"), expected, got, strict=True):
        assert have.dtype == dtype, name
        torch.testing.assert_close(have.float(), want.float(), rtol=rtol, atol=rtol * want.abs().max().item(),
                                   msg=lambda text, name=name: f"d/d{name}: {text}")


def test_rows_are_independent_of_padding_and_frozen_head_gets_no_gradient() -> None:
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 6, 8, generator=generator, requires_grad=True)
    weight = torch.randn(30, 8, generator=generator)  # frozen: the backward forms no weight gradient
    labels = torch.randint(30, (2, 6), generator=generator)
    alone, _ = chunked_token_logprobs(hidden[:1, :4], weight, labels[:1, :4], 3)
    padded = labels.clone()
    padded[0, 4:] = 0  # whatever sits in the padding of row 0
    batch, _ = chunked_token_logprobs(hidden, weight, padded, 3)
    torch.testing.assert_close(batch[0, :3], alone[0], rtol=0, atol=1e-6)
    batch.sum().backward()
    assert hidden.grad is not None and weight.grad is None


def test_rejects_bad_arguments() -> None:
    hidden, weight, labels = torch.zeros(1, 3, 4), torch.zeros(5, 4), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="token_budget must be an integer >= 1; got 0"):
        chunked_token_logprobs(hidden, weight, labels, 0)
    with pytest.raises(ValueError, match=r"weight must be \[V, H\] with H = 4; got shape \(5, 3\)"):
        chunked_token_logprobs(hidden, torch.zeros(5, 3), labels, 2)


def _tiny_llama(tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return LlamaForCausalLM(config)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    attention = torch.ones_like(ids)
    attention[1, :2] = 0  # a left-padded row
    return ids, attention


def _values_and_grads(model: torch.nn.Module, token_budget: int | None) -> tuple[torch.Tensor, ...]:
    ids, attention = _batch()
    model.zero_grad()
    logp, entropy = causal_lm_token_logprobs_entropy(model, ids, attention, position_ids_from_mask(attention),
                                                     token_budget, with_entropy=True)
    mask = attention[:, 1:].bool()
    (logp[mask].sum() + 0.5 * entropy[mask].sum()).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return (logp[mask], entropy[mask], *grads)


@pytest.mark.parametrize("wrap", ["plain", "untied", "lora"])
def test_causal_lm_helper_matches_full_logits(wrap: str) -> None:
    model = _tiny_llama(tie=wrap != "untied")
    if wrap == "lora":
        model = add_lora(model, LoraSection(r=2))
        assert split_output_head(model).head is model.get_base_model().lm_head  # 'all-linear' leaves the head
    full = _values_and_grads(model, None)
    chunked = _values_and_grads(model, 4)
    assert len(full) == len(chunked) > 2
    for want, have in zip(full, chunked, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


def test_ddp_wrapper_is_called_so_gradients_are_reduced() -> None:
    port = free_port()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = _tiny_llama()
        full = _values_and_grads(model, None)
        chunked = _values_and_grads(torch.nn.parallel.DistributedDataParallel(model), 3)
    finally:
        torch.distributed.destroy_process_group()
    for want, have in zip(full, chunked, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


def test_falls_back_to_full_logits_where_chunking_would_differ() -> None:
    lora_head = add_lora(_tiny_llama(), LoraSection(r=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(ChunkingUnsupportedError, match="output head is a Linear"):  # peft's lora.Linear
        split_output_head(lora_head)
    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    assert gemma.config.final_logit_softcapping  # its logits are post-processed
    with pytest.raises(ChunkingUnsupportedError, match="model_type 'gemma2'"):
        split_output_head(gemma)
    for model in (lora_head, gemma):
        ids, attention = _batch()
        with torch.no_grad(), pytest.warns(UserWarning, match="full logits"):
            logp, _ = causal_lm_token_logprobs_entropy(model, ids, attention, position_ids_from_mask(attention), 2)
            logits = model(input_ids=ids, attention_mask=attention,
                           position_ids=position_ids_from_mask(attention)).logits
        torch.testing.assert_close(logp, token_logprobs(logits, ids))


def test_autocast_products_in_the_autocast_dtype_both_ways() -> None:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 9, 16, generator=generator, requires_grad=True)
    weight = torch.randn(40, 16, generator=generator, requires_grad=True)  # fp32 master weights
    labels = torch.randint(40, (2, 9), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.functional.linear(hidden, weight)
        assert logits.dtype == torch.bfloat16
        want = token_logprobs(logits, labels)
        have, _ = chunked_token_logprobs(hidden, weight, labels, 4)
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)  # the same bf16 logits, normalised in fp32
    expected = torch.autograd.grad(want.sum(), (hidden, weight))
    got = torch.autograd.grad(have.sum(), (hidden, weight))
    for want_grad, have_grad in zip(expected, got, strict=True):
        assert have_grad.dtype == torch.float32
        torch.testing.assert_close(have_grad, want_grad, rtol=2e-2, atol=2e-2 * want_grad.abs().max().item())


def test_an_output_left_out_of_the_loss_contributes_nothing() -> None:
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    weight = torch.randn(20, 8, generator=generator)
    labels = torch.randint(20, (2, 5), generator=generator)
    logp, entropy = _full(hidden, weight, None, labels, 1.0)
    chunked_logp, chunked_entropy = chunked_token_logprobs(hidden, weight, labels, 3, with_entropy=True)
    for want, have in ((logp, chunked_logp), (entropy, chunked_entropy)):  # the other output gets no gradient
        torch.testing.assert_close(torch.autograd.grad(have.sum(), hidden, retain_graph=True)[0],
                                   torch.autograd.grad(want.sum(), hidden, retain_graph=True)[0])


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    from rlhf_ray.models import init_model

    corpus = ["Where is my parcel? It left the depot this morning.", "Can I get a refund? Yes, it is on its way."]
    return str(init_model(corpus * 20, tmp_path_factory.mktemp("policy"), "tiny", seed=0).path)


def test_learner_and_reference_give_the_same_figures_and_gradients_chunked(tiny_policy: str) -> None:
    from rlhf_ray.roles.learner import PolicyLearner
    from rlhf_ray.roles.scoring import ReferenceModel

    ids = torch.randint(5, 200, (4, 12), generator=torch.Generator().manual_seed(5))
    attention = torch.ones_like(ids)
    attention[0, :3] = 0
    response = attention.clone()
    response[:, :6] = 0
    settings = {"seed": 0, "lr": 1e-2, "weight_decay": 0.0, "max_grad_norm": 1.0, "epochs": 1, "num_minibatches": 1,
                "policy_loss": "ppo", "clip_eps": 0.2, "dual_clip": None, "entropy_coef": 0.01, "kl_loss_coef": 0.0}
    results = []
    for budget in (None, 5):  # whole logits, then 5 of the 44 tokens at a time
        learner = PolicyLearner(tiny_policy, 1, {**settings, "logprob_token_budget": budget})
        learner.init_group(*learner.address(), rank=0)
        split_output_head(learner.engine.model)  # the chunked path is taken, not the fallback
        old = learner.logprobs(ids, attention)
        minibatch = {"input_ids": ids, "attention_mask": attention, "response_mask": response,
                     "old_logprobs": old[:, 5:] - 0.1, "advantages": torch.linspace(-1, 1, 6).expand(4, 6)}
        learner.model.train()
        loss, extras = learner.minibatch_loss(minibatch)
        loss.backward()
        reference = ReferenceModel(tiny_policy, micro_batch_size=3, token_budget=budget).logprobs(ids, attention)
        results.append((old, reference, loss.detach(), torch.tensor(extras["entropy"]),
                        *(p.grad for p in learner.model.parameters())))
    for want, have in zip(*results, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-6)
