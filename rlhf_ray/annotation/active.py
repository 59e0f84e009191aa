"""Active learning: which items to send to annotators next, under a labeling budget.

    score_i = w_d · disagreement_i + w_u · uncertainty_i      (uncertainty from a reward model, when present)

Strata (topic × segment) each get an equal share of the budget, filled by score; what a small stratum
cannot use goes to the best remaining items overall. Without a reward model the score is disagreement only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class ActiveSettings:
    budget: int = 200
    disagreement_weight: float = 1.0
    uncertainty_weight: float = 1.0


def margin_uncertainty(reward_margin: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """u = exp(−|r_a − r_b| / scale): 1 when a reward model cannot tell two responses apart."""
    return np.exp(-np.abs(reward_margin) / scale)


def ensemble_uncertainty(rewards: np.ndarray) -> np.ndarray:
    """u = std over ensemble members of the predicted preference margin (rewards[member, item])."""
    return rewards.std(axis=0)


def select_for_labeling(candidates: pa.Table, settings: ActiveSettings) -> pa.Table:
    """`candidates` has item_id, topic, segment, disagreement and optionally uncertainty; returns the
    selection with its score, stratum and rank."""
    score = settings.disagreement_weight * candidates.column("disagreement").to_numpy(zero_copy_only=False)
    if "uncertainty" in candidates.column_names:
        score = score + settings.uncertainty_weight * candidates.column("uncertainty").to_numpy(zero_copy_only=False)
    strata = pc.binary_join_element_wise(candidates.column("topic"), candidates.column("segment"), "×")
    strata_values = np.array(strata.to_pylist(), dtype=object)
    names = sorted(set(strata_values.tolist()))
    quota = settings.budget // max(1, len(names))
    order = np.lexsort((np.arange(len(score)), -score))
    chosen: list[int] = []
    for name in names:
        chosen.extend([int(i) for i in order if strata_values[i] == name][:quota])
    taken = set(chosen)
    chosen.extend([int(i) for i in order if int(i) not in taken][: settings.budget - len(chosen)])
    chosen = sorted(chosen, key=lambda i: (-score[i], i))[: settings.budget]
    selected = candidates.take(pa.array(chosen, pa.int64()))
    return selected.append_column("score", pa.array(score[chosen].round(6))) \
        .append_column("stratum", pa.array(strata_values[chosen].tolist(), pa.string())) \
        .append_column("rank", pa.array(range(1, len(chosen) + 1), pa.int64()))
