"""Anthropic HH-RLHF: `chosen` and `rejected` are whole transcripts of `\\n\\nHuman: …` / `\\n\\nAssistant: …`
turns that share every turn but the last. The shared turns are the prompt; each last Assistant turn an answer."""

from __future__ import annotations

import re
from typing import Any

from rlhf_ray.contracts import Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    conversation_prompt,
    pairwise_row,
    require,
    text_of,
)

NAME = "hh-rlhf"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def turns(transcript: Any, name: str) -> list[tuple[str, str]]:
    """(role, text) turns of a transcript; it must start with a turn marker and end with an Assistant turn."""
    text = text_of(transcript, name)
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise BadRecord("bad_transcript", name, "turns starting with '\\n\\nHuman:' or '\\n\\nAssistant:'", text)
    found = [(_ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if found[-1][0] != "assistant":
        raise BadRecord("bad_transcript", name, "a last turn by the Assistant", text)
    return found


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    chosen = turns(require(record, "chosen"), "chosen")
    rejected = turns(require(record, "rejected"), "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise BadRecord("mismatched_prompt", "rejected", "the same turns as chosen before the last answer")
    prompt = conversation_prompt(chosen[:-1], "chosen")
    return [pairwise_row(ctx, (number,), prompt, text_of(chosen[-1][1], "chosen"),
                         text_of(rejected[-1][1], "rejected"), source=Source.ANNOTATOR, actor_id=NAME)]
