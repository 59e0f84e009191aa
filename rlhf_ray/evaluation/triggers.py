"""Retraining triggers: whether `rlhf-ray loop --watch` starts another iteration on the feedback that arrived.

    volume:  new_rows = accepted rows of the newly ingested dataset − accepted rows of the one the last
             iteration trained on;  fires when new_rows ≥ min_new_rows
    drift:   fires when the drift report (new dataset version vs the last iteration's) raised any alert
    erasure: fires when a model the last iteration trained or serves was trained on rows since erased or
             expired (`rlhf-ray erase`, `rlhf-ray retention` mark it `trained_on_erased_data`)

Any one fires the trigger; a trigger that is off (None) never does. Quarantined and duplicate rows are not
new signal, which is why volume counts accepted rows after ingest rather than raw rows in the shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TriggerDecision:
    fired: bool
    reasons: tuple[str, ...]
    new_rows: int
    min_new_rows: int | None
    drift_alerts: tuple[str, ...] | None  # None: the drift trigger is off
    erased_models: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "reasons": list(self.reasons), "new_rows": self.new_rows,
                "min_new_rows": self.min_new_rows,
                "drift_alerts": None if self.drift_alerts is None else list(self.drift_alerts),
                "erased_models": list(self.erased_models)}


def retraining_trigger(new_rows: int, min_new_rows: int | None, drift_alerts: Sequence[str] | None,
                       erased_models: Sequence[str] = ()) -> TriggerDecision:
    """Judge the triggers; `drift_alerts` None means the drift trigger is off, `min_new_rows` None the volume one;
    `erased_models` are the ids of current models marked as trained on erased rows (the erasure trigger is
    always on: a model must not keep serving what a subject asked to have removed)."""
    reasons = []
    if min_new_rows is not None and new_rows >= min_new_rows:
        reasons.append(f"volume: {new_rows} new accepted rows ≥ {min_new_rows}")
    if drift_alerts:
        reasons.append(f"drift: {len(drift_alerts)} alert(s): {', '.join(drift_alerts)}")
    if erased_models:
        reasons.append(f"erasure: {', '.join(erased_models)} trained on erased rows")
    return TriggerDecision(bool(reasons), tuple(reasons), new_rows, min_new_rows,
                           None if drift_alerts is None else tuple(drift_alerts), tuple(erased_models))
