"""The PPO critic's model: a transformer backbone with a scalar value head on every position.

`values[b, t] = head(h[b, t])` estimates the return after token t, i.e. the value of the state in which token
t+1 is chosen, so `values[:, :-1]` lines up with `token_logprobs` (column t−1 ↔ token t). The backbone is
loaded with `AutoModel`, so the critic can start from the policy (a causal-LM directory) or, as is common,
from the reward model's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel

from rlhf_ray.models.loading import resolve_model_path

VALUE_HEAD_FILE = "value_head.pt"


class ValueModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> ValueModel:
        """A critic from any local backbone directory (in float32, whatever dtype it was saved in: the critic
        trains); a saved critic gets its trained head back."""
        directory = resolve_model_path(path)
        model = cls(AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32))
        if (directory / VALUE_HEAD_FILE).exists():
            model.head.load_state_dict(torch.load(directory / VALUE_HEAD_FILE, weights_only=True))
        return model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """[B, T] value at every position."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
        return self.head(hidden).squeeze(-1)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        self.backbone.save_pretrained(directory)
        torch.save(self.head.state_dict(), Path(directory) / VALUE_HEAD_FILE)
