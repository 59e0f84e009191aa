"""The layout of a training checkpoint (SFT, reward model, DPO): an HF model directory that loads on its own,
the trainer state and the optimizer state to resume from. Plain files, so a checkpoint written by a Ray
Train worker resumes anywhere, and `jobs.training` can publish its model directory.

With LoRA the model directory holds plain weights with the adapters merged (what every later stage loads), and
`adapters.safetensors` beside it the unmerged trainable tensors (adapters and heads): a resume puts them back
on the base model, so adapters and optimizer state continue exactly where they stopped."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rlhf_ray.models.loading import save_tokenizer
from rlhf_ray.models.lora import load_trainable_state, save_merged, trainable_state_dict, uses_lora
from rlhf_ray.roles.engines import UpdateEngine, full_parameters
from rlhf_ray.training.reward_model import CONFIG_FILE, HEAD_FILE, RewardModel
from rlhf_ray.training.steps import unwrap_model

MODEL_DIR = "model"
STATE_FILE = "trainer_state.json"
LEGACY_STATE_FILE = "trainer_state.pt"  # checkpoints written before the state was JSON
ADAPTER_FILE = "adapters.safetensors"


def save_model(model: torch.nn.Module, directory: str) -> None:
    """Plain HF weights that load without peft: a LoRA model's adapters merged in (a reward model's backbone,
    with its heads and settings beside it as `RewardModel.save_pretrained` writes them)."""
    model = unwrap_model(model)
    if isinstance(model, RewardModel) and uses_lora(model.backbone):
        os.makedirs(directory, exist_ok=True)
        save_merged(model.backbone, directory)
        torch.save(model.head.state_dict(), os.path.join(directory, HEAD_FILE))
        with open(os.path.join(directory, CONFIG_FILE), "w") as stream:
            json.dump(model.settings(), stream, indent=2)
    else:
        save_merged(model, directory)


def load_adapters(model: torch.nn.Module, directory: str) -> None:
    """Put a LoRA checkpoint's adapters and heads back into `model` (the base model, freshly wrapped)."""
    path = os.path.join(directory, ADAPTER_FILE)
    if not os.path.exists(path):
        raise ValueError(f"checkpoint {directory!r} has no {ADAPTER_FILE}: it was trained without model.lora, so it "
                         "cannot resume a LoRA run; resume it without model.lora, or start from its model/ directory")
    load_trainable_state(model, load_file(path))


def refuse_adapters(directory: str) -> None:
    """A LoRA checkpoint's optimizer state covers its adapters only: it cannot resume a run training every weight."""
    if os.path.exists(os.path.join(directory, ADAPTER_FILE)):
        raise ValueError(f"checkpoint {directory!r} was trained with model.lora; resume it with the same model.lora, "
                         f"or start a new run from its {MODEL_DIR}/ directory (the merged model)")


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, engine: UpdateEngine, state: dict[str, Any],
                    directory: str, rank: int) -> None:
    """A checkpoint is an HF model directory (loadable on its own; LoRA merged), the trainer state, the optimizer
    state (whole from rank 0 under DDP, one partition per rank under ZeRO) and, with LoRA, the adapters to resume
    from. Every rank calls it: under ZeRO-3 the whole model is gathered on every rank while rank 0 writes the
    model directory (a partitioned model's own state is empty placeholders)."""
    with full_parameters(model):
        if rank == 0:
            save_model(model, os.path.join(directory, MODEL_DIR))
            save_tokenizer(tokenizer, os.path.join(directory, MODEL_DIR))
            if uses_lora(model):
                save_file(trainable_state_dict(unwrap_model(model)), os.path.join(directory, ADAPTER_FILE))
    if rank == 0:
        with open(os.path.join(directory, STATE_FILE), "w") as stream:
            json.dump(state, stream)
    engine.save(directory, rank)


def load_trainer_state(directory: str) -> tuple[str, dict[str, Any]]:
    """The model directory inside a checkpoint and the trainer state saved beside it (step, epoch): JSON, or in
    an older checkpoint a torch file, read weights-only (plain values; nothing in it can run code)."""
    path = os.path.join(directory, STATE_FILE)
    if os.path.exists(path):
        with open(path) as stream:
            state = json.load(stream)
    else:
        state = torch.load(os.path.join(directory, LEGACY_STATE_FILE), weights_only=True)
    return os.path.join(directory, MODEL_DIR), state
