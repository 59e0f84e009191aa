"""Labeling tasks: what to label (an item from the loop's own data), how, under which guideline, by when.

A task is built from one curated item and never changes once created: its id is a hash of (source, item), so
rebuilding the queue from the same curate output finds the same tasks; its progress (labels, disputes) lives
in the event log. The item's text is copied in, already PII-masked by ingest, and its model/variant name is
kept only to write it back into the contract rows, never to show it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PAIRWISE = "pairwise"
RANKING = "ranking"
RUBRIC = "rubric"
CORRECTION = "correction"
TASK_TYPES: tuple[str, ...] = (PAIRWISE, RANKING, RUBRIC, CORRECTION)
# The contract signal type each task type writes.
SIGNAL_OF: dict[str, str] = {PAIRWISE: "pairwise", RANKING: "ranking", RUBRIC: "rating", CORRECTION: "correction"}
# The guideline document family each task type is labeled under.
FAMILY_OF: dict[str, str] = {PAIRWISE: "preference", RANKING: "preference", RUBRIC: "rubric",
                             CORRECTION: "correction"}
PAIRWISE_CLASSES: tuple[str, ...] = ("a", "b", "tie")
RUBRIC_CLASSES: tuple[str, ...] = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Item:
    """One curated item: a prompt and its candidate responses, in the dataset's (canonical) order."""

    item_id: str
    signal_type: str
    prompt_id: str
    prompt: str
    topic: str | None
    segment: str | None
    region: str
    policy_version: str
    responses: tuple[str, ...]


@dataclass(frozen=True)
class HistoryLabel:
    """A label the item already had before the workbench: the class it encodes and why."""

    annotator: str
    label: str
    rationale: str | None = None
    guideline_version: str | None = None


@dataclass(frozen=True)
class Task:
    task_id: str
    task_type: str
    source: str
    item: Item
    guideline_version: str
    created_at: float
    due_at: float
    labels_wanted: int
    priority: float
    history: tuple[HistoryLabel, ...] = ()
    gold_answer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """The categorical label space the consensus works on (empty for corrections: no consensus)."""
        return classes_for(self.task_type, len(self.item.responses))

    @property
    def comparison_key(self) -> str:
        return comparison_key(self.task_type, self.item.prompt, self.item.responses)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        item = dict(data["item"])
        item["responses"] = tuple(item["responses"])
        return cls(**{**data, "item": Item(**item), "history": tuple(HistoryLabel(**h) for h in data["history"]),
                      "extra": dict(data.get("extra") or {})})


def classes_for(task_type: str, n_responses: int) -> tuple[str, ...]:
    if task_type == PAIRWISE:
        return PAIRWISE_CLASSES
    if task_type == RANKING:
        return tuple(str(i) for i in range(n_responses))
    return RUBRIC_CLASSES if task_type == RUBRIC else ()


def comparison_key(task_type: str, prompt: str, responses: Sequence[str]) -> str:
    """The same question whatever its item id or response order: type + prompt + the set of responses."""
    digest = hashlib.sha256("\0".join([task_type, prompt, *sorted(responses)]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


def task_id(source: str, item_id: str, task_type: str) -> str:
    return "t-" + hashlib.sha256(f"{source}\0{task_type}\0{item_id}".encode()).hexdigest()[:16]


def rubric_class(scores: Iterable[float]) -> str:
    """A rubric label reduced to one class for the consensus: the mean criterion score, rounded, in 1..5."""
    values = [float(s) for s in scores]
    return str(min(5, max(1, round(sum(values) / len(values)))))


@dataclass(frozen=True)
class Candidate:
    """A task before it has a guideline version and times: what the queue builder picked and why."""

    source: str
    task_type: str
    item: Item
    priority: float
    history: tuple[HistoryLabel, ...] = ()
    gold_answer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def make_task(candidate: Candidate, guideline_version: str, created_at: float, sla_hours: float,
              labels_wanted: int) -> Task:
    return Task(task_id(candidate.source, candidate.item.item_id, candidate.task_type), candidate.task_type,
                candidate.source, candidate.item, guideline_version, created_at, created_at + sla_hours * 3600.0,
                labels_wanted, round(float(candidate.priority), 6), candidate.history, candidate.gold_answer,
                dict(candidate.extra))


def dedupe_candidates(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One task per (item, task type): the first source listed wins (adjudication before active learning)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for candidate in candidates:
        key = (candidate.item.item_id, candidate.task_type)
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept
