"""Ray Train worker loops. Each runs on every worker of a `TorchTrainer`: DDP over gloo on CPU (NCCL on GPU),
data from `ray.train.get_dataset_shard`, metrics and checkpoints through `ray.train.report`, resume from
`ray.train.get_checkpoint`."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint

from actors.engines import UpdateEngine, make_engine
from rlhf_ray.algos.logprobs import sequence_logprob
from rlhf_ray.algos.preference import bradley_terry_loss, dpo_loss, preference_accuracy
from rlhf_ray.algos.sft import sft_loss
from rlhf_ray.evaluation.reward_model import reward_model_report
from rlhf_ray.models import load_causal_lm, load_tokenizer
from rlhf_ray.training.encoding import encode_chat
from rlhf_ray.training.reward_model import RewardModel

MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, engine: UpdateEngine, state: dict[str, Any],
                    directory: str, rank: int) -> None:
    """A checkpoint is an HF model directory (loadable on its own), the trainer state and the optimizer state
    (whole from rank 0 under DDP, one partition per rank under ZeRO) to resume from."""
    if rank == 0:
        _unwrap(model).save_pretrained(os.path.join(directory, MODEL_DIR))
        tokenizer.save_pretrained(os.path.join(directory, MODEL_DIR))
        torch.save(state, os.path.join(directory, STATE_FILE))
    engine.save(directory, rank)


def _restore(model_path: str, resume_from: str | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """The model to start from, the checkpoint directory and the trainer state: the run's latest checkpoint
    after a worker restart, else an earlier run's checkpoint named by `resume_from`, else the base model."""
    checkpoint = ray.train.get_checkpoint()
    directory = checkpoint.to_directory() if checkpoint is not None else resume_from
    if directory is None:
        return model_path, None, None
    state = torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
    return os.path.join(directory, MODEL_DIR), directory, state


def heldout_sft_loss(model: torch.nn.Module, tokenizer: Any, examples: list[dict[str, str]], batch_size: int,
                     max_length: int) -> float:
    """Token-weighted mean response NLL over the held-out examples (the same on every worker)."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            chunk = examples[first : first + batch_size]
            batch = encode_chat(tokenizer, [e["prompt"] for e in chunk], [e["response"] for e in chunk], max_length)
            logits = _unwrap(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            count = int(batch["response_mask"][:, 1:].sum())
            total += float(sft_loss(logits, batch["input_ids"], batch["response_mask"])) * count
            tokens += count
    model.train()
    return total / max(1, tokens)


def _report(metrics: dict[str, Any], save: Callable[[str], None]) -> None:
    """Every worker reports; each attaches the files it saved (Ray Train merges them into one checkpoint)."""
    with tempfile.TemporaryDirectory() as directory:
        save(directory)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory) if os.listdir(directory) else None)


def _start(config: dict[str, Any], load: Callable[[str, bool], torch.nn.Module]) -> tuple[Any, ...]:
    """Seed, load the model (from the base or a checkpoint), build the update engine (DDP + AdamW or DeepSpeed)
    and restore its optimizer state when resuming.

    Returns (model to call forward on, tokenizer, engine, trainer state or None)."""
    torch.manual_seed(config["seed"])
    start_path, directory, state = _restore(config["model_path"], config["resume_from"])
    tokenizer = load_tokenizer(start_path)
    model = load(start_path, state is not None)
    model.train()
    engine = make_engine(model, config)
    if directory is not None:
        engine.load(directory)
    return engine.model, tokenizer, engine, state


def _train_epochs(job: str, model: torch.nn.Module, tokenizer: Any, engine: UpdateEngine,
                  config: dict[str, Any], state: dict[str, Any] | None,
                  batch_loss: Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, float]]],
                  evaluate: Callable[[], dict[str, Any]], throughput_key: str | None = None) -> None:
    """The epoch loop every trainer shares: shard batches → loss → engine step (clipped AdamW); every
    `log_every` steps a JSON line (rank 0) with the recent means; per epoch, the mean of `train_loss` and of
    each extra batch figure, `evaluate()`'s held-out figures, a JSON line, and a report with a checkpoint."""
    step, first_epoch = (state["step"], state["epoch"] + 1) if state else (0, 0)
    shard = ray.train.get_dataset_shard("train")
    context = ray.train.get_context()
    for epoch in range(first_epoch, config["epochs"]):
        figures: dict[str, list[float]] = {"train_loss": []}
        seen, started = 0, time.perf_counter()
        for batch in shard.iter_batches(batch_size=config["batch_size"], batch_format="numpy",
                                        local_shuffle_buffer_size=config["shuffle_buffer"],
                                        local_shuffle_seed=config["seed"] + epoch):
            seen += len(batch["prompt"])
            loss, extras = batch_loss(batch)
            engine.step(loss)
            step += 1
            for name, value in {"train_loss": loss.item(), **extras}.items():
                figures.setdefault(name, []).append(value)
            if step % config["log_every"] == 0 and context.get_world_rank() == 0:
                recent = {name: float(np.mean(v[-config["log_every"]:])) for name, v in figures.items()}
                print(json.dumps({"job": job, "epoch": epoch, "step": step, **recent}), flush=True)
        metrics: dict[str, Any] = {"epoch": epoch, "step": step,
                                   **{name: float(np.mean(v)) if v else 0.0 for name, v in figures.items()}}
        if throughput_key:
            metrics[throughput_key] = seen * context.get_world_size() / (time.perf_counter() - started)
        metrics.update(evaluate())
        print(json.dumps({"job": job, "rank": context.get_world_rank(), **metrics}), flush=True)
        saved = {"step": step, "epoch": epoch}
        _report(metrics, lambda directory, saved=saved: save_checkpoint(model, tokenizer, engine, saved, directory,
                                                                        context.get_world_rank()))


def _prefixed(prefix: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in figures.items()}


def sft_loop(config: dict[str, Any]) -> None:
    """Fine-tune a causal LM on (prompt, response) rows; loss on response tokens only."""
    model, tokenizer, engine, state = _start(config, lambda path, _: load_causal_lm(path))

    def batch_loss(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        encoded = encode_chat(tokenizer, list(batch["prompt"]), list(batch["response"]), config["max_length"])
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        return sft_loss(logits, encoded["input_ids"], encoded["response_mask"]), {}

    def evaluate() -> dict[str, Any]:
        return {"heldout_loss": heldout_sft_loss(model, tokenizer, config["heldout"], config["batch_size"],
                                                 config["max_length"])}

    _train_epochs("sft", model, tokenizer, engine, config, state, batch_loss, evaluate)


def pair_rewards(model: torch.nn.Module, tokenizer: Any, prompts: list[str], chosen: list[str], rejected: list[str],
                 max_length: int, per_objective: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of chosen and rejected answers ([B], or [B, K] per objective) from one pass over 2B sequences."""
    encoded = encode_chat(tokenizer, prompts + prompts, chosen + rejected, max_length)
    rewards = model(encoded["input_ids"], encoded["attention_mask"], per_objective=per_objective)
    return rewards[: len(prompts)], rewards[len(prompts) :]


def evaluate_reward_model(model: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]], batch_size: int,
                          max_length: int) -> dict[str, Any]:
    """The held-out report (accuracy vs truth, calibration, verbosity diagnostics) of the current weights."""
    reward_model = _unwrap(model)
    reward_model.eval()
    chosen, rejected = [], []
    with torch.no_grad():
        for first in range(0, len(pairs), batch_size):
            chunk = pairs[first : first + batch_size]
            rc, rr = pair_rewards(reward_model, tokenizer, [p["prompt"] for p in chunk],
                                  [p["chosen"] for p in chunk], [p["rejected"] for p in chunk], max_length,
                                  per_objective=True)
            chosen.append(rc)
            rejected.append(rr)
    reward_model.train()
    per_chosen, per_rejected = torch.cat(chosen), torch.cat(rejected)
    words = np.array([[len(p["chosen"].split()), len(p["rejected"].split())] for p in pairs], dtype=float)
    utilities = np.array([[p["chosen_utility"], p["rejected_utility"]] for p in pairs])
    report = reward_model_report(reward_model.combine(per_chosen).numpy(), reward_model.combine(per_rejected).numpy(),
                                 words[:, 0], words[:, 1], utilities[:, 0], utilities[:, 1])
    if len(reward_model.objectives) > 1:
        for k, objective in enumerate(reward_model.objectives):
            report[f"accuracy/{objective}"] = float(preference_accuracy(per_chosen[:, k], per_rejected[:, k]))
    return report


def reward_model_loop(config: dict[str, Any]) -> None:
    """Bradley–Terry on (prompt, chosen, rejected, weight) rows; held-out truth report every epoch."""
    objectives = config["objectives"]
    model, tokenizer, engine, state = _start(
        config, lambda path, resuming: RewardModel.load(path) if resuming else RewardModel.from_causal_lm(
            path, config["seed"], objectives))
    head_of = {name: k for k, name in enumerate(objectives)}

    def batch_loss(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        per_chosen, per_rejected = pair_rewards(model, tokenizer, list(batch["prompt"]), list(batch["chosen"]),
                                                list(batch["rejected"]), config["max_length"], per_objective=True)
        # each pair trains the head of its own objective: r_c = r_chosen[b, k_b], r_r = r_rejected[b, k_b]
        rows = torch.arange(len(batch["prompt"]))
        heads = torch.as_tensor([head_of[name] for name in batch["objective"]])
        rc, rr = per_chosen[rows, heads], per_rejected[rows, heads]
        weights = torch.as_tensor(batch["weight"], dtype=rc.dtype) if config["use_pair_weights"] else None
        return bradley_terry_loss(rc, rr, weights=weights), {"train_accuracy": float(preference_accuracy(rc, rr))}

    def evaluate() -> dict[str, Any]:
        return _prefixed("heldout_", evaluate_reward_model(model, tokenizer, config["heldout"],
                                                           config["batch_size"], config["max_length"]))

    _train_epochs("train-rm", model, tokenizer, engine, config, state, batch_loss, evaluate,
                  throughput_key="train_pairs_per_s")


def pair_logprobs(model: torch.nn.Module, tokenizer: Any, prompts: list[str], chosen: list[str], rejected: list[str],
                  max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ log π(response | prompt) of chosen and rejected answers, from one forward pass over 2B sequences."""
    encoded = encode_chat(tokenizer, prompts + prompts, chosen + rejected, max_length)
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    logps = sequence_logprob(logits, encoded["input_ids"], encoded["response_mask"])
    return logps[: len(prompts)], logps[len(prompts) :]


def evaluate_dpo(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]],
                 beta: float, batch_size: int, max_length: int) -> dict[str, float]:
    """Implicit-reward accuracy on held-out truth pairs: does β·(log π − log π_ref) rank them correctly?"""
    policy.eval()
    margins = []
    with torch.no_grad():
        for first in range(0, len(pairs), batch_size):
            chunk = pairs[first : first + batch_size]
            args = ([p["prompt"] for p in chunk], [p["chosen"] for p in chunk], [p["rejected"] for p in chunk])
            pc, pr = pair_logprobs(_unwrap(policy), tokenizer, *args, max_length)
            rc, rr = pair_logprobs(reference, tokenizer, *args, max_length)
            margins.append(beta * ((pc - rc) - (pr - rr)))
    policy.train()
    margin = torch.cat(margins)
    return {"reward_accuracy": float((margin > 0).float().mean()), "reward_margin": float(margin.mean())}


def dpo_loop(config: dict[str, Any]) -> None:
    """DPO/IPO/hinge on preference rows against a frozen reference copy of the starting policy."""
    policy, tokenizer, engine, state = _start(config, lambda path, _: load_causal_lm(path))
    reference = load_causal_lm(config["reference_path"]).eval().requires_grad_(False)

    def batch_loss(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        args = (list(batch["prompt"]), list(batch["chosen"]), list(batch["rejected"]))
        policy_chosen, policy_rejected = pair_logprobs(policy, tokenizer, *args, config["max_length"])
        with torch.no_grad():
            ref_chosen, ref_rejected = pair_logprobs(reference, tokenizer, *args, config["max_length"])
        weights = torch.as_tensor(batch["weight"], dtype=policy_chosen.dtype)
        output = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, config["beta"],
                          config["loss_type"], config["label_smoothing"],
                          weights=weights if config["use_pair_weights"] else None)
        return output.loss, {"train_reward_accuracy": float((output.margins > 0).float().mean())}

    def evaluate() -> dict[str, Any]:
        return _prefixed("heldout_", evaluate_dpo(policy, reference, tokenizer, config["heldout"], config["beta"],
                                                  config["batch_size"], config["max_length"]))

    _train_epochs("dpo", policy, tokenizer, engine, config, state, batch_loss, evaluate)
