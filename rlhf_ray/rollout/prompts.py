"""Training prompts on their way to the rollout workers: flat rows, each worker's share, and the per-epoch order.

A row is a prompt as plain strings (its conversation, if any, as JSON) with a `draw_key`, the id the sample ledger
(`rlhf_ray.training.ledger`) files its draw under. `PromptSampler` reshuffles the rows every epoch with a seeded
permutation, so batch i is a pure function of (seed, i) and a resumed run sees the prompts it would have seen.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlhf_ray.inputs import Prompt


def prompt_row(prompt: Prompt) -> dict[str, str]:
    """A prompt as a flat row of strings: its conversation, if any, as JSON."""
    return {"prompt_id": prompt.prompt_id, "prompt": prompt.text,
            "messages": json.dumps(list(prompt.messages)) if prompt.messages else ""}


def row_conversation(row: Mapping[str, str]) -> Any:
    """What the rollout worker renders for a row: its conversation (system turn and history), else its text."""
    return json.loads(row["messages"]) if row.get("messages") else row["prompt"]


def row_shards(rows: int, workers: int) -> list[list[int]]:
    """Row indices per rollout worker, in order (so a prompt's samples stay contiguous)."""
    return [[int(i) for i in part] for part in np.array_split(np.arange(rows), workers)]


def with_draw_keys(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each row with its `draw_key`: its prompt id, suffixed `#k` for the k-th row (k ≥ 2) of an id that occurs more
    than once (a prompt file may hold one prompt text twice: two rows, so two draws per epoch in the ledger)."""
    seen: Counter[str] = Counter()
    keyed = []
    for row in rows:
        seen[row["prompt_id"]] += 1
        count = seen[row["prompt_id"]]
        keyed.append({**row, "draw_key": row["prompt_id"] if count == 1 else f"{row['prompt_id']}#{count}"})
    return keyed


class PromptSampler:
    """Training prompts reshuffled every epoch; batch i is a pure function of (seed, i), so a resumed run sees
    the prompts it would have seen. The prompts are already in the driver's memory (read and split by the
    prompt source), so each epoch's order is a seeded permutation here: a Ray Data shuffle of them cost ≈ 1.3 s
    of task scheduling per epoch on the hot path and bought nothing."""

    def __init__(self, rows: list[dict[str, str]], batch_size: int, seed: int) -> None:
        if len(rows) < batch_size:
            raise ValueError(f"prompts_per_iteration={batch_size} exceeds the {len(rows)} training prompts")
        self.rows, self.batch_size, self.seed = with_draw_keys(rows), batch_size, seed
        self.per_epoch = len(rows) // batch_size
        self._epoch, self._order = -1, np.arange(0)

    def batch(self, iteration: int) -> list[dict[str, str]]:
        epoch, index = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return [self.rows[i] for i in self._order[index * self.batch_size : (index + 1) * self.batch_size]]
