"""Label Studio JSON export (a list of tasks, each with `data` and `annotations`), of a project built on the
Pairwise template (`<Pairwise name="pw" toName="text1,text2"/>`: result `{"type": "pairwise", "value":
{"selected": "left" | "right"}}`, left = the first text) or on a Ranker (`<List name="items" value="$items"/>`
`<Ranker name="rank" toName="items"/>`: result `{"type": "ranker", "value": {"ranker": {"<list>": [ids, best
first]}}}`). Each annotation becomes one row with the task as its item and `completed_by` as its annotator, so
several annotators' labels of one task meet in curate's consensus. Cancelled annotations are skipped.

Field map: `prompt` (task data key of the prompt, default `prompt`), `text1`/`text2` (the two compared texts),
`items` (the ranked list: objects with `id` and `body`, `text` or `title`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_ray.contracts import Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    event_time,
    pairwise_row,
    ranking_row,
    require,
    text_of,
)

NAME = "label-studio"
_SIDES = {"left": 0, "right": 1}


def _annotator(annotation: Mapping[str, Any], name: str) -> str:
    """`completed_by` is an id, or (some exports) an object with an id: the id, never an email."""
    who = require(annotation, "completed_by")
    if isinstance(who, Mapping):
        who = require(who, "id")
    if isinstance(who, bool) or not isinstance(who, int | str) or not str(who).strip():
        raise BadRecord("wrong_type", f"{name}.completed_by", "an annotator id", who)
    return str(who)


def _item_text(item: Any, name: str) -> tuple[str, str]:
    if not isinstance(item, Mapping):
        raise BadRecord("wrong_type", name, "a list item {id, body}", item)
    text = next((item[k] for k in ("body", "text", "title") if item.get(k) is not None), None)
    return str(require(item, "id")), text_of(text, f"{name}.body")


def _ranked_ids(value: Any, name: str) -> list[str]:
    ranker = value.get("ranker") if isinstance(value, Mapping) else None
    if isinstance(ranker, Mapping) and len(ranker) == 1:
        ranker = next(iter(ranker.values()))
    if not isinstance(ranker, list):
        raise BadRecord("wrong_type", f"{name}.value.ranker", "one ordered list of item ids (no buckets)", ranker)
    return [str(i) for i in ranker]


def _rows(task: Mapping[str, Any], task_id: str, annotation: Any, index: int, number: int,
          ctx: ImportContext) -> list[dict[str, Any]]:
    name = f"annotations[{index}]"
    if not isinstance(annotation, Mapping):
        raise BadRecord("wrong_type", name, "an annotation object", annotation)
    data = require(task, "data")
    prompt_key = ctx.field("prompt", "prompt")
    prompt = text_of(require(data, prompt_key), f"data.{prompt_key}")
    when = event_time(annotation["created_at"], f"{name}.created_at") if annotation.get("created_at") else None
    who = {"source": Source.ANNOTATOR, "actor_id": _annotator(annotation, name), "item_id": f"ls-{task_id}",
           "when": when}
    results = require(annotation, "result")
    if not isinstance(results, list):
        raise BadRecord("wrong_type", f"{name}.result", "a list of results", results)
    rows = []
    for position, result in enumerate(results):
        kind = result.get("type") if isinstance(result, Mapping) else None
        where = f"{name}.result[{position}]"
        if kind == "pairwise":
            side = require(result, "value").get("selected") if isinstance(result.get("value"), Mapping) else None
            if side not in _SIDES:
                raise BadRecord("unknown_enum", f"{where}.value.selected", "'left' or 'right'", side)
            texts = [text_of(require(data, ctx.field(key, key)), f"data.{ctx.field(key, key)}")
                     for key in ("text1", "text2")]
            chosen = _SIDES[side]
            rows.append(pairwise_row(ctx, (number, index, position), prompt, texts[chosen], texts[1 - chosen],
                                     **who))
        elif kind == "ranker":
            items_key = ctx.field("items", "items")
            items = require(data, items_key)
            if not isinstance(items, list):
                raise BadRecord("wrong_type", f"data.{items_key}", "a list of items {id, body}", items)
            ids, texts = zip(*[_item_text(item, f"data.{items_key}[{i}]") for i, item in enumerate(items)],
                             strict=True) if items else ((), ())
            ranked = _ranked_ids(require(result, "value"), where)
            if sorted(ranked) != sorted(ids):
                raise BadRecord("inconsistent_ranking", f"{where}.value.ranker", f"every item id once: {list(ids)}",
                                ranked)
            rows.append(ranking_row(ctx, (number, index, position), prompt, list(texts),
                                    [ids.index(i) for i in ranked], **who))
    if not rows:
        raise BadRecord("missing_field", f"{name}.result", "a pairwise or ranker result")
    return rows


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    annotations = require(record, "annotations")
    task_id = record.get("id", number)
    if not isinstance(annotations, list):
        raise BadRecord("wrong_type", "annotations", "a list of annotations", annotations)
    rows: list[dict[str, Any]] = []
    for index, annotation in enumerate(annotations):
        if isinstance(annotation, Mapping) and annotation.get("was_cancelled"):
            continue
        rows += _rows(record, str(task_id), annotation, index, number, ctx)
    return rows
