"""A reward model: a causal-LM backbone with one scalar head per objective on the last real token.

Objectives are `preference` (overall quality, from pairwise/ranking/rating pairs) and optionally rubric
criteria (`helpfulness`, `correctness`, `safety`, `concision`), each trained by Bradley–Terry on its own pairs.
The reward is their weighted sum, r = Σ_k w_k · r_k, with the weights fixed at training time and saved, so a
verbosity-biased helpfulness signal can be balanced by concision and safety instead of dominating.

Saved as a directory: the backbone (`save_pretrained`, loadable with `AutoModel`), the tokenizer, the
head weights and `reward_config.json` with the objectives, their weights and the normalisation statistics,
so scores from two versions of the model are comparable (r̂ = (r − μ) / σ).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel

from rlhf_ray.models.loading import resolve_model_path

HEAD_FILE = "reward_head.pt"
CONFIG_FILE = "reward_config.json"
DEFAULT_OBJECTIVES: dict[str, float] = {"preference": 1.0}


def check_objective_weights(weights: dict[str, float]) -> dict[str, float]:
    """The weights w_k of r = Σ_k w_k r_k: at least one, each ≥ 0, with a positive sum."""
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"objectives must map names to weights ≥ 0 with a positive sum; got {weights}")
    return weights


class RewardModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel, objectives: Mapping[str, float] | None = None, mean: float = 0.0,
                 std: float = 1.0) -> None:
        super().__init__()
        weights = check_objective_weights(dict(objectives or DEFAULT_OBJECTIVES))
        self.backbone = backbone
        self.objectives = tuple(weights)
        self.head = nn.Linear(backbone.config.hidden_size, len(self.objectives))
        self.register_buffer("objective_weights", torch.tensor([weights[k] for k in self.objectives]),
                             persistent=False)
        self.mean = mean
        self.std = std

    @classmethod
    def from_causal_lm(cls, path: str | os.PathLike[str], seed: int = 0,
                       objectives: Mapping[str, float] | None = None) -> RewardModel:
        """Start from any local causal-LM checkpoint: its transformer body becomes the backbone (in float32,
        whatever dtype it was saved in: it is about to train)."""
        backbone = AutoModel.from_pretrained(resolve_model_path(path), local_files_only=True, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(backbone, objectives)
            nn.init.normal_(model.head.weight, std=1.0 / backbone.config.hidden_size)
            nn.init.zeros_(model.head.bias)
        return model

    def objective_rewards(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, K] raw reward per objective: head(h_last), h_last = hidden state at the last non-padding position."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        return self.head(hidden[torch.arange(hidden.shape[0]), last])

    def combine(self, objective_rewards: Tensor) -> Tensor:
        """r = Σ_k w_k · r_k over the last dimension."""
        return objective_rewards @ self.objective_weights.to(objective_rewards.dtype)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, per_objective: bool = False) -> Tensor:
        """[B] combined raw reward, or [B, K] per objective (through `forward`, so a DDP wrapper syncs grads)."""
        rewards = self.objective_rewards(input_ids, attention_mask)
        return rewards if per_objective else self.combine(rewards)

    def normalized(self, rewards: Tensor) -> Tensor:
        return (rewards - self.mean) / self.std

    def settings(self) -> dict[str, object]:
        weights = self.objective_weights.tolist()
        return {"objectives": dict(zip(self.objectives, weights, strict=True)), "mean": self.mean, "std": self.std}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Same name as transformers models, so checkpointing code treats every model alike."""
        path = Path(directory)
        self.backbone.save_pretrained(path)
        torch.save(self.head.state_dict(), path / HEAD_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(self.settings(), indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], dtype: torch.dtype | None = None) -> RewardModel:
        """A saved reward model; `dtype` loads the backbone's weights directly in it (a frozen scorer in bf16),
        None in float32 (transformers ≥ 5 would otherwise keep the checkpoint's dtype)."""
        path = resolve_model_path(directory)
        settings = json.loads((path / CONFIG_FILE).read_text())
        dtype = torch.float32 if dtype is None else dtype
        model = cls(AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype), settings.get("objectives"),
                    settings["mean"], settings["std"])
        model.head.load_state_dict(torch.load(path / HEAD_FILE, weights_only=True))
        return model.to(dtype)
