"""Preference pairs (prompt, chosen, rejected, weight, source signal ids) from every kind of feedback.

- pairwise choices: the consensus winner over the loser, weight = consensus posterior;
- best-of-N rankings: every implied pair i ≻ j, weight = reliability-weighted share of annotators who
  put i above j (kept when > ½);
- rubric scores and user ratings: responses to the same prompt whose mean scores differ by at least
  a gap, weight growing with the gap;
- corrections: the human edit over the original.

Every pair above has objective `preference` (overall quality). Rubric ratings also give per-criterion pairs
(objective = the criterion, e.g. `safety`): responses whose mean score *on that criterion* differs by at
least the rubric gap. A multi-objective reward model trains one head per objective on them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rlhf_ray.annotation.labels import LabelSet

PAIR_SCHEMA = pa.schema([
    pa.field("pair_id", pa.string()),
    pa.field("prompt_id", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("chosen", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("source", pa.string()),
    pa.field("source_signal_ids", pa.list_(pa.string())),
    pa.field("topic", pa.string()),
    pa.field("segment", pa.string()),
    pa.field("objective", pa.string()),
])
PREFERENCE = "preference"
LIKERT_RANGE = 4.0


@dataclass(frozen=True)
class PairSettings:
    rubric_min_gap: float = 1.0
    rating_min_gap: float = 0.5
    correction_weight: float = 0.9
    rubric_weights: Mapping[str, float] | None = None
    criterion_pairs: bool = True


def pair_id(prompt_id: str, chosen: str, rejected: str, objective: str = PREFERENCE) -> str:
    """Content id; a criterion pair and an overall pair over the same texts are different pairs."""
    key = f"{prompt_id}\0{chosen}\0{rejected}" + ("" if objective == PREFERENCE else f"\0{objective}")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _pair(row: Mapping[str, Any], chosen: str, rejected: str, weight: float, source: str,
          signal_ids: list[str], objective: str = PREFERENCE) -> dict[str, Any]:
    return {"pair_id": pair_id(row["prompt_id"], chosen, rejected, objective), "prompt_id": row["prompt_id"],
            "prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "weight": round(float(weight), 6),
            "source": source, "source_signal_ids": sorted(signal_ids), "topic": row.get("topic"),
            "segment": row.get("segment"), "objective": objective}


def _items(labels: LabelSet) -> Iterator[tuple[int, list[int]]]:
    """(item index, row positions of its labels) for every item, without a Python pass per label."""
    order = np.argsort(labels.item_index, kind="stable")
    bounds = np.flatnonzero(np.diff(labels.item_index[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size:
            yield int(labels.item_index[rows[0]]), rows.tolist()


def pairwise_pairs(labels: LabelSet, posterior: np.ndarray, skip: set[str]) -> list[dict[str, Any]]:
    """One pair per pairwise item whose consensus is "a" or "b" (ties and skipped items give none)."""
    table = labels.rows.select(["prompt_id", "prompt", "topic", "segment", "response_a", "response_b",
                                "signal_id"]).to_pylist()
    pairs = []
    for item, rows in _items(labels):
        winner = int(np.argmax(posterior[item]))
        if winner == 2 or labels.item_ids[item] in skip:
            continue
        first = table[rows[0]]
        responses = (first["response_a"], first["response_b"])
        pairs.append(_pair(first, responses[winner], responses[1 - winner], posterior[item, winner], "pairwise",
                           [table[r]["signal_id"] for r in rows]))
    return pairs


def ranking_pairs(labels: LabelSet, reliability: Mapping[str, float], skip: set[str]) -> list[dict[str, Any]]:
    """All implied pairs of each ranked item; share_ij = Σ_j w_a·[a ranks i above j] / Σ w_a over annotators a."""
    table = labels.rows.select(["prompt_id", "prompt", "topic", "segment", "responses", "ranking", "actor_id",
                                "signal_id"]).to_pylist()
    pairs = []
    for item, rows in _items(labels):
        if labels.item_ids[item] in skip:
            continue
        first = table[rows[0]]
        weights = np.array([reliability.get(table[r]["actor_id"], 0.0) for r in rows])
        if weights.sum() <= 0:
            continue
        places = [{response: place for place, response in enumerate(table[r]["ranking"])} for r in rows]
        for i, j in combinations(range(len(first["responses"])), 2):
            share = float(sum(w for w, place in zip(weights, places, strict=True) if place[i] < place[j])
                          / weights.sum())
            better, worse, weight = (i, j, share) if share > 0.5 else (j, i, 1 - share)
            if weight > 0.5:
                pairs.append(_pair(first, first["responses"][better], first["responses"][worse], weight, "ranking",
                                   [table[r]["signal_id"] for r in rows]))
    return pairs


def single_label_pairs(table: pa.Table, signal_type: str) -> list[dict[str, Any]]:
    """Pairwise and ranking rows without an item id (imported preference sets whose labeller is unknown): one label
    that no second label can agree with, so no consensus and no adjudication. Each passes through with its given
    confidence as its weight (1 when it gives none): a choice of a or b is one pair (a tie none), a ranking gives
    every implied pair."""
    rows = table.filter(pc.is_null(table.column("item_id"))).to_pylist()
    pairs = []
    for row in rows:
        weight = 1.0 if row.get("confidence") is None else row["confidence"]
        if signal_type == "pairwise" and row["choice"] in ("a", "b"):
            chosen, rejected = ((row["response_a"], row["response_b"]) if row["choice"] == "a"
                                else (row["response_b"], row["response_a"]))
            pairs.append(_pair(row, chosen, rejected, weight, "pairwise", [row["signal_id"]]))
        elif signal_type == "ranking":
            order = [row["responses"][i] for i in row["ranking"]]
            pairs += [_pair(row, better, worse, weight, "ranking", [row["signal_id"]])
                      for better, worse in combinations(order, 2)]
    return pairs


def _scored_pairs(scored: list[tuple[dict[str, Any], str, float, list[str]]], min_gap: float, scale: float,
                  source: str, objective: str = PREFERENCE) -> list[dict[str, Any]]:
    """Pairs between responses to the same prompt whose mean scores differ by ≥ min_gap; weight = min(1, gap/scale)."""
    by_prompt: dict[str, dict[str, list]] = defaultdict(dict)
    for row, response, score, ids in scored:
        entry = by_prompt[row["prompt_id"]].setdefault(response, [row, [], []])
        entry[1].append(score)
        entry[2].extend(ids)
    pairs = []
    for responses in by_prompt.values():
        means = {text: (float(np.mean(v[1])), v) for text, v in responses.items()}
        for (text_a, (mean_a, entry_a)), (text_b, (mean_b, entry_b)) in combinations(means.items(), 2):
            gap = abs(mean_a - mean_b)
            if gap >= min_gap:
                chosen, rejected = (text_a, text_b) if mean_a > mean_b else (text_b, text_a)
                pairs.append(_pair(entry_a[0], chosen, rejected, min(1.0, gap / scale), source,
                                   entry_a[2] + entry_b[2], objective))
    return pairs


def _reliable_rubric_rows(table: pa.Table, reliability: Mapping[str, float]) -> list[dict[str, Any]]:
    rows = table.filter(pc.equal(table.column("scale"), "rubric5")).to_pylist()
    return [row for row in rows if reliability.get(row["actor_id"], 0.0) > 0]


def rubric_pairs(table: pa.Table, reliability: Mapping[str, float], settings: PairSettings) -> list[dict[str, Any]]:
    """Annotator rubric ratings: the mean of (weighted) criteria per rating; unreliable annotators excluded."""
    scored = []
    for row in _reliable_rubric_rows(table, reliability):
        weights = settings.rubric_weights or {}
        total = sum(weights.get(s["criterion"], 1.0) for s in row["scores"])
        score = sum(weights.get(s["criterion"], 1.0) * s["score"] for s in row["scores"]) / total
        scored.append((row, row["response"], score, [row["signal_id"]]))
    return _scored_pairs(scored, settings.rubric_min_gap, LIKERT_RANGE, "rubric")


def criterion_pairs(table: pa.Table, reliability: Mapping[str, float], settings: PairSettings,
                    criteria: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-criterion pairs from rubric ratings (objective = criterion), for multi-objective reward heads."""
    rows = _reliable_rubric_rows(table, reliability)
    pairs = []
    for criterion in criteria:
        scored = [(row, row["response"], score["score"], [row["signal_id"]])
                  for row in rows for score in row["scores"] if score["criterion"] == criterion]
        pairs += _scored_pairs(scored, settings.rubric_min_gap, LIKERT_RANGE, "rubric", criterion)
    return pairs


def rating_pairs(table: pa.Table, settings: PairSettings) -> list[dict[str, Any]]:
    """User thumbs and Likert ratings, normalised to [0, 1]: thumbs as is, Likert (s − 1) / 4."""
    rows = table.filter(pc.is_in(table.column("scale"), value_set=pa.array(["thumbs", "likert5"]))).to_pylist()
    scored = []
    for row in rows:
        score = row["scores"][0]["score"]
        normalised = score if row["scale"] == "thumbs" else (score - 1) / LIKERT_RANGE
        scored.append((row, row["response"], normalised, [row["signal_id"]]))
    return _scored_pairs(scored, settings.rating_min_gap, 1.0, "rating")


def correction_pairs(table: pa.Table, settings: PairSettings) -> list[dict[str, Any]]:
    """A human edit is preferred over what it corrected."""
    return [_pair(row, row["edited_response"], row["response"], settings.correction_weight, "correction",
                  [row["signal_id"]])
            for row in table.to_pylist() if row["edited_response"].strip() != row["response"].strip()]


def merge_pairs(pairs: list[dict[str, Any]]) -> pa.Table:
    """One row per pair id: the highest weight wins, source signal ids are united. Two identical texts
    express no preference and are dropped."""
    merged: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if pair["chosen"].strip() == pair["rejected"].strip():
            continue
        kept = merged.get(pair["pair_id"])
        if kept is None:
            merged[pair["pair_id"]] = dict(pair)
            continue
        ids = sorted(set(kept["source_signal_ids"]) | set(pair["source_signal_ids"]))
        if pair["weight"] > kept["weight"]:
            merged[pair["pair_id"]] = dict(pair)
        merged[pair["pair_id"]]["source_signal_ids"] = ids
    return pa.Table.from_pylist(sorted(merged.values(), key=lambda p: p["pair_id"]), schema=PAIR_SCHEMA)
