"""Model helpers: an offline tokenizer, tiny/small Llama presets, and loaders that never touch a hub."""

from rlhf_ray.models.loading import ModelNotFoundError, load_causal_lm, load_tokenizer, resolve_model_path
from rlhf_ray.models.tiny import (
    PRESETS,
    ModelCard,
    ModelPreset,
    build_model,
    count_parameters,
    get_preset,
    init_model,
)
from rlhf_ray.models.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "PRESETS",
    "SPECIAL_TOKENS",
    "ModelCard",
    "ModelNotFoundError",
    "ModelPreset",
    "build_model",
    "count_parameters",
    "get_preset",
    "init_model",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model_path",
    "train_tokenizer",
]
