"""Annotator labels as integer-coded long-form arrays, the shape every QA statistic works on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAIRWISE_CATEGORIES: tuple[str, ...] = ("a", "b", "tie")


@dataclass(frozen=True)
class LabelSet:
    """One label per row of `rows` (annotator rows of one signal type), coded for the statistics.

    `item_ids[item_index[r]]`, `annotators[annotator_index[r]]` and `categories[label[r]]` decode row r.
    """

    signal_type: str
    categories: tuple[str, ...]
    item_ids: tuple[str, ...]
    annotators: tuple[str, ...]
    item_index: np.ndarray
    annotator_index: np.ndarray
    label: np.ndarray
    rows: pa.Table

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_annotators(self) -> int:
        return len(self.annotators)

    @property
    def n_classes(self) -> int:
        return len(self.categories)

    def column(self, name: str) -> np.ndarray:
        return self.rows.column(name).to_numpy(zero_copy_only=False)


def _codes(values: pa.ChunkedArray) -> tuple[tuple[str, ...], np.ndarray]:
    encoded = pc.dictionary_encode(values).combine_chunks()
    return tuple(encoded.dictionary.to_pylist()), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _annotator_rows(table: pa.Table) -> pa.Table:
    """Annotator rows with an item id; when an annotator labeled an item twice, the latest label counts."""
    keep = pc.and_(pc.equal(table.column("source"), "annotator"), pc.is_valid(table.column("item_id")))
    rows = table.filter(keep).sort_by([("event_time", "ascending"), ("signal_id", "ascending")])
    latest = {key: position for position, key in enumerate(zip(rows.column("item_id").to_pylist(),
                                                                rows.column("actor_id").to_pylist(), strict=True))}
    return rows.take(pa.array(sorted(latest.values()), pa.int64()))


def _label_set(signal_type: str, rows: pa.Table, categories: tuple[str, ...], label: np.ndarray) -> LabelSet:
    item_ids, item_index = _codes(rows.column("item_id"))
    annotators, annotator_index = _codes(rows.column("actor_id"))
    return LabelSet(signal_type, categories, item_ids, annotators, item_index, annotator_index, label, rows)


def pairwise_labels(table: pa.Table) -> LabelSet:
    """Pairwise choices coded a=0, b=1, tie=2."""
    rows = _annotator_rows(table)
    lookup = {c: i for i, c in enumerate(PAIRWISE_CATEGORIES)}
    label = np.array([lookup[c] for c in rows.column("choice").to_pylist()], dtype=np.int64)
    return _label_set("pairwise", rows, PAIRWISE_CATEGORIES, label)


def top_choice_labels(table: pa.Table) -> LabelSet:
    """Best-of-N rankings reduced to the index ranked first: a categorical label over N positions."""
    rows = _annotator_rows(table)
    firsts = np.array([r[0] for r in rows.column("ranking").to_pylist()], dtype=np.int64)
    size = int(max((len(r) for r in rows.column("responses").to_pylist()), default=1))
    return _label_set("ranking", rows, tuple(str(i) for i in range(size)), firsts)


def rubric_scores(table: pa.Table, criterion: str) -> tuple[LabelSet, np.ndarray]:
    """Annotator rubric scores of one criterion: a LabelSet over score categories plus the raw scores."""
    rows = _annotator_rows(table.filter(pc.equal(table.column("scale"), "rubric5")))
    scores = np.array([next((s["score"] for s in entry if s["criterion"] == criterion), np.nan)
                       for entry in rows.column("scores").to_pylist()], dtype=float)
    present = ~np.isnan(scores)
    rows = rows.filter(pa.array(present))
    scores = scores[present]
    categories = tuple(str(v) for v in range(1, 6))
    return _label_set("rating", rows, categories, (np.clip(np.rint(scores), 1, 5) - 1).astype(np.int64)), scores
