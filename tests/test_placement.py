"""The device and dtype policy (`rlhf_ray.models.placement`) on the CPU: every role's model sits on its configured
device in its configured dtype, the tensors reaching it are there too (recorded by hooks on the real model), bf16
frozen scorers agree with fp32 ones, the trained roles step under bf16 autocast with fp32 weights, the fp16 grad
scaler scales, unscales and skips an overflowing step, and bad values fail naming them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from actors.ppo_config import PPOEngineConfig
from rlhf_ray.algos.advantages import AdvantageSettings
from rlhf_ray.models import init_model, load_causal_lm, load_tokenizer
from rlhf_ray.models.placement import (
    Placement,
    autocast_for,
    model_device,
    process_group_backend,
    resolve_device,
    to_device,
    torch_dtype,
)
from rlhf_ray.roles.engines import TorchEngine
from rlhf_ray.roles.learner import Critic, PolicyLearner
from rlhf_ray.roles.scoring import ReferenceModel, RewardScorer
from rlhf_ray.rollout.backends import GenerationParams, HFBackend
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.training.config import TrainSection
from rlhf_ray.training.encoding import encode_chat
from rlhf_ray.training.experience import build_experience
from rlhf_ray.training.reward_model import RewardModel
from rlhf_ray.training.steps import sft_batch_loss

PROMPTS = ["where is my book package ?", "how do i reset my email password ?", "hi"]
RESPONSES = ["use the tracking number from your confirmation .", "open settings in the email app .", "hello ."]
OPTIMIZER = {"seed": 0, "lr": 1e-2, "weight_decay": 0.0, "max_grad_norm": 1.0, "epochs": 1, "num_minibatches": 1}
# bf16 keeps 8 mantissa bits: a tiny model's log-probs agree with fp32 to ~0.005 (measured), well within this
BF16_LOGPROB_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny causal LM and a reward model built from it."""
    root = tmp_path_factory.mktemp("placement")
    card = init_model(World(WorldConfig(num_prompts=40), 0).corpus(), root / "policy", "tiny", seed=0)
    RewardModel.from_causal_lm(card.path, seed=0).save_pretrained(root / "rm")
    load_tokenizer(card.path).save_pretrained(root / "rm")
    return {"policy": str(card.path), "rm": str(root / "rm")}


@pytest.fixture(scope="module")
def batch(models: dict[str, str]) -> dict[str, torch.Tensor]:
    return encode_chat(load_tokenizer(models["policy"]), PROMPTS, RESPONSES, 64)


@contextmanager
def record_inputs(model: torch.nn.Module, module: torch.nn.Module) -> Iterator[list[dict[str, object]]]:
    """Each forward of `model` records its tensor arguments' devices and `module`'s output dtype."""
    seen: list[dict[str, object]] = []

    def before(_: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        seen.append({"devices": {t.device for t in tensors}})

    def after(_: torch.nn.Module, __: tuple, output: torch.Tensor) -> None:
        seen[-1]["output_dtype"] = output.dtype

    handles = [model.register_forward_pre_hook(before, with_kwargs=True), module.register_forward_hook(after)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def parameter_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


# ---------------------------------------------------------------- the policy functions


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "cuda:", ""])
def test_a_bad_device_is_an_error_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match=f"device '{value}'.*auto \\| cpu \\| cuda \\| cuda:N"):
        resolve_device(value)
    with pytest.raises(ValueError, match=f"device '{value}'"):
        Placement(device=value)
    with pytest.raises(ValueError, match=r"learner\.device"):
        PPOEngineConfig(learner={"device": value})


def test_a_bad_dtype_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"dtype 'fp16'.*float32 \| bfloat16 \| float16"):
        torch_dtype("fp16")
    with pytest.raises(ValueError, match="reference_dtype"):
        PPOEngineConfig(reference_dtype="half")
    with pytest.raises(ValueError, match="dtype"):
        TrainSection(dtype="int8")


def test_cuda_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{spec}' asks for CUDA, but this process sees no GPU"):
            resolve_device(spec)
    assert resolve_device("auto") == torch.device("cpu")
    # a role asked for CUDA fails when it is built, before loading anything
    with pytest.raises(ValueError, match="asks for CUDA"):
        ReferenceModel("no-such-model", device="cuda")
    # and the PPO config refuses a CUDA role without a reserved GPU before any actor starts
    with pytest.raises(ValueError, match=re.escape("reward device 'cuda:0' needs a GPU, but reward.num_gpus=0")):
        PPOEngineConfig(reward={"device": "cuda:0"})


def test_the_process_group_backend_follows_the_model_not_the_machine() -> None:
    assert process_group_backend(torch.device("cpu")) == "gloo"
    assert process_group_backend(torch.device("cuda", 0)) == "nccl"


def test_fp16_with_deepspeed_and_placement_in_two_places_are_refused() -> None:
    with pytest.raises(ValueError, match="float16"):
        TrainSection(dtype="float16", deepspeed={"zero_stage": 1})
    with pytest.raises(ValueError, match="float16"):
        PPOEngineConfig(critic={"dtype": "float16", "deepspeed": {"zero_stage": 1}})
    with pytest.raises(ValueError, match=re.escape("rollout.backend_kwargs.dtype: set rollout.dtype instead")):
        PPOEngineConfig(rollout={"backend_kwargs": {"dtype": "bfloat16"}})
    config = PPOEngineConfig(rollout={"dtype": "bfloat16", "backend_kwargs": {"max_batch_size": 4}})
    assert config.rollout.worker_backend_kwargs() == {"max_batch_size": 4, "device": "auto", "dtype": "bfloat16"}


def test_to_device_moves_every_tensor_and_keeps_the_rest() -> None:
    batch = {"ids": torch.ones(2, 3, dtype=torch.long), "names": ["a", "b"], "n": 2}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["ids"].device == torch.device("cpu") and moved["names"] == ["a", "b"] and moved["n"] == 2
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU


# ---------------------------------------------------------------- frozen scorers load in their dtype


def test_a_bf16_reference_loads_in_bf16_and_agrees_with_fp32(models: dict[str, str], batch: dict) -> None:
    fp32 = ReferenceModel(models["policy"], device="cpu")
    bf16 = ReferenceModel(models["policy"], device="cpu", dtype="bfloat16")
    assert parameter_dtypes(fp32.model) == {torch.float32} and parameter_dtypes(bf16.model) == {torch.bfloat16}
    with record_inputs(bf16.model, bf16.model.lm_head) as seen:
        low = bf16.logprobs(batch["input_ids"], batch["attention_mask"])
    assert seen and all(s["devices"] == {model_device(bf16.model)} for s in seen)
    assert all(s["output_dtype"] == torch.bfloat16 for s in seen)
    full = fp32.logprobs(batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"][:, 1:].bool()
    delta = (low - full).abs()[mask].max().item()
    print(f"reference bf16 vs fp32 max |Δ log p| = {delta:.4f}")
    assert low.dtype == torch.float32 and low.device == torch.device("cpu")
    assert 0 < delta < BF16_LOGPROB_TOLERANCE  # close, and really computed in a lower precision


def test_a_bf16_reward_scorer_loads_in_bf16_and_agrees_with_fp32(models: dict[str, str]) -> None:
    fp32 = RewardScorer(models["rm"], max_length=64, device="cpu")
    bf16 = RewardScorer(models["rm"], max_length=64, device="cpu", dtype="bfloat16")
    rm = bf16.sources["rm"].model
    assert parameter_dtypes(rm) == {torch.bfloat16} and parameter_dtypes(fp32.sources["rm"].model) == {torch.float32}
    with record_inputs(rm, rm.head) as seen:
        low = torch.tensor(bf16.score(PROMPTS, RESPONSES)["rm"])
    assert seen and all(s["devices"] == {model_device(rm)} and s["output_dtype"] == torch.bfloat16 for s in seen)
    delta = (low - torch.tensor(fp32.score(PROMPTS, RESPONSES)["rm"])).abs().max().item()
    print(f"reward bf16 vs fp32 max |Δ r| = {delta:.4f}")
    assert delta < 0.02  # measured ≈ 0.0006


def test_the_hf_rollout_backend_generates_in_bf16(models: dict[str, str]) -> None:
    backend = HFBackend(models["policy"], device="cpu", dtype="bfloat16", max_batch_size=4)
    assert parameter_dtypes(backend.model) == {torch.bfloat16} and backend.device == torch.device("cpu")
    with record_inputs(backend.model, backend.model.lm_head) as seen:
        samples = backend.generate(PROMPTS[:2], ["p0", "p1"], 1, GenerationParams(max_new_tokens=4, seed=0))
    assert len(samples) == 2 and seen and all(s["output_dtype"] == torch.bfloat16 for s in seen)
    # the learner's fp32 weights load into the bf16 model, cast to its dtype
    backend.load_state_dict(load_causal_lm(models["policy"]).state_dict())
    assert parameter_dtypes(backend.model) == {torch.bfloat16}


# ---------------------------------------------------------------- trained roles: fp32 weights, autocast forward


def test_the_learner_and_critic_step_under_bf16_autocast_with_fp32_weights(models: dict[str, str],
                                                                          batch: dict) -> None:
    settings = {**OPTIMIZER, "device": "cpu", "dtype": "bfloat16"}
    learner = PolicyLearner(models["policy"], 1, {**settings, "policy_loss": "ppo", "clip_eps": 0.2,
                                                   "dual_clip": None, "entropy_coef": 0.0, "kl_loss_coef": 0.1})
    critic = Critic(models["policy"], 1, {**settings, "value_clip": 0.2})
    for role in (learner, critic):
        role.init_group(*role.address(), rank=0)
        assert process_group_backend(role.device) == "gloo" and model_device(role.model) == role.device
    # the "old" log-probs and values come from the same bf16 forward as the update's, so the first ratio is 1
    with record_inputs(learner.model, learner.model.lm_head) as scored:
        old = learner.logprobs(batch["input_ids"], batch["attention_mask"])
    with record_inputs(critic.model, critic.model.head) as valued:
        values = critic.values(batch["input_ids"], batch["attention_mask"])
    assert scored[0]["output_dtype"] == valued[0]["output_dtype"] == torch.bfloat16
    assert old.dtype == values.dtype == torch.float32 and old.device == values.device == torch.device("cpu")
    rows, _ = build_experience(batch, old, old, values, torch.tensor([1.0, -1.0, 0.5]), "gae", AdvantageSettings(),
                               0.05, "k1")
    before = {name: p.detach().clone() for name, p in learner.model.named_parameters()}
    with record_inputs(learner.model, learner.model.lm_head) as seen:
        figures = learner.train(rows)
    assert seen and all(s["devices"] == {learner.device} and s["output_dtype"] == torch.bfloat16 for s in seen)
    assert parameter_dtypes(learner.model) == {torch.float32}  # master weights stay fp32
    assert any(not torch.equal(before[name], p) for name, p in learner.model.named_parameters())
    assert all(math.isfinite(value) for value in figures.values())
    with record_inputs(critic.model, critic.model.head) as seen:
        value_figures = critic.train(rows)
    assert seen and all(s["output_dtype"] == torch.bfloat16 for s in seen)
    assert parameter_dtypes(critic.model) == {torch.float32}
    assert all(math.isfinite(value) for value in value_figures.values())


def test_an_sft_step_moves_its_batch_to_the_model_and_runs_in_autocast(models: dict[str, str]) -> None:
    model, tokenizer = load_causal_lm(models["policy"]), load_tokenizer(models["policy"])
    engine = TorchEngine(model, {**OPTIMIZER, "dtype": "bfloat16"})
    assert engine.scaler is None  # bf16 has fp32's range: no loss scaling
    rows = {"prompt": PROMPTS, "response": RESPONSES}
    with record_inputs(model, model.lm_head) as seen, autocast_for(model, "bfloat16"):
        loss, _ = sft_batch_loss(engine.model, tokenizer, rows, 64)
    engine.step(loss)
    assert seen[0]["devices"] == {model_device(model)} and seen[0]["output_dtype"] == torch.bfloat16
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_fp16_scales_the_loss_unscales_before_clipping_and_skips_an_overflow() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    engine = TorchEngine(model, {**OPTIMIZER, "dtype": "float16", "max_grad_norm": 1e9})
    assert engine.scaler is not None
    inputs, scale = torch.randn(8, 4), engine.scaler.get_scale()
    with autocast_for(model, "float16"):
        loss = model(inputs).float().pow(2).mean()
    assert model[0](inputs).dtype == torch.float32  # outside autocast: fp32
    loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]  # the true gradient, unscaled
    model.zero_grad()
    first = [p.detach().clone() for p in model.parameters()]
    with autocast_for(model, "float16"):
        loss = model(inputs).float().pow(2).mean()
    engine.step(loss)
    # the step used unscaled gradients (AdamW's first step moves each weight by ≈ lr·sign(g))
    for p, w, g in zip(model.parameters(), first, expected, strict=True):
        assert torch.allclose(p.grad, g, rtol=1e-2, atol=1e-4)
        assert not torch.equal(p.detach(), w)
    # an infinite loss: the scaler skips the step and halves its scale
    settled = [p.detach().clone() for p in model.parameters()]
    engine.step(model(inputs).pow(2).mean() * torch.tensor(float("inf")))
    assert all(torch.equal(p.detach(), w) for p, w in zip(model.parameters(), settled, strict=True))
    assert engine.scaler.get_scale() == scale / 2


def test_a_resumed_fp16_engine_keeps_its_loss_scale(tmp_path) -> None:
    """The checkpoint holds the scaler's state: a resumed run does not start again at the initial scale."""
    torch.manual_seed(0)
    settings = {**OPTIMIZER, "dtype": "float16"}
    saved = TorchEngine(torch.nn.Linear(4, 1), settings)
    saved.step(saved.model(torch.randn(3, 4)).sum())
    saved.step(saved.model(torch.randn(3, 4)).sum() * torch.tensor(float("inf")))  # overflow: the scale halves
    saved.save(str(tmp_path), 0)
    resumed = TorchEngine(torch.nn.Linear(4, 1), settings)
    assert resumed.scaler.get_scale() == 2 * saved.scaler.get_scale()  # a fresh scaler starts at the initial scale
    resumed.load(str(tmp_path))
    assert resumed.scaler.state_dict() == saved.scaler.state_dict()
    fp32 = TorchEngine(torch.nn.Linear(4, 1), OPTIMIZER)
    fp32.load(str(tmp_path))  # an fp32 run resumed from it has no scaler to restore
    assert fp32.scaler is None


def test_trained_models_keep_fp32_weights_from_a_bf16_checkpoint(models: dict[str, str], tmp_path) -> None:
    """transformers ≥ 5 loads a checkpoint in its saved dtype by default; the trained roles load fp32 anyway, and a
    frozen scorer asked for float32 gets float32."""
    load_causal_lm(models["policy"]).to(torch.bfloat16).save_pretrained(tmp_path)
    load_tokenizer(models["policy"]).save_pretrained(tmp_path)
    learner = PolicyLearner(str(tmp_path), 1, {**OPTIMIZER, "device": "cpu", "policy_loss": "ppo", "clip_eps": 0.2,
                                               "dual_clip": None, "entropy_coef": 0.0, "kl_loss_coef": 0.0})
    assert parameter_dtypes(learner.model) == {torch.float32}
    assert parameter_dtypes(Critic(str(tmp_path), 1, {**OPTIMIZER, "value_clip": 0.2}).model) == {torch.float32}
    assert parameter_dtypes(RewardModel.from_causal_lm(tmp_path)) == {torch.float32}
    assert parameter_dtypes(ReferenceModel(str(tmp_path), device="cpu").model) == {torch.float32}
