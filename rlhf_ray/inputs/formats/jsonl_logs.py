"""Production logs in JSONL (or Parquet) with a field map: `prompt=…` (text, or a list of chat messages),
`response=…`, `rating=…`, and optionally `user=…`, `time=…` (ISO-8601 or Unix time), `session=…`.

A rating is thumbs when it is a boolean, `up`/`down` (also `thumbs_up`, `👍`, `positive`, …) or −1/0/1 in a file
whose numeric ratings never exceed 1; it is Likert 1..5 otherwise (`scale` in the field map, `thumbs` or
`likert5`, overrides the guess). Rows are the user's own: source `user`, actor = the `user` field (`anonymous`
when the map names none)."""

from __future__ import annotations

from typing import Any

from rlhf_ray.contracts import RatingScale, Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    conversation_prompt,
    event_time,
    messages_of,
    rating_row,
    require,
    text_of,
)

NAME = "jsonl"
REQUIRED_KEYS = ("prompt", "response", "rating")
_UP = frozenset({"up", "thumbs_up", "thumbsup", "👍", "positive", "like", "good", "true", "yes"})
_DOWN = frozenset({"down", "thumbs_down", "thumbsdown", "👎", "negative", "dislike", "bad", "false", "no"})


def numeric_scale(values: list[Any]) -> RatingScale:
    """Thumbs when no numeric rating in the file exceeds 1, else Likert."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return RatingScale.LIKERT5 if any(v > 1 for v in numbers) else RatingScale.THUMBS


def rating(value: Any, name: str, numeric: RatingScale) -> tuple[RatingScale, float]:
    if isinstance(value, bool):
        return RatingScale.THUMBS, float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _UP or word in _DOWN:
            return RatingScale.THUMBS, float(word in _UP)
        try:
            value = float(word)
        except ValueError:
            raise BadRecord("wrong_type", name, "thumbs (true/false, up/down) or a number", value) from None
    if not isinstance(value, int | float):
        raise BadRecord("wrong_type", name, "thumbs (true/false, up/down) or a number", value)
    if numeric is RatingScale.THUMBS:
        if value not in (-1, 0, 1):
            raise BadRecord("out_of_range", name, "a thumbs value -1/0/1", value)
        return RatingScale.THUMBS, float(value > 0)
    if not 1 <= value <= 5:
        raise BadRecord("out_of_range", name, "a Likert score in [1, 5]", value)
    return RatingScale.LIKERT5, float(value)


def missing_keys(field_map: dict[str, str]) -> list[str]:
    return [key for key in REQUIRED_KEYS if key not in field_map]


def parse(record: Any, number: int, ctx: ImportContext, numeric: RatingScale = RatingScale.THUMBS
          ) -> list[dict[str, Any]]:
    prompt_field, response_field, rating_field = (ctx.field_map[k] for k in REQUIRED_KEYS)
    prompt_value = require(record, prompt_field)
    prompt = (text_of(prompt_value, prompt_field) if isinstance(prompt_value, str)
              else conversation_prompt(messages_of(prompt_value, prompt_field), prompt_field))
    response = text_of(require(record, response_field), response_field)
    scale, score = rating(require(record, rating_field), rating_field, numeric)
    user = str(require(record, ctx.field_map["user"])) if "user" in ctx.field_map else "anonymous"
    when = event_time(require(record, ctx.field_map["time"]), ctx.field_map["time"]) if "time" in ctx.field_map \
        else None
    session = str(require(record, ctx.field_map["session"])) if "session" in ctx.field_map else None
    return [rating_row(ctx, (number,), prompt, response, scale, score, source=Source.USER, actor_id=user,
                       when=when, session_id=session)]
