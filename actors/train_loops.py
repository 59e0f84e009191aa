"""Ray Train worker loops. Each runs on every worker of a `TorchTrainer`: DDP over gloo on CPU (NCCL on GPU),
data from `ray.train.get_dataset_shard`, metrics and checkpoints through `ray.train.report`, resume from
`ray.train.get_checkpoint`.

The per-batch losses, the held-out evaluations and the checkpoint layout are plain functions of the core
(`rlhf_ray.training.steps`, `rlhf_ray.training.checkpoint`); this module adds the epoch loop around them and
everything that talks to Ray Train."""

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

from rlhf_ray.models import LoraSection, load_causal_lm, load_tokenizer
from rlhf_ray.models.lora import add_lora
from rlhf_ray.models.placement import autocast_for, model_device, torch_dtype
from rlhf_ray.roles.engines import UpdateEngine, make_engine
from rlhf_ray.training.checkpoint import load_adapters, load_trainer_state, refuse_adapters, save_checkpoint
from rlhf_ray.training.reward_model import RewardModel
from rlhf_ray.training.steps import (
    BatchLoss,
    dpo_batch_loss,
    evaluate_dpo,
    evaluate_reward_model,
    heldout_sft_loss,
    reward_model_batch_loss,
    sft_batch_loss,
)


def _restore(model_path: str, resume_from: str | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """The model to start from, the checkpoint directory and the trainer state: the run's latest checkpoint
    after a worker restart, else an earlier run's checkpoint named by `resume_from`, else the base model."""
    checkpoint = ray.train.get_checkpoint()
    directory = checkpoint.to_directory() if checkpoint is not None else resume_from
    if directory is None:
        return model_path, None, None
    start_path, state = load_trainer_state(directory)
    return start_path, directory, state


def _report(metrics: dict[str, Any], save: Callable[[str], None]) -> None:
    """Every worker reports; each attaches the files it saved (Ray Train merges them into one checkpoint)."""
    with tempfile.TemporaryDirectory() as directory:
        save(directory)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory) if os.listdir(directory) else None)


def _start(config: dict[str, Any], load: Callable[[str, bool], torch.nn.Module]) -> tuple[Any, ...]:
    """Seed, load the model (from the base or a checkpoint), move it to this worker's device (Ray Train's
    `get_device()`: the worker's GPU with `use_gpu`, else the CPU), build the update engine (DDP + AdamW or
    DeepSpeed) and restore its optimizer state when resuming. With `config["lora"]` the model is the base with
    adapters (`add_lora`); a resumed run gets its checkpoint's adapters and heads back on that base.

    Returns (model to call forward on, tokenizer, engine, trainer state or None)."""
    import ray.train.torch  # in the worker only: the driver that imports these loops need not load it

    torch.manual_seed(config["seed"])
    start_path, directory, state = _restore(config["model_path"], config["resume_from"])
    tokenizer = load_tokenizer(start_path)
    if config.get("lora"):
        model = add_lora(load(config["model_path"], False), LoraSection(**config["lora"]))
        if directory is not None:
            load_adapters(model, directory)
    else:
        if directory is not None:
            refuse_adapters(directory)
        model = load(start_path, state is not None)
    # `prepare_model` would move it too, but the engine's fp16 grad scaler is built for the device it finds
    model.to(ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")).train()
    engine = make_engine(model, config, wrap=ray.train.torch.prepare_model)
    if directory is not None:
        engine.load(directory)
    return engine.model, tokenizer, engine, state


def _train_epochs(job: str, model: torch.nn.Module, tokenizer: Any, engine: UpdateEngine,
                  config: dict[str, Any], state: dict[str, Any] | None,
                  batch_loss: Callable[[dict[str, Any]], BatchLoss],
                  evaluate: Callable[[], dict[str, Any]], throughput_key: str | None = None) -> None:
    """The epoch loop every trainer shares: shard batches → loss → engine step (clipped AdamW); every
    `log_every` steps a JSON line (rank 0) with the recent means; per epoch, the mean of `train_loss` and of
    each extra batch figure, `evaluate()`'s held-out figures, a JSON line, and a report with a checkpoint.
    The loss's forward pass runs under autocast in `config["dtype"]` (the weights stay float32)."""
    step, first_epoch = (state["step"], state["epoch"] + 1) if state else (0, 0)
    shard = ray.train.get_dataset_shard("train")
    context = ray.train.get_context()
    for epoch in range(first_epoch, config["epochs"]):
        figures: dict[str, list[float]] = {"train_loss": []}
        seen, started = 0, time.perf_counter()
        for batch in shard.iter_batches(batch_size=config["batch_size"], batch_format="numpy",
                                        local_shuffle_buffer_size=config["shuffle_buffer"],
                                        local_shuffle_seed=config["seed"] + epoch):
            seen += len(next(iter(batch.values())))
            with autocast_for(model, config["dtype"]):
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
    """Fine-tune a causal LM on (prompt, response) or `messages` rows; loss on assistant tokens only."""
    model, tokenizer, engine, state = _start(config, lambda path, _: load_causal_lm(path))

    def batch_loss(batch: dict[str, Any]) -> BatchLoss:
        return sft_batch_loss(model, tokenizer, batch, config["max_length"])

    def evaluate() -> dict[str, Any]:
        return {"heldout_loss": heldout_sft_loss(model, tokenizer, config["heldout"], config["batch_size"],
                                                 config["max_length"])}

    _train_epochs("sft", model, tokenizer, engine, config, state, batch_loss, evaluate)


def reward_model_loop(config: dict[str, Any]) -> None:
    """Bradley–Terry on (prompt, chosen, rejected, weight) rows; held-out truth report every epoch."""
    objectives = config["objectives"]
    model, tokenizer, engine, state = _start(
        config, lambda path, resuming: RewardModel.load(path) if resuming else RewardModel.from_causal_lm(
            path, config["seed"], objectives))
    head_of = {name: k for k, name in enumerate(objectives)}

    def batch_loss(batch: dict[str, Any]) -> BatchLoss:
        return reward_model_batch_loss(model, tokenizer, batch, head_of, config["max_length"],
                                       config["use_pair_weights"])

    def evaluate() -> dict[str, Any]:
        return _prefixed("heldout_", evaluate_reward_model(model, tokenizer, config["heldout"],
                                                           config["batch_size"], config["max_length"]))

    _train_epochs("train-rm", model, tokenizer, engine, config, state, batch_loss, evaluate,
                  throughput_key="train_pairs_per_s")


def dpo_loop(config: dict[str, Any]) -> None:
    """DPO/IPO/hinge on preference rows against a frozen reference copy of the starting policy."""
    policy, tokenizer, engine, state = _start(config, lambda path, _: load_causal_lm(path))
    # frozen: loaded directly in the training dtype, on the policy's device
    reference = load_causal_lm(config["reference_path"], dtype=torch_dtype(config["dtype"]))
    reference = reference.to(model_device(policy)).eval().requires_grad_(False)

    def batch_loss(batch: dict[str, Any]) -> BatchLoss:
        return dpo_batch_loss(policy, reference, tokenizer, batch, beta=config["beta"], loss_type=config["loss_type"],
                              label_smoothing=config["label_smoothing"],
                              use_pair_weights=config["use_pair_weights"], max_length=config["max_length"])

    def evaluate() -> dict[str, Any]:
        return _prefixed("heldout_", evaluate_dpo(policy, reference, tokenizer, config["heldout"], config["beta"],
                                                  config["batch_size"], config["max_length"]))

    _train_epochs("dpo", policy, tokenizer, engine, config, state, batch_loss, evaluate)
