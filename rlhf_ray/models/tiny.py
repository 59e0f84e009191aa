"""Small causal LMs built locally from named size presets, so every job runs offline on a CPU.

A preset is data, not a branch: add a size by adding a `ModelPreset` to `PRESETS`, an architecture by adding
its config and model classes to `ARCHITECTURES`. Llama is the default; Qwen2 and GPT-NeoX stand in for the
foreign checkpoints users bring (with the `chatml` / `llama3` chat formats of `rlhf_ray.models.tokenizer`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rlhf_ray.models.tokenizer import get_chat_format, train_tokenizer
from rlhf_ray.storage import swap_in_directory

# architecture name → (config class, model class); GPT-NeoX has no grouped-query attention (no kv heads).
ARCHITECTURES: Mapping[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = MappingProxyType({
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "gpt_neox": (GPTNeoXConfig, GPTNeoXForCausalLM),
})


def get_architecture(name: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    """The (config, model) classes of `name`; an unknown name fails naming the value and the choices."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


@dataclass(frozen=True)
class ModelPreset:
    """Shape of a model; `vocab_size` is the tokenizer's target, the model takes the real one."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True

    def llama_config(self, vocab_size: int | None = None, **token_ids: int | list[int] | None) -> LlamaConfig:
        """The LlamaConfig of this shape; `token_ids` are pad/bos/eos ids from the tokenizer."""
        return LlamaConfig(
            vocab_size=vocab_size or self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            **token_ids,
        )

    def model_config(self, architecture: str = "llama", vocab_size: int | None = None,
                     **token_ids: int | list[int] | None) -> PretrainedConfig:
        """The config of this shape for `architecture` (`ARCHITECTURES`)."""
        config_class, _ = get_architecture(architecture)
        if config_class is LlamaConfig:
            return self.llama_config(vocab_size, **token_ids)
        shape = self.llama_config(vocab_size).to_dict()
        keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "tie_word_embeddings"]
        if config_class is not GPTNeoXConfig:
            keys.append("num_key_value_heads")
        return config_class(**{key: shape[key] for key in keys}, **token_ids)

    def num_parameters(self, vocab_size: int | None = None, architecture: str = "llama") -> int:
        """Parameter count of this shape, from a weightless (meta-device) model: no memory, no init cost."""
        _, model_class = get_architecture(architecture)
        with torch.device("meta"):
            return count_parameters(model_class(self.model_config(architecture, vocab_size)))


PRESETS: Mapping[str, ModelPreset] = MappingProxyType({
    # ≈ 1M parameters at the full vocabulary: fast enough for every CPU test and end-to-end job.
    "tiny": ModelPreset(vocab_size=2048, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=344),
    # ≈ 12.6M parameters at the full vocabulary: more capacity for GPU runs and longer CPU runs.
    "small": ModelPreset(vocab_size=8192, hidden_size=384, num_hidden_layers=8, num_attention_heads=6,
                         num_key_value_heads=2, intermediate_size=1024),
})


@dataclass(frozen=True)
class ModelCard:
    """What `init_model` wrote: where, which preset, and the figures lineage and reports quote."""

    path: Path
    size: str
    architecture: str
    chat_format: str
    num_parameters: int
    vocab_size: int
    config: Mapping[str, int | bool]


def get_preset(size: str) -> ModelPreset:
    """The preset named `size`; an unknown name fails naming the value and the choices."""
    if size not in PRESETS:
        raise ValueError(f"unknown model size {size!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[size]


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters: `parameters()` yields a tied embedding/LM-head weight once, so it counts once."""
    return sum(parameter.numel() for parameter in model.parameters())


def build_model(tokenizer: PreTrainedTokenizerFast, size: str, seed: int, architecture: str = "llama",
                chat_format: str = "native") -> PreTrainedModel:
    """A freshly initialised `architecture` model sized by the preset, with the tokenizer's vocabulary and
    special ids; its generation config stops at eos and at the chat format's end-of-turn marker.

    Initialisation draws from a forked RNG seeded with `seed`, so the same seed gives the same weights
    and the caller's global torch RNG is left untouched.
    """
    _, model_class = get_architecture(architecture)
    config = get_preset(size).model_config(
        architecture,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(
        list(get_chat_format(chat_format).generation_eos))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def init_model(
    texts: Iterable[str], out_dir: str | os.PathLike[str], size: str = "tiny", seed: int = 0,
    architecture: str = "llama", chat_format: str = "native", pad_token: bool = True,
) -> ModelCard:
    """Train a tokenizer on `texts`, build a `size` model, and save both as one HF checkpoint directory.

    `architecture` is one of `ARCHITECTURES` (llama, qwen2, gpt_neox), `chat_format` one of `CHAT_FORMATS`
    (native, chatml, llama3); `pad_token=False` saves a tokenizer without a pad token (as Qwen2 ships).
    The directory appears complete or not at all: everything is written to a temporary sibling first
    and renamed onto `out_dir`, so a crash never leaves a half-written checkpoint that loads.
    """
    preset = get_preset(size)
    get_architecture(architecture)
    tokenizer = train_tokenizer(texts, preset.vocab_size, preset.max_position_embeddings, chat_format, pad_token)
    model = build_model(tokenizer, size, seed, architecture, chat_format)
    path = Path(out_dir).expanduser().absolute()
    _save_atomic(path, model, tokenizer)
    return ModelCard(
        path=path,
        size=size,
        architecture=architecture,
        chat_format=chat_format,
        num_parameters=count_parameters(model),
        vocab_size=len(tokenizer),
        config=MappingProxyType(_config_summary(model.config)),
    )


def _config_summary(config: PretrainedConfig) -> dict[str, int | bool]:
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "max_position_embeddings", "tie_word_embeddings")
    return {key: getattr(config, key) for key in keys if hasattr(config, key)}


def _save_atomic(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Save (safetensors) into `.<name>.tmp-<id>` beside `path`, then swap it in (`swap_in_directory`); the
    hidden prefix keeps temporaries out of storage listings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        swap_in_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

