"""Active learning: which items to send to annotators next, under a labeling budget.

    score_i = w_d · disagreement_i + w_u · uncertainty_i      (uncertainty from a reward model, when present)

Strata (topic × segment) each get an equal share of the budget, filled by score; what a small stratum
cannot use goes to the best remaining items overall. Without a reward model the score is disagreement only.
With one, `reward_uncertainty` scores every item's responses: one model gives the margin uncertainty, several
(an ensemble) the spread of their margins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# (prompts, responses) → one reward per response, e.g. a reward model's normalised score
Reward = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


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


def reward_uncertainty(items: Sequence[tuple[str, Sequence[str]]], rewards: Sequence[Reward],
                       scale: float = 1.0) -> np.ndarray:
    """Per item (prompt, its responses: a pair, or the N of a ranking), how unsure the reward model(s) are which
    response is better:

        m_k = r_k(y₁) − r_k(y₂)     y₁, y₂ the item's two best responses by the mean reward over the models k
        one model:  u = exp(−|m| / scale)      (`margin_uncertainty`)
        ensemble:   u = std_k m_k               (`ensemble_uncertainty`)

    Every model scores all the items' responses in one call."""
    if not rewards:
        raise ValueError("reward_uncertainty needs at least one reward model")
    if any(len(responses) < 2 for _, responses in items):
        raise ValueError("every item needs at least two responses to compare")
    prompts = [prompt for prompt, responses in items for _ in responses]
    texts = [text for _, responses in items for text in responses]
    scores = np.array([np.asarray(reward(prompts, texts), dtype=float) for reward in rewards])  # [models, texts]
    starts = np.cumsum([0] + [len(responses) for _, responses in items])
    margins = np.empty((len(rewards), len(items)))
    for i, (first, last) in enumerate(pairwise(starts)):
        best, second = np.argsort(-scores[:, first:last].mean(axis=0), kind="stable")[:2]
        margins[:, i] = scores[:, first + best] - scores[:, first + second]
    return margin_uncertainty(margins[0], scale) if len(rewards) == 1 else ensemble_uncertainty(margins)


def reward_model_scorers(paths: Sequence[str], max_length: int = 512, batch_size: int = 16) -> list[Reward]:
    """Each reward model directory (`rlhf-ray train-rm`) as a `Reward`: its normalised score, in this process. A
    path that is no model directory raises `ModelNotFoundError` naming it."""
    if not paths:
        return []
    from rlhf_ray.roles.scoring import RewardScorer  # torch and transformers only when a model is asked for

    scorers = [RewardScorer(path, max_length=max_length, batch_size=batch_size) for path in paths]
    return [lambda prompts, responses, scorer=scorer: scorer.score(prompts, responses)["rm"] for scorer in scorers]


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
