"""Annotator health: accuracy against gold and consensus, fatigue within sessions, drift across weeks,
length bias and spam flags. One row per (pseudonymous) annotator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rlhf_ray.annotation.labels import LabelSet

SECONDS_PER_WEEK = 7 * 86_400


@dataclass(frozen=True)
class HealthSettings:
    early_positions: int = 10
    late_from_position: int = 30
    fatigue_drop: float = 0.1
    min_bucket_labels: int = 15
    drift_distance: float = 0.25
    min_week_labels: int = 20
    spammer_accuracy: float = 0.58
    session_cap: int = 60


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV(p, q) = ½ Σ_k |p_k − q_k| between two label distributions."""
    return float(0.5 * np.abs(p - q).sum())


def _distribution(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes) / max(1, labels.size)


def _fatigue(agree: np.ndarray, positions: np.ndarray, settings: HealthSettings) -> tuple[float | None, ...]:
    """Agreement with consensus early in sessions vs late; the drop flags fatigue when both are well sampled."""
    early = agree[positions < settings.early_positions]
    late = agree[positions >= settings.late_from_position]
    if min(early.size, late.size) < settings.min_bucket_labels:
        return _rate(early), _rate(late), None
    return _rate(early), _rate(late), round(float(early.mean() - late.mean()), 4)


def _drift(labels: np.ndarray, weeks: np.ndarray, n_classes: int, settings: HealthSettings) -> float | None:
    """TV distance between the label distributions of the annotator's first and last well-sampled weeks."""
    sampled = [w for w in np.unique(weeks) if (weeks == w).sum() >= settings.min_week_labels]
    if len(sampled) < 2:
        return None
    first, last = (_distribution(labels[weeks == w], n_classes) for w in (sampled[0], sampled[-1]))
    return round(total_variation(first, last), 4)


def _longer_choice_rate(labels: LabelSet, rows: np.ndarray) -> float | None:
    """How often the annotator picks the longer response when lengths differ: a verbosity-bias indicator."""
    a_len = np.array([len(t) for t in labels.rows.column("response_a").take(rows).to_pylist()])
    b_len = np.array([len(t) for t in labels.rows.column("response_b").take(rows).to_pylist()])
    choice = labels.label[rows]
    decided = (a_len != b_len) & (choice < 2)
    longer = np.where(a_len > b_len, 0, 1)
    return _rate((choice == longer)[decided])


def annotator_health(labels: LabelSet, consensus: np.ndarray, estimated_accuracy: np.ndarray,
                     gold: Mapping[int, int], settings: HealthSettings) -> pa.Table:
    """Per-annotator table. `consensus[item]` is the consensus class, `estimated_accuracy[annotator]` the
    Dawid–Skene estimate, `gold` maps item index → known class."""
    positions = labels.column("session_position").astype(np.int64)
    weeks = labels.column("event_time").astype("datetime64[s]").astype(np.int64) // SECONDS_PER_WEEK
    sessions = labels.column("session_id")
    agree = labels.label == consensus[labels.item_index]
    gold_items = np.array(sorted(gold), dtype=np.int64)
    gold_truth = np.array([gold[i] for i in gold_items.tolist()], dtype=np.int64)
    records = []
    for index, annotator in enumerate(labels.annotators):
        mine = np.flatnonzero(labels.annotator_index == index)
        items = labels.item_index[mine]
        on_gold = np.isin(items, gold_items)
        gold_hits = labels.label[mine][on_gold] == gold_truth[np.searchsorted(gold_items, items[on_gold])]
        early, late, drop = _fatigue(agree[mine], positions[mine], settings)
        drift = _drift(labels.label[mine], weeks[mine], labels.n_classes, settings)
        session_lengths = {s: int(positions[mine][sessions[mine] == s].max()) + 1 for s in set(sessions[mine])}
        flags = []
        if estimated_accuracy[index] < settings.spammer_accuracy:
            flags.append("spammer")
        if drop is not None and drop >= settings.fatigue_drop:
            flags.append("fatigue")
        if drift is not None and drift >= settings.drift_distance:
            flags.append("drift")
        over_cap = sum(length > settings.session_cap for length in session_lengths.values())
        if over_cap:
            flags.append("session_over_cap")
        records.append({
            "annotator": annotator, "labels": int(mine.size), "sessions": len(session_lengths),
            "estimated_accuracy": round(float(estimated_accuracy[index]), 4),
            "gold_accuracy": _rate(gold_hits), "gold_labels": int(on_gold.sum()),
            "consensus_agreement": _rate(agree[mine]),
            "early_session_agreement": early, "late_session_agreement": late, "fatigue_drop": drop,
            "label_drift": drift, "longer_choice_rate": _longer_choice_rate(labels, mine)
            if labels.signal_type == "pairwise" else None,
            "sessions_over_cap": int(over_cap), "flags": flags,
        })
    return pa.Table.from_pylist(records)
