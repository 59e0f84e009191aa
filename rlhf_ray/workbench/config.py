"""Typed settings of the annotation workbench, shared by the `rlhf-ray workbench` job and its Serve deployment.

The job's YAML config embeds these sections; the deployment receives `WorkbenchArgs`: paths, settings and the
sign-in table as token digests and pseudonyms only, so neither a token nor a raw annotator name is ever part of
a Serve application's arguments.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rlhf_ray.config.common import StrictModel

Role = Literal["annotator", "reviewer"]
TASK_SOURCES: tuple[str, ...] = ("adjudication", "active_learning", "rubric", "correction", "gold")


class QueueSection(StrictModel):
    """What becomes a task, how many labels each asks for, and the adaptive-redundancy stopping rule."""

    active_learning: int = Field(40, ge=0, description="active-learning picks turned into tasks (best score first)")
    adjudication: int = Field(40, ge=0, description="adjudication-queue items turned into tasks (and disputes)")
    rubric: int = Field(10, ge=0, description="rubric tasks: rated responses whose annotators disagree most")
    correction: int = Field(5, ge=0, description="correction tasks: the lowest-rated responses, to edit inline")
    gold: int = Field(5, ge=0, description="gold tasks (known answer, not shown as such) to measure accuracy")
    labels_wanted: int = Field(2, ge=1, description="new labels asked per task before the stopping rule adapts")
    max_labels: int = Field(5, ge=1, description="new labels at most; a task still unsure then becomes a dispute")
    confidence: float = Field(0.9, gt=0.5, lt=1.0, description="τ: stop once the posterior's top class ≥ τ")
    default_accuracy: float = Field(0.75, gt=0.0, lt=1.0, description="prior accuracy of an annotator")
    prior_strength: float = Field(4.0, gt=0.0, description="pseudo-labels behind default_accuracy (Beta prior)")
    sla_hours: dict[str, float] = Field(
        default_factory=lambda: {"adjudication": 24.0, "default": 72.0},
        description="hours from creation to due, by task source; 'default' for the others")

    @field_validator("sla_hours")
    @classmethod
    def _known_sources(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {*TASK_SOURCES, "default"})
        if unknown:
            raise ValueError(f"unknown task source(s) {unknown}; expected some of {[*TASK_SOURCES, 'default']}")
        if "default" not in value:
            raise ValueError("needs a 'default' entry (hours for sources not listed)")
        if any(hours <= 0 for hours in value.values()):
            raise ValueError("hours must be > 0")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> QueueSection:
        if self.max_labels < self.labels_wanted:
            raise ValueError(f"max_labels ({self.max_labels}) must be ≥ labels_wanted ({self.labels_wanted})")
        return self


class SessionSection(StrictModel):
    """Fatigue guards: a session ends at a time or task cap, then a break; task types rotate."""

    max_minutes: float = Field(60.0, gt=0, description="a session ends this long after it started")
    max_tasks: int = Field(60, ge=1, description="a session ends after this many labels")
    break_minutes: float = Field(10.0, ge=0, description="no new session until this long after the last ended")
    rotate_after: int = Field(10, ge=0, description="after this many tasks of one type in a row prefer another "
                                                    "type (0: never rotate)")
    lease_minutes: float = Field(15.0, gt=0, description="a task handed out is held for its annotator this long")


class ShardSection(StrictModel):
    """When accepted labels are written out as contract shards (they are durable in the event log at once)."""

    flush_every: int = Field(50, ge=1, description="write a shard once this many rows wait")
    flush_seconds: float = Field(60.0, gt=0, description="or once the oldest waiting row is this old")


class UiSection(StrictModel):
    require_rationale: bool = Field(True, description="a choice, ranking or score needs a one-line rationale")
    max_rationale_chars: int = Field(280, ge=10, le=2000)
    blind: bool = Field(True, description="never show model or variant names (must stay on for real labeling)")


class Identity(StrictModel):
    """Who holds a token: a keyed pseudonym and a role. The raw name stays in the process that read the tokens."""

    actor: str = Field(min_length=1)
    role: Role


class WorkbenchArgs(StrictModel):
    """Everything the workbench needs to open; the Serve deployment's argument."""

    curated: str = Field(description="output_dir of `rlhf-ray curate` (adjudication, active learning, health)")
    dataset: str = Field(description="output_dir of `rlhf-ray ingest` (the items' text and history labels)")
    output_dir: str = Field(description="feedback dir: shards/ for `rlhf-ray ingest`, state/, adjudication/")
    guidelines_dir: str = "guidelines"
    gold: str | None = Field(None, description="gold answer key JSONL {item_id, answer}")
    seed: int = 0
    queue: QueueSection = QueueSection()
    session: SessionSection = SessionSection()
    shards: ShardSection = ShardSection()
    ui: UiSection = UiSection()
    identities: dict[str, Identity] = Field(default_factory=dict, description="sha256(token) hex → identity")
