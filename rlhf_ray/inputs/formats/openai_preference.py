"""OpenAI preference fine-tuning JSONL: `{"input": {"messages": [...]}, "preferred_output": [assistant message],
"non_preferred_output": [assistant message]}`. The preferred output is the chosen answer."""

from __future__ import annotations

from typing import Any

from rlhf_ray.contracts import Source
from rlhf_ray.inputs.formats.base import (
    ImportContext,
    answer_of,
    conversation_prompt,
    messages_of,
    nested,
    pairwise_row,
    require,
)

NAME = "openai-preference"


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    require(record, "input")
    prompt = conversation_prompt(messages_of(nested(record, "input.messages"), "input.messages"), "input.messages")
    chosen = answer_of(require(record, "preferred_output"), "preferred_output")
    rejected = answer_of(require(record, "non_preferred_output"), "non_preferred_output")
    return [pairwise_row(ctx, (number,), prompt, chosen, rejected, source=Source.ANNOTATOR, actor_id=NAME)]
