"""What the workbench reads: a curate output (adjudication queue, active-learning picks, annotator health, QA
report), the dataset version it was computed from (item texts and their labels so far), and a gold key.

Plain pyarrow: the inputs are small (a few hundred items a day), so no Ray Data is needed to read them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rlhf_ray.annotation.answers import read_answers
from rlhf_ray.dataplane.versions import curated_folder, read_curated, resolve_version
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.storage import StorageRoot
from rlhf_ray.workbench.config import QueueSection
from rlhf_ray.workbench.tasks import (
    CORRECTION,
    PAIRWISE,
    RANKING,
    RUBRIC,
    Candidate,
    HistoryLabel,
    Item,
    dedupe_candidates,
    rubric_class,
)

REPORT_FILE = "agreement.json"
LABELED_TYPES = ("pairwise", "ranking", "rating")


class InputError(ValueError):
    """A curate output or dataset that cannot be used; the message names the path. (A bad gold file raises
    `AnswerFileError`, from the reader curate uses too.)"""


@dataclass(frozen=True)
class WorkbenchInputs:
    tables: Mapping[str, pa.Table]
    adjudication: pa.Table
    active: pa.Table
    annotators: pa.Table
    report: Mapping[str, Any]
    gold: Mapping[str, str] = field(default_factory=dict)


def dataset_root_from_lineage(report: Mapping[str, Any]) -> str:
    """The ingest output a curate run read, found through the lineage log: pairs artifact → its dataset parent."""
    root, pairs_id = report.get("lineage_root"), report.get("pairs_id")
    if not root or not pairs_id:
        raise InputError("the curate report names no lineage; set dataset=<ingest output_dir>")
    registry = LineageRegistry(root)
    dataset = registry.get(registry.get(pairs_id).parents[0])
    return dataset.uri.rsplit("/curated/", 1)[0]


def read_report(curated: str) -> dict[str, Any]:
    """Curate's QA report (`agreement.json`): it names the pairs and dataset versions and the lineage."""
    out = StorageRoot.from_uri(curated)
    if not out.exists(REPORT_FILE):
        raise InputError(f"curated={curated!r} holds no {REPORT_FILE}; expected the output_dir of `rlhf-ray curate`")
    return json.loads(out.read_bytes(REPORT_FILE))


def load_inputs(curated: str, dataset: str | None, gold: str | None = None) -> WorkbenchInputs:
    out = StorageRoot.from_uri(curated)
    report = read_report(curated)
    pairs_version = report.get("pairs_version")
    if not pairs_version:
        raise InputError(f"{out.join(REPORT_FILE)} names no pairs_version")
    source = StorageRoot.from_uri(dataset or dataset_root_from_lineage(report))
    version = resolve_version(source, report.get("dataset_version"))
    tables = read_curated(source, curated_folder(version))

    def table(*parts: str) -> pa.Table:
        path = out.join(*parts)
        return pq.read_table(path, filesystem=out.fs) if out.exists(*parts) else pa.table({})

    return WorkbenchInputs({k: v for k, v in tables.items() if k in LABELED_TYPES},
                           table("adjudication", f"{pairs_version}.parquet"),
                           table("active_learning", f"{pairs_version}.parquet"), table("annotators.parquet"),
                           report, read_answers(gold, "gold"))


def history_accuracy(inputs: WorkbenchInputs) -> dict[str, float]:
    """Curate's Dawid–Skene accuracy estimate per (pseudonymous) annotator, the prior for their old labels."""
    if "estimated_accuracy" not in inputs.annotators.column_names:
        return {}
    return dict(zip(inputs.annotators.column("annotator").to_pylist(),
                    inputs.annotators.column("estimated_accuracy").to_pylist(), strict=True))


def _annotator_rows(table: pa.Table) -> list[dict[str, Any]]:
    keep = pc.and_(pc.equal(table.column("source"), "annotator"), pc.is_valid(table.column("item_id")))
    return table.filter(keep).sort_by([("event_time", "ascending"), ("signal_id", "ascending")]).to_pylist()


def _label_of(row: Mapping[str, Any]) -> str:
    if row["signal_type"] == "pairwise":
        return str(row["choice"])
    if row["signal_type"] == "ranking":
        return str(row["ranking"][0])
    return rubric_class(s["score"] for s in row["scores"])


def _responses(row: Mapping[str, Any]) -> tuple[str, ...]:
    if "responses" in row:
        return tuple(row["responses"])
    return (row["response_a"], row["response_b"]) if "response_a" in row else (row["response"],)


@dataclass(frozen=True)
class LabeledItem:
    item: Item
    history: tuple[HistoryLabel, ...]
    rows: tuple[Mapping[str, Any], ...]


def labeled_items(tables: Mapping[str, pa.Table]) -> dict[str, LabeledItem]:
    """Every annotator-labeled item of the dataset with its labels so far (the latest per annotator)."""
    grouped: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for name in LABELED_TYPES:
        if name in tables and tables[name].num_rows:
            for row in _annotator_rows(tables[name]):
                if name != "rating" or row["scale"] == "rubric5":
                    grouped[row["item_id"]][row["actor_id"]] = row
    items = {}
    for item_id, by_annotator in grouped.items():
        rows = tuple(by_annotator.values())
        first = rows[0]
        item = Item(item_id, first["signal_type"], first["prompt_id"], first["prompt"], first.get("topic"),
                    first.get("segment"), first["region"], first["policy_version"], _responses(first))
        history = tuple(HistoryLabel(r["actor_id"], _label_of(r), r.get("rationale"), r.get("guideline_version"))
                        for r in rows)
        items[item_id] = LabeledItem(item, history, rows)
    return items


def _rubric_spread(rows: tuple[Mapping[str, Any], ...]) -> float:
    """Disagreement on a rubric item: the mean over criteria of the std of the annotators' scores."""
    by_criterion: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for score in row["scores"]:
            by_criterion[score["criterion"]].append(float(score["score"]))
    return float(np.mean([np.std(v) for v in by_criterion.values()])) if by_criterion else 0.0


def _mean_score(rows: tuple[Mapping[str, Any], ...]) -> float:
    return float(np.mean([s["score"] for row in rows for s in row["scores"]]))


def _task_type(signal_type: str) -> str:
    return PAIRWISE if signal_type == "pairwise" else RANKING


def build_candidates(inputs: WorkbenchInputs, queue: QueueSection) -> list[Candidate]:
    """Adjudication items first (most urgent), then active-learning picks, gold, rubric and correction tasks."""
    items = labeled_items(inputs.tables)
    found: list[Candidate] = []

    def add(source: str, item_id: str, task_type: str, priority: float, **extra: Any) -> None:
        if item_id in items:
            labeled = items[item_id]
            found.append(Candidate(source, task_type, labeled.item, priority,
                                   () if task_type == CORRECTION else labeled.history, **extra))

    adjudication = inputs.adjudication.to_pylist()[: queue.adjudication]
    for row in adjudication:
        add("adjudication", row["item_id"], _task_type(row["signal_type"]), 2.0 - float(row["confidence"]),
            extra={"reason": row["reason"], "consensus": row["consensus"], "confidence": row["confidence"]})
    for row in inputs.active.to_pylist()[: queue.active_learning]:
        add("active_learning", row["item_id"], _task_type(row["signal_type"]), float(row["score"]))
    gold = sorted(i for i in inputs.gold if i in items and items[i].item.signal_type in ("pairwise", "ranking"))
    for item_id in gold[: queue.gold]:
        add("gold", item_id, _task_type(items[item_id].item.signal_type), 0.5, gold_answer=inputs.gold[item_id])
    rated = [(i, x) for i, x in sorted(items.items()) if x.item.signal_type == "rating"]
    spread = sorted(((_rubric_spread(x.rows), i) for i, x in rated if len(x.rows) > 1), reverse=True)
    chosen = {i for _, i in spread[: queue.rubric]}
    for value, item_id in spread[: queue.rubric]:
        add("rubric", item_id, RUBRIC, value)
    worst = sorted((_mean_score(x.rows), i) for i, x in rated if i not in chosen)
    for value, item_id in worst[: queue.correction]:
        add("correction", item_id, CORRECTION, 5.0 - value)
    return dedupe_candidates(found)
