"""Prompts by split: train (what the policy learns on), validation (what sweeps, gates and early stopping choose
on) and test (what is reported). A `PromptSource` is anything that hands out those three lists; the world's
lives in `rlhf_ray.inputs.world`, a user's prompt files are read by `FilePromptSource`.

A prompt file row holds a `prompt` text or `messages`, an OpenAI-style conversation ([{role, content}], roles
system / user / assistant). A conversation is kept up to and including its last user turn (a trailing assistant
reply is the answer being asked for again, not part of the prompt); `Prompt.messages` is the kept conversation,
which the policy's chat template renders for generation (`rlhf_ray.training.encoding`), and `Prompt.text` its
`conversation_text`, the form reward models and judges score (and `rlhf-ray import` stores).
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
PROMPT_FIELD, ID_FIELD, MESSAGES_FIELD = "prompt", "prompt_id", "messages"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text (what scorers read: `conversation_text`) and, when it came as a conversation, the
    conversation up to and including its last user turn (None for a plain text or a lone user turn)."""

    prompt_id: str
    text: str
    messages: tuple[Mapping[str, str], ...] | None = None

    @property
    def conversation(self) -> str | tuple[Mapping[str, str], ...]:
        """What a chat template renders: the messages when there are any, else the text."""
        return self.messages if self.messages is not None else self.text


ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def conversation_text(conversation: str | Sequence[Mapping[str, str]]) -> str:
    """The one text a prompt is scored and stored as (reward models, judges, `rlhf-ray import`'s contract rows): a
    plain text or a lone user turn as it is, else a transcript, one block per turn (`System: …`, `User: …`,
    `Assistant: …`) separated by a blank line, the last user turn last. Generation renders the conversation itself
    with the chat template; scorers trained on imported rows see prompts in the form they were trained on."""
    if isinstance(conversation, str):
        return conversation
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return conversation[0]["content"]
    return "\n\n".join(f"{ROLE_LABELS[turn['role']]}: {turn['content']}" for turn in conversation)


class PromptSource(Protocol):
    """Where a run's prompts come from."""

    def split(self, name: SplitName) -> Sequence[Prompt]:
        """The prompts of one split, in a fixed order."""
        ...


class PromptFilesSection(StrictModel):
    """A user's prompt files (JSONL or Parquet; one row per prompt with a `prompt` text or `messages`, and an
    optional `prompt_id`), one file per split. A split without a file cannot be asked for."""

    train: str = Field(description="prompts the policy is trained on")
    validation: str | None = Field(None, description="prompts sweeps, gates and early stopping choose on")
    test: str | None = Field(None, description="prompts the final figures are reported on")


class PromptFileError(ValueError):
    """A prompt file is missing, unreadable, or lacks a usable `prompt` or `messages` field."""


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


def _conversation(where: str, messages: object) -> tuple[dict[str, str], ...]:
    """`messages` checked and cut after its last user turn."""
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f"{where}: field {MESSAGES_FIELD!r} must be a non-empty list of {{role, content}}; "
                              f"got {messages!r}")
    kept = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise PromptFileError(f"{where}: messages[{index}] must have role in {list(ROLES)} and a string content; "
                                  f"got {message!r}")
        kept.append({"role": role, "content": content})
    last_user = max((i for i, m in enumerate(kept) if m["role"] == "user"), default=None)
    if last_user is None or not kept[last_user]["content"].strip():
        raise PromptFileError(f"{where}: messages need a non-empty user turn; got roles "
                              f"{[m['role'] for m in kept]}")
    return tuple(kept[: last_user + 1])


def read_prompt_file(path: str | Path) -> tuple[Prompt, ...]:
    """Rows with a non-empty string `prompt` or a `messages` conversation; `prompt_id` defaults to a content
    hash (of the text, or of the conversation when it has more than its user turn), so the same prompt gets the
    same id in every file and run."""
    path = Path(path)
    prompts = []
    for number, row in enumerate(_rows(path), start=1):
        where = f"{path} row {number}"
        row = row if isinstance(row, dict) else {}
        messages = None
        if row.get(MESSAGES_FIELD) is not None and row.get(PROMPT_FIELD) is None:
            messages = _conversation(where, row[MESSAGES_FIELD])
            text = conversation_text(messages)
        else:
            text = row.get(PROMPT_FIELD)
            if not isinstance(text, str) or not text.strip():
                raise PromptFileError(f"{where}: field {PROMPT_FIELD!r} must be a non-empty string; got {text!r} "
                                      f"(or give {MESSAGES_FIELD!r}, a conversation)")
        if messages is not None and len(messages) == 1:
            messages = None  # a lone user turn is a plain prompt: same id, same rendering
        hashed = text if messages is None else json.dumps(messages, sort_keys=True)
        prompt_id = row.get(ID_FIELD) or f"p-{sha256_hex(hashed.encode())[:16]}"
        prompts.append(Prompt(str(prompt_id), text, messages))
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
