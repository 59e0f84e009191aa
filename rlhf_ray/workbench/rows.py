"""From what an annotator submitted to a signal-contract row: parse, map back to canonical order, mask, validate.

Annotators see responses in a shuffled order; `presented[p]` is the canonical index of the response shown at
position p. Rows are written in the item's canonical order (so every label of an item speaks about the same
`response_a`), and the order shown is kept in the workbench's event log. Every free text is PII-masked and
every row is checked against its contract before it is accepted; a problem becomes a `SubmissionError`
naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rlhf_ray.contracts import MAX_TEXT_CHARS, RUBRIC_CRITERIA, SCHEMA_VERSION
from rlhf_ray.contracts.validation import validate_row
from rlhf_ray.governance import PiiMasker
from rlhf_ray.workbench.tasks import PAIRWISE, PAIRWISE_CLASSES, RANKING, RUBRIC, SIGNAL_OF, Task, rubric_class

RUBRIC_MIN, RUBRIC_MAX = 1, 5


class SubmissionError(ValueError):
    """Bad input from a client: `status` is the HTTP status, `field` the offending field."""

    def __init__(self, field: str | None, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": str(self), "status": self.status}}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(body: Mapping[str, Any], presented: Sequence[int]) -> dict[str, Any]:
    choice = body.get("choice")
    if choice not in PAIRWISE_CLASSES:
        raise SubmissionError("choice", f"field 'choice': got {choice!r}, expected one of {list(PAIRWISE_CLASSES)}")
    canonical = choice if choice == "tie" else PAIRWISE_CLASSES[presented[PAIRWISE_CLASSES.index(choice)]]
    return {"choice": canonical}


def _ranking(body: Mapping[str, Any], presented: Sequence[int]) -> dict[str, Any]:
    ranking = body.get("ranking")
    n = len(presented)
    if (not isinstance(ranking, list) or not all(_integer(i) for i in ranking)
            or sorted(ranking) != list(range(n))):
        raise SubmissionError("ranking", f"field 'ranking': got {str(ranking)[:60]}, expected the {n} shown "
                                         f"positions best first, a permutation of 0..{n - 1}")
    return {"ranking": [presented[p] for p in ranking]}


def _scores(body: Mapping[str, Any], presented: Sequence[int]) -> dict[str, Any]:
    scores = body.get("scores")
    if not isinstance(scores, Mapping) or set(scores) != set(RUBRIC_CRITERIA):
        raise SubmissionError("scores", f"field 'scores': expected an object with exactly {list(RUBRIC_CRITERIA)}")
    for criterion in RUBRIC_CRITERIA:
        value = scores[criterion]
        if not _integer(value) or not RUBRIC_MIN <= value <= RUBRIC_MAX:
            raise SubmissionError(f"scores.{criterion}", f"field 'scores.{criterion}': got {value!r}, expected an "
                                                         f"integer {RUBRIC_MIN}..{RUBRIC_MAX}")
    return {"scale": "rubric5", "scores": [{"criterion": c, "score": float(scores[c])} for c in RUBRIC_CRITERIA]}


def _edit(body: Mapping[str, Any], original: str) -> dict[str, Any]:
    edited = body.get("edited_response")
    if not isinstance(edited, str) or not edited.strip():
        raise SubmissionError("edited_response", "field 'edited_response': expected the corrected text")
    if len(edited) > MAX_TEXT_CHARS:
        raise SubmissionError("edited_response", f"field 'edited_response': at most {MAX_TEXT_CHARS} characters")
    if edited.strip() == original.strip():
        raise SubmissionError("edited_response", "field 'edited_response': unchanged; edit the response or skip")
    return {"edited_response": edited.strip()}


def parse_payload(task: Task, body: Mapping[str, Any], presented: Sequence[int]) -> dict[str, Any]:
    """The label's contract fields in canonical order."""
    if task.task_type == PAIRWISE:
        return _choice(body, presented)
    if task.task_type == RANKING:
        return _ranking(body, presented)
    if task.task_type == RUBRIC:
        return _scores(body, presented)
    return _edit(body, task.item.responses[0])


def parse_rationale(body: Mapping[str, Any], required: bool, max_chars: int) -> str | None:
    value = body.get("rationale")
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise SubmissionError("rationale", "field 'rationale': a one-line reason is required")
        return None
    if not isinstance(value, str):
        raise SubmissionError("rationale", f"field 'rationale': expected a string, got {type(value).__name__}")
    line = " ".join(value.split())
    if len(line) > max_chars:
        raise SubmissionError("rationale", f"field 'rationale': {len(line)} characters, expected at most "
                                           f"{max_chars} (one line)")
    return line


def label_class(task: Task, payload: Mapping[str, Any]) -> int | None:
    """The label as a class index of `task.classes` (None for a correction: it has no consensus)."""
    if task.task_type == PAIRWISE:
        return PAIRWISE_CLASSES.index(payload["choice"])
    if task.task_type == RANKING:
        return int(payload["ranking"][0])
    if task.task_type == RUBRIC:
        return int(rubric_class(s["score"] for s in payload["scores"])) - 1
    return None


def _payload_fields(task: Task) -> dict[str, Any]:
    responses = task.item.responses
    if task.task_type == PAIRWISE:
        return {"response_a": responses[0], "response_b": responses[1]}
    if task.task_type == RANKING:
        return {"responses": list(responses)}
    return {"response": responses[0]}


def iso(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def contract_row(task: Task, payload: Mapping[str, Any], *, signal_id: str, actor: str, session_id: str | None,
                 position: int | None, at: float, rationale: str | None, masker: PiiMasker,
                 confidence: float | None = None) -> dict[str, Any]:
    """The signal-contract row of one label, masked and validated (a `SubmissionError` if it fails)."""
    item = task.item
    row: dict[str, Any] = {
        "signal_id": signal_id, "signal_type": SIGNAL_OF[task.task_type],
        "schema_version": SCHEMA_VERSION, "event_time": iso(at), "source": "annotator", "actor_id": actor,
        "item_id": item.item_id, "session_id": session_id, "session_position": position,
        "prompt_id": item.prompt_id, "prompt": item.prompt, "topic": item.topic, "segment": item.segment,
        "policy_version": item.policy_version, "guideline_version": task.guideline_version, "region": item.region,
        "confidence": confidence, **_payload_fields(task), **payload, "rationale": rationale,
    }
    for name in ("rationale", "edited_response", "prompt"):
        if isinstance(row.get(name), str):
            row[name] = masker.mask(row[name])[0]
    rejection = validate_row(row, datetime.fromtimestamp(at, UTC))
    if rejection is not None:
        raise SubmissionError(rejection.field, rejection.detail)
    return row
