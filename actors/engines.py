"""How a Ray Train worker turns a loss into a parameter update: plain PyTorch (AdamW, DDP via
`ray.train.torch.prepare_model`) or a DeepSpeed ZeRO engine. The train loops call `step(loss)` and never
branch on which one they have.

Checkpointing differs: the DDP optimizer state is whole on every rank, so rank 0 saves it; ZeRO partitions
the optimizer state, so every rank saves its shard and Ray Train merges the workers' files into one
checkpoint directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import torch

OPTIMIZER_FILE = "optimizer.pt"
DEEPSPEED_TAG = "deepspeed"


class UpdateEngine(Protocol):
    model: torch.nn.Module  # what the loop calls forward on (DDP wrapper or DeepSpeed engine)

    def step(self, loss: torch.Tensor) -> None: ...

    def save(self, directory: str, rank: int) -> None: ...

    def load(self, directory: str) -> None: ...


class TorchEngine:
    """AdamW + global-norm clipping over a DDP-wrapped model."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any],
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> None:
        """`wrap` makes the data-parallel model (default: Ray Train's `prepare_model`, i.e. DDP in a worker)."""
        if wrap is None:
            import ray.train.torch

            wrap = ray.train.torch.prepare_model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        self.model = wrap(model)
        self.max_grad_norm = config["max_grad_norm"]

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()

    def save(self, directory: str, rank: int) -> None:
        if rank == 0:
            torch.save(self.optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))

    def load(self, directory: str) -> None:
        self.optimizer.load_state_dict(torch.load(os.path.join(directory, OPTIMIZER_FILE), weights_only=False))


def deepspeed_config(config: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON config from the train settings: ZeRO stage, AdamW, clipping, micro-batch size.

    On CPU the optimizer is torch's AdamW (`torch_adam`), since DeepSpeed's fused Adam needs CUDA; bf16 only
    on GPU. Any key of `config["deepspeed"]["overrides"]` replaces the generated one."""
    settings = config["deepspeed"]
    generated = {
        "train_micro_batch_size_per_gpu": config["batch_size"],
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config["max_grad_norm"],
        "zero_optimization": {"stage": settings["zero_stage"]},
        "optimizer": {"type": "AdamW", "params": {"lr": config["lr"], "weight_decay": config["weight_decay"],
                                                  "torch_adam": not use_gpu}},
        "bf16": {"enabled": bool(use_gpu and settings["bf16"])},
        "steps_per_print": 10**9,
    }
    return {**generated, **settings["overrides"]}


class DeepSpeedEngine:
    """A DeepSpeed ZeRO engine on the process group Ray Train already set up (gloo on CPU, NCCL on GPU)."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any]) -> None:
        import deepspeed

        use_gpu = torch.cuda.is_available() and config["use_gpu"]
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(config, use_gpu))

    def step(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)
        self.model.step()

    def save(self, directory: str, rank: int) -> None:
        # collective: every rank writes its ZeRO optimizer partition under the same tag
        self.model.save_checkpoint(directory, tag=DEEPSPEED_TAG)

    def load(self, directory: str) -> None:
        self.model.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True)


def make_engine(model: torch.nn.Module, config: dict[str, Any]) -> UpdateEngine:
    return DeepSpeedEngine(model, config) if config.get("deepspeed") else TorchEngine(model, config)
