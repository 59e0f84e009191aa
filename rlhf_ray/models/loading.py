"""Loading models and tokenizers from local checkpoint directories only: rlhf-ray never downloads.

Every loader resolves its argument to an existing directory first and calls `from_pretrained` with
`local_files_only=True`, so a typo or a hub id fails at once with a clear message instead of a network
attempt, a hang on an air-gapped cluster, or a silently different model. `HF_HUB_OFFLINE` set by the
operator is left as it is.

A tokenizer is used as the checkpoint ships it, with two exceptions made in memory (and kept by every
checkpoint saved from it): `model.chat_template` replaces or supplies the chat template, and a tokenizer
without a pad token gets an existing token as its pad (unk, else eos), so the embeddings are never resized.
Padding is always marked by the attention mask, never by comparing ids with `pad_token_id`, so a pad
equal to eos is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_ray.models.options import read_chat_template
from rlhf_ray.models.tokenizer import NAMED_TEMPLATES

EXPECTED = "expected a local Hugging Face checkpoint directory containing config.json"
HOW_TO_BUILD = ("rlhf-ray never downloads from a model hub; "
                "build a model offline with `rlhf-ray init-model --out DIR`")


class ModelNotFoundError(ValueError):
    """A model reference that is not a usable local checkpoint directory."""


class MissingChatTemplateError(ValueError):
    """A tokenizer without a chat template where one is needed to render conversations."""


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The absolute checkpoint directory `name_or_path` names, or `ModelNotFoundError` saying why not."""
    value = os.fspath(name_or_path)
    path = Path(value).expanduser()
    if not path.is_dir():
        problem = "is a file, not a directory" if path.exists() else "is not a directory on this machine"
        raise ModelNotFoundError(f"model {value!r} {problem}; {EXPECTED}. {HOW_TO_BUILD}")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model directory {value!r} has no config.json; {EXPECTED}. {HOW_TO_BUILD}")
    return path.absolute()


def load_tokenizer(name_or_path: str | os.PathLike[str], chat_template: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local checkpoint directory, with `chat_template` (a `model.chat_template` spec:
    chatml, llama3 or a .jinja path) in place of its own when given, and a pad token (`ensure_pad_token`)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), local_files_only=True)
    if chat_template is not None:
        tokenizer.chat_template = read_chat_template(chat_template)
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token an existing one (unk, else eos): no new token, so no embedding
    resize. Batches mark padding by their attention mask, so pad may equal eos."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise ValueError(f"tokenizer of {tokenizer.name_or_path!r} has no pad, unk or eos token to pad with; "
                             "add a pad token to the checkpoint's tokenizer")
        tokenizer.pad_token = fallback
    return tokenizer


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer that has no chat template, saying how to supply one."""
    if not tokenizer.chat_template:
        raise MissingChatTemplateError(
            f"model {tokenizer.name_or_path!r} has no chat template, so conversations cannot be rendered in its "
            f"format; set model.chat_template to one of {sorted(NAMED_TEMPLATES)} or to the path of a .jinja "
            "template (e.g. `model.chat_template=chatml`)")


def load_causal_lm(
    name_or_path: str | os.PathLike[str], dtype: torch.dtype | str | None = None
) -> PreTrainedModel:
    """The causal LM saved in a local checkpoint directory, in eval mode.

    `dtype=None` loads in torch's default dtype (float32), `"auto"` in the checkpoint's own dtype.
    """
    path = resolve_model_path(name_or_path)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
