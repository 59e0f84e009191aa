"""Argilla 2.x records as exported by `Dataset.records.to_json` / `Record.to_dict` (a JSON list, or JSONL):
`{"id", "fields": {...}, "responses": {"<question>": [{"value": ..., "user_id": ..., "status"?}]}, ...}`.

- A `RankingQuestion` whose options are field names: its value orders them best first, as a list of option
  values or as `[{"value": option, "rank": n}]`; it becomes a ranking row.
- A two-option `LabelQuestion`: its value names the preferred field (`response1`), or is `a`/`b`/`tie`; it
  becomes a pairwise row over the two response fields.

Each user's response is one row, with the record as its item and `user_id` as its annotator. Draft and discarded
responses are skipped. Field map: `prompt` (field, default `prompt`), `question` (default: the first question with
a response), `responses` (comma-separated fields, default: every field but the prompt, in order)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_ray.contracts import PairwiseChoice, SignalType, Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    envelope,
    ranking_row,
    require,
    text_of,
)

NAME = "argilla"
SKIPPED_STATUSES = frozenset({"draft", "discarded"})


def _ranked_options(value: list, name: str) -> list[str]:
    if all(isinstance(v, Mapping) for v in value):
        ranked = sorted(value, key=lambda v: v.get("rank") if isinstance(v.get("rank"), int) else 1 << 30)
        return [str(require(v, "value")) for v in ranked]
    if all(isinstance(v, str) for v in value):
        return list(value)
    raise BadRecord("wrong_type", name, "option values best first, or [{value, rank}]", value)


def _pairwise(ctx: ImportContext, key: tuple, prompt: str, texts: dict[str, str], fields: list[str], label: Any,
              name: str, who: dict[str, Any]) -> dict[str, Any]:
    if len(fields) != 2:
        raise BadRecord("wrong_type", "fields", "exactly two response fields for a LabelQuestion", fields)
    lowered = str(label).lower()
    if label in fields:
        choice = PairwiseChoice.A if label == fields[0] else PairwiseChoice.B
    elif lowered in {c.value for c in PairwiseChoice}:
        choice = PairwiseChoice(lowered)
    else:
        raise BadRecord("unknown_enum", name, f"one of {fields} or a/b/tie", label)
    return {**envelope(ctx, SignalType.PAIRWISE, key, prompt, **who), "response_a": texts[fields[0]],
            "response_b": texts[fields[1]], "choice": choice.value, "rationale": None}


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    fields = require(record, "fields")
    if not isinstance(fields, Mapping):
        raise BadRecord("wrong_type", "fields", "an object of field values", fields)
    prompt_field = ctx.field("prompt", "prompt")
    prompt = text_of(require(fields, prompt_field), f"fields.{prompt_field}")
    names = (ctx.field_map["responses"].split(",") if "responses" in ctx.field_map
             else [k for k in fields if k != prompt_field])
    texts = {n: text_of(require(fields, n), f"fields.{n}") for n in names}
    responses = record.get("responses") or {}
    if not isinstance(responses, Mapping):
        raise BadRecord("wrong_type", "responses", "an object {question: [responses]}", responses)
    question = ctx.field("question", next(iter(responses), ""))
    item = f"argilla-{record.get('id') or number}"
    rows = []
    for index, response in enumerate(responses.get(question) or []):
        name = f"responses.{question}[{index}]"
        if not isinstance(response, Mapping):
            raise BadRecord("wrong_type", name, "a response {value, user_id}", response)
        if response.get("status") in SKIPPED_STATUSES:
            continue
        value = require(response, "value")
        who = {"source": Source.ANNOTATOR, "actor_id": str(require(response, "user_id")), "item_id": item}
        key = (number, question, index)
        if isinstance(value, list):
            ranked = _ranked_options(value, f"{name}.value")
            if sorted(ranked) != sorted(names):
                raise BadRecord("inconsistent_ranking", f"{name}.value", f"every response field once: {names}",
                                ranked)
            rows.append(ranking_row(ctx, key, prompt, [texts[n] for n in names], [names.index(r) for r in ranked],
                                    **who))
        else:
            rows.append(_pairwise(ctx, key, prompt, texts, names, value, f"{name}.value", who))
    return rows
