"""Retraining triggers of `rlhf-ray loop --watch`: volume of new accepted rows, drift alerts, either one."""

from __future__ import annotations

import pytest

from jobs.loop_config import WatchSection
from rlhf_ray.evaluation.triggers import retraining_trigger


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
                                                           "min_new_rows": None, "drift_alerts": None}


def test_both_triggers_report_their_reasons() -> None:
    decision = retraining_trigger(500, 100, ["label_pairwise_choice"])
    assert decision.fired and len(decision.reasons) == 2 and decision.drift_alerts == ("label_pairwise_choice",)


def test_watch_needs_a_trigger() -> None:
    with pytest.raises(ValueError, match="watch needs a trigger"):
        WatchSection(min_new_rows=None, drift_alert=False)
    assert WatchSection(min_new_rows=None, drift_alert=True).drift_alert
