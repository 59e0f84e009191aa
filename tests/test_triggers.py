"""Retraining triggers of `rlhf-ray loop --watch`: volume of new accepted rows, drift alerts, models trained on
erased rows; any one fires."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.loop import LoopRun
from jobs.loop_config import LoopConfig, WatchSection
from jobs.loop_state import LoopState
from rlhf_ray.dataplane.erasure import MARK_EVENT
from rlhf_ray.evaluation.triggers import retraining_trigger
from rlhf_ray.lineage import LineageRegistry


def test_volume_fires_at_the_threshold_and_not_below() -> None:
    assert not retraining_trigger(99, 100, None).fired
    fired = retraining_trigger(100, 100, None)
    assert fired.fired and fired.reasons == ("volume: 100 new accepted rows ≥ 100",)


def test_a_drift_alert_fires_without_volume_and_an_off_trigger_never_fires() -> None:
    decision = retraining_trigger(3, 100, ["prompt_topic", "signal_mix"])
    assert decision.fired and decision.reasons == ("drift: 2 alert(s): prompt_topic, signal_mix",)
    assert not retraining_trigger(3, 100, []).fired
    assert not retraining_trigger(10_000, None, None).fired  # both off
    assert retraining_trigger(0, None, None).to_dict() == {"fired": False, "reasons": [], "new_rows": 0,
                                                           "min_new_rows": None, "drift_alerts": None,
                                                           "erased_models": []}


def test_both_triggers_report_their_reasons() -> None:
    decision = retraining_trigger(500, 100, ["label_pairwise_choice"])
    assert decision.fired and len(decision.reasons) == 2 and decision.drift_alerts == ("label_pairwise_choice",)


def test_watch_needs_a_trigger() -> None:
    with pytest.raises(ValueError, match="watch needs a trigger"):
        WatchSection(min_new_rows=None, drift_alert=False)
    assert WatchSection(min_new_rows=None, drift_alert=True).drift_alert


def test_a_model_trained_on_erased_rows_fires_the_trigger_alone() -> None:
    decision = retraining_trigger(0, 100, [], ["policy-abc"])
    assert decision.fired and decision.reasons == ("erasure: policy-abc trained on erased rows",)


def test_the_loop_finds_its_current_models_marked_by_an_erasure(tmp_path: Path) -> None:
    registry = LineageRegistry(str(tmp_path / "lineage"), key=b"k" * 32)
    sft, rm, policy = (registry.register(kind, name, digest).id for kind, name, digest in
                       (("model", "sft", "a" * 64), ("reward-model", "rm", "b" * 64), ("policy", "ppo", "c" * 64)))
    state = LoopState(str(tmp_path))
    state.record(1, "sft", "f", {"sft_model_id": sft})
    state.record(1, "train-rm", "f", {"reward_model_id": rm})
    state.record(1, "ppo", "f", {"policy_id": policy})
    loop = SimpleNamespace(state=state, registry=registry, config=LoopConfig())
    assert LoopRun.erased_models(loop, 2) == []
    registry.record_event(MARK_EVENT, rm, {"erasure_seq": 7})
    registry.record_event("gate", policy, {"verdict": "pass"})  # another event marks nothing
    assert LoopRun.erased_models(loop, 2) == [rm]
