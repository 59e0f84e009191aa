"""Model helpers: an offline tokenizer, tiny/small Llama/Qwen2/GPT-NeoX presets, chat formats, and loaders
that never touch a hub."""

from rlhf_ray.models.loading import (
    MissingChatTemplateError,
    ModelNotFoundError,
    ensure_pad_token,
    load_causal_lm,
    load_tokenizer,
    prepare_checkpoint,
    require_chat_template,
    resolve_model_path,
    save_tokenizer,
)
from rlhf_ray.models.options import LoraSection, ModelOptions
from rlhf_ray.models.tiny import (
    ARCHITECTURES,
    PRESETS,
    ModelCard,
    ModelPreset,
    build_model,
    count_parameters,
    get_preset,
    init_model,
)
from rlhf_ray.models.tokenizer import CHAT_FORMATS, CHAT_TEMPLATE, NAMED_TEMPLATES, SPECIAL_TOKENS, train_tokenizer

__all__ = [
    "ARCHITECTURES",
    "CHAT_FORMATS",
    "CHAT_TEMPLATE",
    "NAMED_TEMPLATES",
    "PRESETS",
    "SPECIAL_TOKENS",
    "LoraSection",
    "MissingChatTemplateError",
    "ModelCard",
    "ModelNotFoundError",
    "ModelOptions",
    "ModelPreset",
    "build_model",
    "count_parameters",
    "ensure_pad_token",
    "get_preset",
    "init_model",
    "load_causal_lm",
    "load_tokenizer",
    "prepare_checkpoint",
    "require_chat_template",
    "resolve_model_path",
    "save_tokenizer",
    "train_tokenizer",
]
