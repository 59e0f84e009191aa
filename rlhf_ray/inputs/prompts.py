"""Prompts by split: train (what the policy learns on), validation (what sweeps, gates and early stopping choose
on) and test (what is reported). A `PromptSource` is anything that hands out those three lists; the world's
lives in `rlhf_ray.inputs.world`, a user's prompt files are read by `FilePromptSource`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal, Protocol, get_args

import pyarrow.parquet as pq
from pydantic import Field

from rlhf_ray.config import StrictModel
from rlhf_ray.lineage.hashing import sha256_hex

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = get_args(SplitName)
PROMPT_FIELD, ID_FIELD = "prompt", "prompt_id"


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str


class PromptSource(Protocol):
    """Where a run's prompts come from."""

    def split(self, name: SplitName) -> Sequence[Prompt]:
        """The prompts of one split, in a fixed order."""
        ...


class PromptFilesSection(StrictModel):
    """A user's prompt files (JSONL or Parquet; one row per prompt with a `prompt` text and an optional
    `prompt_id`), one file per split. A split without a file cannot be asked for."""

    train: str = Field(description="prompts the policy is trained on")
    validation: str | None = Field(None, description="prompts sweeps, gates and early stopping choose on")
    test: str | None = Field(None, description="prompts the final figures are reported on")


class PromptFileError(ValueError):
    """A prompt file is missing, unreadable, or lacks a usable `prompt` field."""


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise PromptFileError(f"prompt file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix != ".jsonl":
        raise PromptFileError(f"prompt file {str(path)!r}: expected a .jsonl or .parquet file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}:{number}: not a JSON object ({error.msg})") from None
    return rows


def read_prompt_file(path: str | Path) -> tuple[Prompt, ...]:
    """Rows with a non-empty string `prompt`; `prompt_id` defaults to a content hash of the text, so the same
    prompt gets the same id in every file and run."""
    path = Path(path)
    prompts = []
    for number, row in enumerate(_rows(path), start=1):
        text = row.get(PROMPT_FIELD) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{path} row {number}: field {PROMPT_FIELD!r} must be a non-empty string; got "
                                  f"{text!r}")
        prompt_id = row.get(ID_FIELD) or f"p-{sha256_hex(text.encode())[:16]}"
        prompts.append(Prompt(str(prompt_id), text))
    if not prompts:
        raise PromptFileError(f"prompt file {str(path)!r} holds no prompts")
    return tuple(prompts)


class FilePromptSource:
    """Prompts read from a user's files, one per split (read once, on first use)."""

    def __init__(self, files: PromptFilesSection | Mapping[str, str | None]) -> None:
        self.files = files if isinstance(files, PromptFilesSection) else PromptFilesSection(**files)

    @cached_property
    def _splits(self) -> dict[str, tuple[Prompt, ...]]:
        return {name: read_prompt_file(path) for name in SPLITS if (path := getattr(self.files, name))}

    def split(self, name: SplitName) -> Sequence[Prompt]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {name!r}")
        if name not in self._splits:
            raise PromptFileError(f"no prompt file for the {name!r} split: set prompts.{name}")
        return self._splits[name]
