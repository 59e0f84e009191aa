"""The layout of a training checkpoint (SFT, reward model, DPO): an HF model directory that loads on its own,
the trainer state and the optimizer state to resume from. Plain files, so a checkpoint written by a Ray
Train worker resumes anywhere, and `jobs.training` can publish its model directory."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from rlhf_ray.models.loading import save_tokenizer
from rlhf_ray.roles.engines import UpdateEngine
from rlhf_ray.training.steps import unwrap_model

MODEL_DIR = "model"
STATE_FILE = "trainer_state.json"
LEGACY_STATE_FILE = "trainer_state.pt"  # checkpoints written before the state was JSON


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, engine: UpdateEngine, state: dict[str, Any],
                    directory: str, rank: int) -> None:
    """A checkpoint is an HF model directory (loadable on its own), the trainer state and the optimizer state
    (whole from rank 0 under DDP, one partition per rank under ZeRO) to resume from."""
    if rank == 0:
        unwrap_model(model).save_pretrained(os.path.join(directory, MODEL_DIR))
        save_tokenizer(tokenizer, os.path.join(directory, MODEL_DIR))
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
