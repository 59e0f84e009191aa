"""A reward model: a causal-LM backbone with a scalar head on the last real token.

Saved as a directory: the backbone (`save_pretrained`, loadable with `AutoModel`), the tokenizer, the
head weights and `reward_config.json` with the normalisation statistics, so scores from two versions of
the model are comparable (r̂ = (r − μ) / σ).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel

from rlhf_ray.models.loading import resolve_model_path

HEAD_FILE = "reward_head.pt"
CONFIG_FILE = "reward_config.json"


class RewardModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        self.mean = mean
        self.std = std

    @classmethod
    def from_causal_lm(cls, path: str | os.PathLike[str], seed: int = 0) -> RewardModel:
        """Start from any local causal-LM checkpoint: its transformer body becomes the backbone."""
        backbone = AutoModel.from_pretrained(resolve_model_path(path), local_files_only=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(backbone)
            nn.init.normal_(model.head.weight, std=1.0 / backbone.config.hidden_size)
            nn.init.zeros_(model.head.bias)
        return model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Raw reward per sequence: head(h_last), h_last = hidden state at the last non-padding position."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        return self.head(hidden[torch.arange(hidden.shape[0]), last]).squeeze(-1)

    def normalized(self, rewards: Tensor) -> Tensor:
        return (rewards - self.mean) / self.std

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Same name as transformers models, so checkpointing code treats every model alike."""
        path = Path(directory)
        self.backbone.save_pretrained(path)
        torch.save(self.head.state_dict(), path / HEAD_FILE)
        (path / CONFIG_FILE).write_text(json.dumps({"mean": self.mean, "std": self.std}, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RewardModel:
        path = resolve_model_path(directory)
        settings = json.loads((path / CONFIG_FILE).read_text())
        model = cls(AutoModel.from_pretrained(path, local_files_only=True), settings["mean"], settings["std"])
        model.head.load_state_dict(torch.load(path / HEAD_FILE, weights_only=True))
        return model
