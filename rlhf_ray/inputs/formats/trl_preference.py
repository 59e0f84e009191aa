"""TRL preference datasets: `prompt`/`chosen`/`rejected` as text (standard) or message lists (conversational),
and the implicit-prompt form (no `prompt`: chosen and rejected repeat it), where the prompt is what the two share —
the common message prefix, or for text the common prefix cut back to the last space, as TRL's `extract_prompt`
does."""

from __future__ import annotations

from typing import Any

from rlhf_ray.contracts import Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    answer_of,
    conversation_prompt,
    messages_of,
    pairwise_row,
    require,
    text_of,
)

NAME = "trl-preference"


def _implicit_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    end = next((i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b),
               min(len(chosen), len(rejected)))
    if end > 0 and chosen[end - 1] == " ":
        end -= 1
    return chosen[:end], chosen[end:], rejected[end:]


def _implicit_messages(chosen: list, rejected: list) -> tuple[list, list, list]:
    end = next((i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b),
               min(len(chosen), len(rejected)))
    return chosen[:end], chosen[end:], rejected[end:]


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    chosen = require(record, ctx.field("chosen", "chosen"))
    rejected = require(record, ctx.field("rejected", "rejected"))
    prompt_value = record.get(ctx.field("prompt", "prompt"))
    if prompt_value is None:  # implicit prompt
        if isinstance(chosen, str) and isinstance(rejected, str):
            prompt_value, chosen, rejected = _implicit_text(chosen, rejected)
        elif isinstance(chosen, list) and isinstance(rejected, list):
            prompt_value, chosen, rejected = _implicit_messages(chosen, rejected)
        else:
            raise BadRecord("wrong_type", "rejected", "the same kind as chosen (both text or both messages)",
                            rejected)
    if isinstance(prompt_value, str):
        prompt = text_of(prompt_value, "prompt")
    else:
        prompt = conversation_prompt(messages_of(prompt_value, "prompt"), "prompt")
    return [pairwise_row(ctx, (number,), prompt, answer_of(chosen, "chosen"), answer_of(rejected, "rejected"),
                         source=Source.ANNOTATOR, actor_id=NAME)]
