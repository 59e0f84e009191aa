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
import shutil
import uuid
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_ray.models.options import read_chat_template
from rlhf_ray.models.tokenizer import NAMED_TEMPLATES
from rlhf_ray.storage import swap_in_directory

# Weight files are linked into a prepared checkpoint rather than copied; everything else (config, tokenizer,
# template) is copied, so writing the tokenizer there can never write through a link into the user's directory.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

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
    resize. Batches mark padding by their attention mask, so pad may equal eos. The choice is in memory only:
    `save_tokenizer` writes the tokenizer without it, as it was given."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise ValueError(f"tokenizer of {tokenizer.name_or_path!r} has no pad, unk or eos token to pad with; "
                             "add a pad token to the checkpoint's tokenizer")
        tokenizer.pad_token = fallback
        tokenizer.rlhf_ray_chosen_pad = True
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike[str]) -> None:
    """`save_pretrained`, leaving out a pad token `ensure_pad_token` chose: a saved pad equal to eos would make
    other tools (which often mask labels by pad id) stop teaching the model to end its turns."""
    chosen = tokenizer.pad_token if getattr(tokenizer, "rlhf_ray_chosen_pad", False) else None
    if chosen is None:
        tokenizer.save_pretrained(directory)
        return
    tokenizer.pad_token = None
    try:
        tokenizer.save_pretrained(directory)
    finally:
        tokenizer.pad_token = chosen


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

    `dtype=None` loads in torch's default dtype (float32), `"auto"` in the checkpoint's own dtype. None is passed
    on as that dtype, since transformers ≥ 5 would load a bf16 checkpoint in bf16: a trained model keeps fp32
    master weights whatever the checkpoint was saved in (`rlhf_ray.models.placement`).
    """
    path = resolve_model_path(name_or_path)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                dtype=torch.get_default_dtype() if dtype is None else dtype)


def prepare_checkpoint(model_path: str | os.PathLike[str], chat_template: str | None,
                       work_dir: str | os.PathLike[str]) -> str:
    """The checkpoint directory a job trains and generates from, so every component (Ray Train workers,
    rollout workers, scorers) and every checkpoint saved later carries the same chat template.

    Without `chat_template` it is `model_path` itself, once its tokenizer is known to have a template
    (`require_chat_template`). With one it is `<work_dir>/base-model`: the checkpoint with weight files linked,
    the rest copied, and the tokenizer saved with that template; the user's directory is never written.
    """
    source = resolve_model_path(model_path)
    tokenizer = load_tokenizer(source, chat_template)
    require_chat_template(tokenizer)
    if chat_template is None:
        return str(source)
    target = Path(work_dir).absolute() / "base-model"
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        staging.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            elif item.suffix in WEIGHT_SUFFIXES:
                (staging / item.name).symlink_to(item.resolve())
            else:
                shutil.copy2(item, staging / item.name)
        save_tokenizer(tokenizer, staging)
        swap_in_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
