"""Loading models and tokenizers from local checkpoint directories only: rlhf-ray never downloads.

Every loader resolves its argument to an existing directory first and calls `from_pretrained` with
`local_files_only=True`, so a typo or a hub id fails at once with a clear message instead of a network
attempt, a hang on an air-gapped cluster, or a silently different model. `HF_HUB_OFFLINE` set by the
operator is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EXPECTED = "expected a local Hugging Face checkpoint directory containing config.json"
HOW_TO_BUILD = ("rlhf-ray never downloads from a model hub; "
                "build a model offline with `rlhf-ray init-model --out DIR`")


class ModelNotFoundError(ValueError):
    """A model reference that is not a usable local checkpoint directory."""


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


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local checkpoint directory."""
    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), local_files_only=True)


def load_causal_lm(
    name_or_path: str | os.PathLike[str], dtype: torch.dtype | str | None = None
) -> PreTrainedModel:
    """The causal LM saved in a local checkpoint directory, in eval mode.

    `dtype=None` loads in torch's default dtype (float32), `"auto"` in the checkpoint's own dtype.
    """
    path = resolve_model_path(name_or_path)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
