"""UltraFeedback (openbmb/UltraFeedback): one `instruction` with several `completions`, each with a `response` and
a `fine-grained_score` (the mean of its four 1–5 aspect ratings). Each record becomes one Likert rating row per
completion and, when the scores put the completions in a strict order, one ranking row (best first). Completions
are rated by a model (GPT-4), so the rows' source is `evaluator`."""

from __future__ import annotations

from typing import Any

from rlhf_ray.contracts import MAX_RANKED_RESPONSES, RatingScale, Source
from rlhf_ray.inputs.formats.base import (
    BadRecord,
    ImportContext,
    ranking_row,
    rating_row,
    require,
    text_of,
)

NAME = "ultrafeedback"
SCORE_FIELD = "fine-grained_score"


def _score(completion: Any, name: str, score_field: str) -> float:
    score = require(completion, score_field)
    if isinstance(score, str):
        try:
            score = float(score)
        except ValueError:
            raise BadRecord("wrong_type", f"{name}.{score_field}", "a number in [1, 5]", score) from None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 5:
        raise BadRecord("out_of_range", f"{name}.{score_field}", "a number in [1, 5]", score)
    return float(score)


def parse(record: Any, number: int, ctx: ImportContext) -> list[dict[str, Any]]:
    prompt = text_of(require(record, ctx.field("prompt", "instruction")), ctx.field("prompt", "instruction"))
    completions = require(record, "completions")
    if not isinstance(completions, list) or not completions:
        raise BadRecord("wrong_type", "completions", "a non-empty list of completions", completions)
    score_field = ctx.field("score", SCORE_FIELD)
    scored = []
    for index, completion in enumerate(completions):
        name = f"completions[{index}]"
        scored.append((text_of(require(completion, "response"), f"{name}.response"),
                       _score(completion, name, score_field)))
    actor = {"source": Source.EVALUATOR, "actor_id": NAME}
    rows = [rating_row(ctx, (number, i), prompt, text, RatingScale.LIKERT5, score, **actor)
            for i, (text, score) in enumerate(scored)]
    scores = [score for _, score in scored]
    if 2 <= len(scored) <= MAX_RANKED_RESPONSES and len(set(scores)) == len(scores):
        order = sorted(range(len(scored)), key=lambda i: -scores[i])
        rows.append(ranking_row(ctx, (number, "ranking"), prompt, [text for text, _ in scored], order, **actor))
    return rows
