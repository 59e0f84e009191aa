"""Disputes: an item the crowd could not settle, shown to a reviewer as a thread of every label and rationale.

A dispute opens when an item comes from curate's adjudication queue, or when a task reaches its label cap
with the posterior still under τ. Annotators and reviewers may comment; a reviewer resolves it with a final
label and a note. The resolution is written like any label (a contract row, confidence 1.0) and as a
`{item_id, answer}` line for curate's `adjudication.resolved`, which clamps the item like gold, so its pairs
get full weight; the thread itself is kept (`disputes/threads.jsonl`) as material for the next guideline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf_ray.workbench.tasks import PAIRWISE, RANKING, RUBRIC, Task

OPEN = "open"
RESOLVED = "resolved"
MAX_COMMENT_CHARS = 1000


@dataclass
class Dispute:
    dispute_id: str
    task_id: str
    opened_at: float
    reason: str
    comments: list[dict[str, Any]] = field(default_factory=list)
    resolution: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return OPEN if self.resolution is None else RESOLVED


def dispute_id(task_id: str) -> str:
    return "d-" + task_id.removeprefix("t-")


def describe_label(task: Task, label: str | int | None) -> str:
    """A class in words, in the canonical order the reviewer sees (A/B, response numbers from 1)."""
    if label is None:
        return "edit"
    text = str(label)
    if task.task_type == PAIRWISE:
        return {"a": "A is better", "b": "B is better", "tie": "tie"}.get(text, text)
    if task.task_type == RANKING:
        return f"#{int(text) + 1} is best"
    return f"overall {text}/5" if task.task_type == RUBRIC else text


def resolved_answer(task: Task, payload: Mapping[str, Any]) -> Any:
    """What curate's `adjudication.resolved` expects: the choice, or the full ranking (it takes the first)."""
    if task.task_type == PAIRWISE:
        return payload["choice"]
    if task.task_type == RANKING:
        return list(payload["ranking"])
    return [s["score"] for s in payload.get("scores", [])]


def thread(task: Task, dispute: Dispute, labels: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Everything said about the item, oldest first: labels before the workbench, workbench labels with their
    rationales, comments, and the resolution."""
    entries: list[dict[str, Any]] = [
        {"kind": "label", "stage": "before", "author": h.annotator, "label": describe_label(task, h.label),
         "rationale": h.rationale, "guideline_version": h.guideline_version, "at": None}
        for h in task.history]
    entries += [{"kind": "label", "stage": "workbench", "author": label["actor"],
                 "label": describe_label(task, task.classes[label["label"]] if task.classes else None),
                 "rationale": label["rationale"], "guideline_version": task.guideline_version, "at": label["at"]}
                for label in labels]
    entries += [{"kind": "comment", **comment} for comment in dispute.comments]
    if dispute.resolution is not None:
        entries.append({"kind": "resolution", **dispute.resolution})
    return entries
