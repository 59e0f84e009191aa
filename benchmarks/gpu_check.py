"""The GPU path without Ray: PPO's roles and the SFT step as plain classes on one device, in bf16.

    python benchmarks/gpu_check.py --device cuda --size medium     # one GPU: ≈ 0.3B-parameter Llama, ≤ 3 minutes
    python benchmarks/gpu_check.py --device cpu --size tiny        # the CPU smoke test CI runs

Imports torch, transformers and peft (through `rlhf_ray`), never Ray or vLLM; DeepSpeed only when importable. The
model is built offline: a tokenizer trained on the simulated world's corpus and a Llama of the size's shape
(tiny ≈ 1M, small ≈ 13M, medium ≈ 0.3B parameters), saved in bf16. Then, each section timed, on `--device`:

    sft         SFT steps (fp32 master weights, bf16 autocast) on one fixed batch: the loss must fall
    rollout     HFBackend generation in bf16: generated tokens/s
    scorers     reference log-probs and reward-model rewards loaded in bf16 vs fp32: max |Δ| over real tokens
    learner     a GRPO step of PolicyLearner (bf16 autocast) on the rollout, rewarded by the bf16 reward scorer
    zero3       one ZeRO-3 rank (DeepSpeed) takes the same step, exports one HF checkpoint that reloads to the
                gathered weights; skipped with the reason when DeepSpeed is absent
    memory      peak memory (CUDA: max allocated; CPU: max resident set)

A section that fails records its error and the script exits 1 after printing one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_ray.algos.advantages import AdvantageSettings
from rlhf_ray.models import init_model, load_causal_lm, load_tokenizer
from rlhf_ray.models.placement import autocast_for, resolve_device
from rlhf_ray.roles.engines import TorchEngine
from rlhf_ray.roles.learner import PolicyLearner
from rlhf_ray.roles.scoring import ReferenceModel, RewardScorer
from rlhf_ray.rollout import pack_samples
from rlhf_ray.rollout.backends import GenerationParams, HFBackend
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.training.encoding import batch_conversations, encode_conversations
from rlhf_ray.training.experience import build_experience
from rlhf_ray.training.reward_model import RewardModel
from rlhf_ray.training.steps import sft_batch_loss

# The medium shape (≈ 0.3B parameters at an 8k vocabulary): a small Llama whose speed on a GPU means something.
MEDIUM = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 8,
          "intermediate_size": 2816, "max_position_embeddings": 1024}
# Per size: SFT steps, rows per batch, rollout prompts, group size G, new tokens per sample.
WORKLOAD = {"tiny": (4, 2, 2, 2, 8), "small": (8, 8, 8, 4, 32), "medium": (10, 16, 16, 4, 64)}
DTYPE = "bfloat16"
ROWS = [("How do I reset my password?", "Open settings, choose security, then reset password."),
        ("Summarise the refund policy.", "Refunds are issued within five days of a return."),
        ("Where is my package?", "Use the tracking number in your confirmation email."),
        ("How do I change my email?", "Go to account settings and edit the email field.")]


def build(root: Path, size: str, device: torch.device) -> tuple[str, str, int]:
    """(policy dir, reward-model dir, parameters): the world's tokenizer and a Llama of `size` saved in bf16."""
    corpus = World(WorldConfig(num_prompts=200), 0).corpus()
    base = init_model(corpus, root / "policy", "small" if size == "medium" else size, seed=0)
    model = load_causal_lm(base.path)
    if size == "medium":  # same tokenizer and special ids, the medium shape; initialised on the device (fast)
        config = model.config
        for key, value in MEDIUM.items():
            setattr(config, key, value)
        generation = model.generation_config
        with torch.device(device):
            torch.manual_seed(0)
            model = type(model)(config)
        model.generation_config = generation
    model.to(torch.bfloat16).save_pretrained(base.path)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    reward = RewardModel.from_causal_lm(base.path, seed=0)
    reward.save_pretrained(root / "rm")
    load_tokenizer(base.path).save_pretrained(root / "rm")
    return str(base.path), str(root / "rm"), parameters


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sft(policy: str, device: torch.device, size: str) -> dict[str, Any]:
    """SFT steps on one fixed batch (fp32 weights, bf16 autocast): the first and last loss, tokens/s after the
    first (warm-up) step."""
    steps, rows, *_ = WORKLOAD[size]
    model, tokenizer = load_causal_lm(policy).to(device).train(), load_tokenizer(policy)
    engine = TorchEngine(model, {"lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": 1.0, "dtype": DTYPE})
    batch = {"prompt": [ROWS[i % len(ROWS)][0] for i in range(rows)],
             "response": [ROWS[i % len(ROWS)][1] for i in range(rows)]}
    tokens = int(encode_conversations(tokenizer, batch_conversations(batch), 256)["attention_mask"].sum())
    losses, started = [], 0.0
    for step in range(steps):
        if step == 1:
            synchronize(device)
            started = time.perf_counter()
        with autocast_for(model, DTYPE):
            loss, _ = sft_batch_loss(engine.model, tokenizer, batch, 256)
        engine.step(loss)
        losses.append(loss.item())
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1], "loss_fell": losses[-1] < losses[0],
            "train_tokens_per_s": tokens * (steps - 1) / seconds}


def rollout(policy: str, device: torch.device, size: str) -> tuple[dict[str, Any], list]:
    """bf16 HF generation of G samples per prompt; generated tokens/s (after a warm-up call)."""
    _, _, prompts, group, new_tokens = WORKLOAD[size]
    backend = HFBackend(policy, device=str(device), dtype=DTYPE, max_batch_size=prompts * group)
    texts = [ROWS[i % len(ROWS)][0] for i in range(prompts)]
    ids = [f"p{i}" for i in range(prompts)]
    params = GenerationParams(max_new_tokens=new_tokens, temperature=1.0, seed=0)
    backend.generate(texts[:1], ids[:1], 1, GenerationParams(max_new_tokens=2, seed=0))
    synchronize(device)
    started = time.perf_counter()
    samples = backend.generate(texts, ids, group, params)
    synchronize(device)
    seconds = time.perf_counter() - started
    generated = sum(len(s.response_ids) for s in samples)
    return {"samples": len(samples), "generated_tokens": generated, "generate_tokens_per_s": generated / seconds,
            "weights_dtype": str(next(backend.model.parameters()).dtype)}, samples


def scorers(policy: str, reward: str, device: torch.device, samples: list) -> tuple[dict[str, Any], dict]:
    """Reference log-probs and RM rewards with weights loaded in bf16 vs fp32: max |Δ| over real tokens."""
    pad = load_tokenizer(policy).pad_token_id
    sequences = pack_samples(samples, pad)
    ids, mask = sequences["input_ids"], sequences["attention_mask"]
    real = mask[:, 1:].bool()
    low = ReferenceModel(policy, device=str(device), dtype=DTYPE).logprobs(ids, mask)
    full = ReferenceModel(policy, device=str(device), dtype="float32").logprobs(ids, mask)
    prompts, responses = [s.prompt for s in samples], [s.response for s in samples]
    bf16_scorer = RewardScorer(reward, max_length=256, device=str(device), dtype=DTYPE)
    rewards = torch.tensor(bf16_scorer.score(prompts, responses)["total"])
    fp32_rewards = torch.tensor(RewardScorer(reward, max_length=256, device=str(device)).score(prompts,
                                                                                            responses)["total"])
    figures = {"reference_logprob_max_abs_delta": (low - full).abs()[real].max().item(),
               "reference_logprob_mean_abs_delta": (low - full).abs()[real].mean().item(),
               "reward_max_abs_delta": (rewards - fp32_rewards).abs().max().item()}
    return figures, {"sequences": sequences, "reference": low, "rewards": rewards}


def learner_settings(device: torch.device) -> dict[str, Any]:
    return {"seed": 0, "lr": 1e-5, "weight_decay": 0.0, "max_grad_norm": 1.0, "epochs": 1, "num_minibatches": 1,
            "policy_loss": "ppo", "clip_eps": 0.2, "dual_clip": None, "entropy_coef": 0.0, "kl_loss_coef": 0.05,
            "device": str(device), "dtype": DTYPE, "use_gpu": device.type == "cuda"}


def grpo_step(learner: PolicyLearner, scored: dict, group: int) -> tuple[dict[str, float], float, int]:
    """One GRPO update of `learner` on the scored rollout: (figures, seconds, tokens)."""
    sequences = scored["sequences"]
    old = learner.logprobs(sequences["input_ids"], sequences["attention_mask"])
    experience, _ = build_experience(sequences, old, scored["reference"], None, scored["rewards"], "grpo",
                                     AdvantageSettings(group_size=group), 0.05, "k3")
    synchronize(learner.device)
    started = time.perf_counter()
    figures = learner.train(experience)
    synchronize(learner.device)
    return figures, time.perf_counter() - started, int(sequences["attention_mask"].sum())


def learner(policy: str, device: torch.device, size: str, scored: dict) -> dict[str, Any]:
    role = PolicyLearner(policy, 1, learner_settings(device))
    role.init_group(*role.address(), rank=0)
    figures, seconds, tokens = grpo_step(role, scored, WORKLOAD[size][3])
    return {**figures, "step_s": seconds, "train_tokens_per_s": tokens / seconds,
            "weights_dtype": str(next(role.model.parameters()).dtype)}


def zero3(policy: str, device: torch.device, size: str, scored: dict, root: Path) -> dict[str, Any]:
    """One ZeRO-3 rank takes the GRPO step; its export (one HF checkpoint) reloads to the gathered weights."""
    if importlib.util.find_spec("deepspeed") is None:
        return {"skipped": "DeepSpeed is not installed here (carry its wheel to run ZeRO-3)"}
    from transformers import AutoModelForCausalLM

    settings = {**learner_settings(device), "batch_size": len(scored["rewards"]),
                "deepspeed": {"zero_stage": 3, "bf16": device.type == "cuda", "overrides": {}}}
    # DeepSpeed's autocast is its own bf16 section: the role's forward runs in its weights' dtype
    settings["dtype"] = "float32"
    role = PolicyLearner(policy, 1, settings)
    role.init_group(*role.address(), rank=0)
    figures, seconds, _ = grpo_step(role, scored, WORKLOAD[size][3])
    published = role.publish()
    role.save_model(str(root / "zero3-export"))
    reloaded = AutoModelForCausalLM.from_pretrained(root / "zero3-export", local_files_only=True).state_dict()
    same = published.keys() <= reloaded.keys() and all(torch.equal(reloaded[k].to(v.dtype), v)
                                                       for k, v in published.items())
    placeholders = sorted({tuple(p.shape) for p in role.model.parameters()})
    return {"loss": figures["loss"], "step_s": seconds, "partitioned": placeholders == [(0,)],
            "export_reload_equal": same, "export_files": sorted(os.listdir(root / "zero3-export"))}


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"cuda_max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    return {"cpu_max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_section(report: dict[str, Any], name: str, work: Callable[[], Any]) -> Any:
    """`work()`'s figures under `name` with its seconds; an exception is recorded, not raised."""
    started = time.perf_counter()
    try:
        result = work()
    except Exception as error:  # one failing section must not hide the others' figures
        report[name] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc(limit=-4)}
        return None
    figures, extra = result if isinstance(result, tuple) else (result, None)
    report[name] = {**figures, "seconds": round(time.perf_counter() - started, 3)}
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--size", choices=sorted(WORKLOAD), default="medium")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    started = time.perf_counter()
    report: dict[str, Any] = {"device": str(device), "size": args.size, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        built = run_section(report, "build", lambda: ({}, build(root, args.size, device)))
        if built is not None:
            policy, reward, parameters = built
            report["build"]["parameters"] = parameters
            run_section(report, "sft", lambda: sft(policy, device, args.size))
            samples = run_section(report, "rollout", lambda: rollout(policy, device, args.size))
            scored = None
            if samples is not None:
                scored = run_section(report, "scorers", lambda: scorers(policy, reward, device, samples))
            if scored is not None:
                run_section(report, "learner", lambda: learner(policy, device, args.size, scored))
                run_section(report, "zero3", lambda: zero3(policy, device, args.size, scored, root))
        report["memory"] = peak_memory(device)
        report["total_s"] = round(time.perf_counter() - started, 2)
        failed = sorted(name for name, value in report.items() if isinstance(value, dict) and "error" in value)
        report["failed"] = failed
    print(json.dumps(report), flush=True)
    # DeepSpeed's CPU shm-comm thread can abort interpreter teardown; everything is printed by now
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
