"""Annotation QA over one curated dataset version: consensus, agreement, health, adjudication, pairs,
and what to label next. Pure: typed tables in, tables and a JSON-ready report out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rlhf_ray.annotation.active import ActiveSettings, Reward, reward_uncertainty, select_for_labeling
from rlhf_ray.annotation.adjudication import QUEUE_SCHEMA, adjudication_queue
from rlhf_ray.annotation.agreement import agreement_report, agreement_with_reference, expected_fleiss_kappa
from rlhf_ray.annotation.consensus import dawid_skene, majority_vote
from rlhf_ray.annotation.health import HealthSettings, annotator_health
from rlhf_ray.annotation.labels import LabelSet, pairwise_labels, rubric_scores, top_choice_labels
from rlhf_ray.annotation.pairs import (
    PairSettings,
    correction_pairs,
    criterion_pairs,
    merge_pairs,
    pairwise_pairs,
    ranking_pairs,
    rating_pairs,
    rubric_pairs,
    single_label_pairs,
)
from rlhf_ray.contracts import RUBRIC_CRITERIA


@dataclass(frozen=True)
class CurateSettings:
    consensus: str = "dawid_skene"
    max_iter: int = 200
    tol: float = 1e-4
    smoothing: float = 0.01
    min_confidence: float = 0.7
    kappa_floor: float = 0.1
    batch_by: tuple[str, ...] = ("guideline_version", "topic")
    health: HealthSettings = field(default_factory=HealthSettings)
    pairs: PairSettings = field(default_factory=PairSettings)
    active: ActiveSettings = field(default_factory=ActiveSettings)


@dataclass(frozen=True)
class ItemConsensus:
    labels: LabelSet
    posterior: np.ndarray
    estimated_accuracy: np.ndarray
    majority: np.ndarray
    iterations: int
    converged: bool


@dataclass(frozen=True)
class CurateResult:
    pairs: pa.Table
    adjudication: pa.Table
    annotators: pa.Table
    active: pa.Table
    report: dict[str, Any]


def _gold_index(labels: LabelSet, answers: Mapping[str, str]) -> dict[int, int]:
    """Known answers (gold questions, resolved adjudications) by item index and class index."""
    items = {item_id: i for i, item_id in enumerate(labels.item_ids)}
    classes = {c: k for k, c in enumerate(labels.categories)}
    return {items[item]: classes[answer] for item, answer in answers.items() if item in items and answer in classes}


def item_consensus(labels: LabelSet, answers: Mapping[str, str], settings: CurateSettings) -> ItemConsensus:
    """Dawid–Skene (gold clamped) or majority vote; both are computed so the report can compare them."""
    majority = majority_vote(labels.item_index, labels.label, labels.n_items, labels.n_classes)
    result = dawid_skene(labels.item_index, labels.annotator_index, labels.label, labels.n_items,
                         labels.n_annotators, labels.n_classes, gold=_gold_index(labels, answers),
                         max_iter=settings.max_iter, tol=settings.tol, smoothing=settings.smoothing)
    use_ds = settings.consensus == "dawid_skene"
    return ItemConsensus(labels, result.posterior if use_ds else majority.posterior, result.annotator_accuracy,
                         majority.label, result.iterations, result.converged)


def reliability(consensus: ItemConsensus) -> dict[str, float]:
    """Annotator weight in (0, 1]: the estimated accuracy rescaled so chance → 0, perfect → 1."""
    chance = 1.0 / max(2, consensus.labels.n_classes - ("tie" in consensus.labels.categories))
    return {name: max(0.0, (float(acc) - chance) / (1 - chance))
            for name, acc in zip(consensus.labels.annotators, consensus.estimated_accuracy, strict=True)}


def _batches(labels: LabelSet, batch_by: tuple[str, ...]) -> np.ndarray:
    columns = [labels.rows.column(name).to_pylist() for name in batch_by]
    return np.array(["|".join(str(v) for v in values) for values in zip(*columns, strict=True)], dtype=object)


def _agreement(labels: LabelSet, batches: np.ndarray, level: str = "nominal") -> dict[str, Any]:
    codes = labels.label if level == "nominal" else labels.label + 1
    return agreement_report(labels.item_index, labels.annotator_index, codes,
                            {"guideline_version": _group_keys(labels, "guideline_version"),
                             "topic": _group_keys(labels, "topic"), "batch": batches.tolist()}, level)


def _group_keys(labels: LabelSet, name: str) -> list[str]:
    """A grouping column with a missing value (imported labels carry no guideline version or topic) as ""."""
    return ["" if value is None else value for value in labels.rows.column(name).to_pylist()]


def _named_agreement(report: dict[str, Any], labels: LabelSet) -> dict[str, Any]:
    return {**report, "annotators": len(labels.annotators), "items": labels.n_items}


def expected_agreement(labels: LabelSet, gold: Mapping[int, int]) -> dict[str, Any]:
    """The Fleiss κ the labels would show if each annotator labelled every item as accurately as the items whose
    answer is known (`gold`: gold questions, resolved adjudications), by `expected_fleiss_kappa`, with how many
    gold labels that rests on. An annotator without gold labels takes the pooled accuracy of all gold labels; with
    no gold label at all the expectation is undefined (None)."""
    on_gold = agreement_with_reference(labels.item_index, labels.annotator_index, labels.label, gold,
                                       categories=range(len(labels.categories)))
    counted = {k: on_gold[k].n_items if k in on_gold else 0 for k in range(labels.n_annotators)}
    gold_labels = sum(counted.values())
    figures: dict[str, Any] = {"expected_fleiss_kappa": None, "gold_labels": gold_labels,
                               "annotators_with_gold": sum(n > 0 for n in counted.values())}
    if not gold_labels:
        return figures
    pooled = sum(on_gold[k].accuracy * n for k, n in counted.items() if n) / gold_labels
    accuracy = {k: on_gold[k].accuracy if n else pooled for k, n in counted.items()}
    kappa = expected_fleiss_kappa(labels.item_index, labels.annotator_index, labels.label, accuracy)
    return {**figures, "expected_fleiss_kappa": None if math.isnan(kappa) else round(kappa, 4)}


def _vs_consensus(consensus: ItemConsensus) -> dict[str, Any]:
    labels = consensus.labels
    reference = {i: int(k) for i, k in enumerate(consensus.posterior.argmax(axis=1))}
    result = agreement_with_reference(labels.item_index, labels.annotator_index, labels.label, reference)
    return {labels.annotators[a]: {"kappa": None if math.isnan(r.kappa) else round(r.kappa, 4),
                                   "accuracy": None if math.isnan(r.accuracy) else round(r.accuracy, 4)}
            for a, r in result.items()}


def _candidates(consensus: ItemConsensus) -> tuple[list[dict[str, Any]], list[tuple[str, list[str]]]]:
    """Each item once (its first label row): the active-learning candidate, and its prompt and responses."""
    labels = consensus.labels
    first = sorted({int(item): position for position, item in
                    reversed(list(enumerate(labels.item_index.tolist())))}.items())
    topics, segments = labels.rows.column("topic").to_pylist(), labels.rows.column("segment").to_pylist()
    prompts = labels.rows.column("prompt").to_pylist()
    responses = (labels.rows.column("responses").to_pylist() if labels.signal_type == "ranking" else
                 [list(pair) for pair in zip(labels.rows.column("response_a").to_pylist(),
                                             labels.rows.column("response_b").to_pylist(), strict=True)])
    # Imported labels may carry no topic or segment: "" keeps the strata columns text.
    return ([{"item_id": labels.item_ids[item], "signal_type": labels.signal_type, "topic": topics[row] or "",
              "segment": segments[row] or "", "disagreement": float(1 - consensus.posterior[item].max())}
             for item, row in first],
            [(prompts[row], responses[row]) for _, row in first])


def _counts(table: pa.Table, column: str) -> dict[str, int]:
    counts = table.column(column).value_counts().to_pylist() if table.num_rows else []
    return {c["values"]: c["counts"] for c in counts}


def _active_picks(candidates: list[dict[str, Any]], texts: list[tuple[str, list[str]]],
                  settings: ActiveSettings, rewards: Sequence[Reward]) -> pa.Table:
    """What to label next; with reward models the candidates carry their `reward_uncertainty` too."""
    if not candidates:
        return pa.table({})
    table = pa.Table.from_pylist(candidates)
    if rewards:
        table = table.append_column("uncertainty", pa.array(reward_uncertainty(texts, rewards).round(6)))
    return select_for_labeling(table, settings)


def curate(tables: Mapping[str, pa.Table], answers: Mapping[str, str], settings: CurateSettings,
           rewards: Sequence[Reward] = ()) -> CurateResult:
    """Run every QA step over the curated tables; `answers` holds gold and adjudicated answers by item id.
    `rewards` (reward models as `Reward`s, e.g. `reward_model_scorers`): active learning adds their uncertainty
    to the disagreement — a margin with one model, an ensemble's spread with several."""
    report: dict[str, Any] = {"consensus_method": settings.consensus, "agreement": {}}
    queues, candidates, texts, pairs = [], [], [], []
    pairwise = item_consensus(pairwise_labels(tables["pairwise"]), answers, settings) if "pairwise" in tables else None
    ranking = item_consensus(top_choice_labels(tables["ranking"]), answers, settings) if "ranking" in tables else None
    weights: dict[str, float] = {}
    for name, consensus in (("ranking", ranking), ("pairwise", pairwise)):
        if consensus is None or consensus.labels.n_items == 0:
            continue
        weights.update(reliability(consensus))
        labels = consensus.labels
        batches = _batches(labels, settings.batch_by)
        agreement = _agreement(labels, batches)
        report["agreement"][name] = _named_agreement(agreement, labels)
        batch_kappa = {b: s["fleiss_kappa"] for b, s in agreement["groups"]["batch"].items()}
        queue = adjudication_queue(labels, consensus.posterior, batches, batch_kappa, settings.min_confidence,
                                   settings.kappa_floor, answered=answers.keys())
        queues.append(queue)
        item_candidates, item_texts = _candidates(consensus)
        candidates.extend(item_candidates)
        texts.extend(item_texts)
        report[name] = {
            "items": labels.n_items, "labels": int(labels.label.size), "dawid_skene_iterations": consensus.iterations,
            "dawid_skene_converged": consensus.converged,
            "estimated_label_accuracy": round(float(consensus.posterior.max(axis=1).mean()), 4),
            "majority_agrees_with_consensus": round(float(
                (consensus.majority == consensus.posterior.argmax(axis=1)).mean()), 4),
            "annotator_vs_consensus": _vs_consensus(consensus),
            "adjudication_queue": queue.num_rows,
        }
        if name == "pairwise":  # binary choices (+ tie): what `expected_fleiss_kappa` models
            report[name].update(expected_agreement(labels, _gold_index(labels, answers)))
    skip = {item for queue in queues for item in queue.column("item_id").to_pylist()}
    if pairwise is not None:
        pairs += pairwise_pairs(pairwise.labels, pairwise.posterior, skip)
    if ranking is not None:
        pairs += ranking_pairs(ranking.labels, weights, skip)
    if "rating" in tables:
        pairs += rubric_pairs(tables["rating"], weights, settings.pairs) + rating_pairs(tables["rating"],
                                                                                        settings.pairs)
        if settings.pairs.criterion_pairs:
            pairs += criterion_pairs(tables["rating"], weights, settings.pairs, RUBRIC_CRITERIA)
        report["agreement"]["rubric"] = {
            criterion: _agreement(labels, _batches(labels, settings.batch_by), "ordinal")["overall"]
            for criterion in RUBRIC_CRITERIA
            for labels in [rubric_scores(tables["rating"], criterion)[0]] if labels.n_items
        }
    if "correction" in tables:
        pairs += correction_pairs(tables["correction"], settings.pairs)
    single = [p for name in ("pairwise", "ranking") if name in tables for p in single_label_pairs(tables[name], name)]
    pairs += single
    report["single_label_pairs"] = len(single)
    merged = merge_pairs(pairs)
    health = annotator_health(pairwise.labels, pairwise.posterior.argmax(axis=1), pairwise.estimated_accuracy,
                              _gold_index(pairwise.labels, answers), settings.health) if pairwise else pa.table({})
    active = _active_picks(candidates, texts, settings.active, rewards)
    queue = pa.concat_tables(queues) if queues else QUEUE_SCHEMA.empty_table()
    report.update(pairs=merged.num_rows, pairs_by_source=_counts(merged, "source"),
                  pairs_by_objective=_counts(merged, "objective"),
                  adjudication_queue=queue.num_rows, active_learning_picks=active.num_rows,
                  active_learning_uncertainty=(None if not rewards else "margin" if len(rewards) == 1
                                               else "ensemble"),
                  flagged_annotators={row["annotator"]: row["flags"] for row in health.to_pylist() if row["flags"]})
    return CurateResult(merged, queue, health, active, report)
