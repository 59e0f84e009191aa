"""Drift maths (PSI, KS, share shifts) against hand computations and SciPy; the drift job on two dataset versions."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rlhf_ray.evaluation.drift import (
    DriftReport,
    DriftThresholds,
    categorical_drift,
    kolmogorov_q,
    ks_test,
    label_counts,
    numeric_drift,
    numeric_psi,
    psi,
    quantile_edges,
    share_shift,
    standardized_mean_shift,
)
from rlhf_ray.telemetry.bindings import observations


def test_psi_by_hand_and_as_symmetrised_kl() -> None:
    # r = (½, ½), c = (0.9, 0.1): 0.4·ln 1.8 + (−0.4)·ln 0.2
    assert psi([5, 5], [9, 1]) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    r, c = np.array([0.2, 0.3, 0.5]), np.array([0.25, 0.25, 0.5])
    kl = float(np.sum(c * np.log(c / r)) + np.sum(r * np.log(r / c)))
    assert psi(r, c) == pytest.approx(kl)
    assert psi([3, 7], [30, 70]) == pytest.approx(0.0)
    assert psi([1, 0], [0, 1]) > 10  # empty bins are floored, not ln 0


@pytest.mark.parametrize(("reference", "current", "message"), [
    ([1, 2], [1, 2, 3], "same bins"),
    ([1, -1], [1, 1], "≥ 0"),
    ([0, 0], [1, 1], "positive total"),
])
def test_psi_rejects_bad_histograms(reference: list, current: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        psi(reference, current)


def test_ks_matches_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    for n, m, shift in ((200, 300, 0.0), (500, 400, 0.3), (60, 50, 0.5)):
        a, b = rng.normal(0, 1, n), rng.normal(shift, 1, m)
        distance, p_value = ks_test(a, b)
        reference = stats.ks_2samp(a, b, method="asymp")
        assert distance == pytest.approx(reference.statistic)
        assert p_value == pytest.approx(reference.pvalue, abs=0.02)
    ties = ks_test([1, 1, 2, 2, 3], [1, 2, 2, 3, 3, 3])
    assert ties[0] == pytest.approx(stats.ks_2samp([1, 1, 2, 2, 3], [1, 2, 2, 3, 3, 3]).statistic)
    assert kolmogorov_q(0.0) == 1.0 and kolmogorov_q(3.0) < 1e-6


def test_numeric_psi_quiet_on_the_same_law_and_loud_on_a_shift() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 5000)
    assert numeric_psi(reference, rng.normal(0, 1, 5000)) < 0.02
    assert numeric_psi(reference, rng.normal(1.0, 1, 5000)) > 0.25
    assert quantile_edges([1, 1, 1, 1, 2], bins=4).tolist() == [1.0]  # repeated edges merge
    with pytest.raises(ValueError, match="bins must be an integer ≥ 2"):
        quantile_edges([1.0, 2.0], bins=1)
    with pytest.raises(ValueError, match="current must hold finite numbers"):
        numeric_psi([1.0, 2.0], [float("nan")])


def test_share_shift_label_counts_and_mean_shift() -> None:
    assert share_shift({"a": 5, "b": 5}, {"a": 7, "b": 2, "tie": 1}) == pytest.approx(0.3)
    assert label_counts(["x", "y", "z", "x"], top=["x"]) == Counter({"x": 2, "__other__": 2})
    assert standardized_mean_shift([0, 2], [3, 5]) == pytest.approx(3.0)  # σ_ref = 1, means 1 → 4


def test_alerts_follow_the_thresholds() -> None:
    thresholds = DriftThresholds(psi=0.2, label_balance=0.1)
    rng = np.random.default_rng(2)
    quiet = numeric_drift("reward_probe", rng.normal(0, 1, 500), rng.normal(0, 1, 500), thresholds, mean_shift=True)
    moved = numeric_drift("reward_probe", rng.normal(0, 1, 500), rng.normal(1, 1, 500), thresholds, mean_shift=True)
    assert not quiet.alert and moved.alert and any("mean shift" in r for r in moved.reasons)
    balance = categorical_drift("label_pairwise_choice", {"a": 50, "b": 50}, {"a": 65, "b": 35}, thresholds,
                                balance=True)
    assert balance.alert and balance.shift == pytest.approx(0.15)
    assert not categorical_drift("label_thumbs", {"up": 50, "down": 50}, {"up": 52, "down": 48}, thresholds,
                                 balance=True).alert
    report = DriftReport((quiet, moved, balance))
    assert report.alerts == ["reward_probe", "label_pairwise_choice"]
    figures = report.figures()
    assert figures["drift/label_balance_shift"] == pytest.approx(0.15)
    assert "drift/reward_mean_shift" in figures and "drift/ks/reward_probe" in figures
    bound = {o.spec.name for o in observations("drift", figures)}
    assert bound == {"rlhf_drift_psi", "rlhf_drift_ks", "rlhf_drift_alert", "rlhf_drift_label_balance_shift",
                     "rlhf_drift_reward_mean_shift"}


# ---- the job ---------------------------------------------------------------------------------------------------

def write_dataset(root: Path, segments: dict[str, float], rows: dict[str, int], seed: int = 0) -> str:
    """A committed dataset version in ingest's layout, from clean simulated rows; returns the dataset id."""
    import pyarrow as pa

    from rlhf_ray.contracts import SIGNAL_SCHEMAS, SignalType
    from rlhf_ray.dataplane.versions import commit_version
    from rlhf_ray.lineage import LineageRegistry
    from rlhf_ray.sim import ShardConfig, ShardSpec, World, WorldConfig
    from rlhf_ray.sim.shards import build_shard_rows
    from rlhf_ray.storage import StorageRoot

    world = World(WorldConfig(num_prompts=200, segments=segments), seed)
    clean = ShardConfig(rows=100, malformed_fraction=0.0, duplicate_fraction=0.0, pii_fraction=0.0)
    out = StorageRoot.from_uri(root)
    for signal_type, count in rows.items():
        built, _ = build_shard_rows(world, clean, ShardSpec(signal_type, 0, count, "parquet"))
        table = pa.Table.from_pylist(built, schema=SIGNAL_SCHEMAS[SignalType(signal_type)])
        out.write_parquet_atomic(table, ".staging", "curated", signal_type, "part-00000.parquet")
    version = f"ds-{seed}{len(segments)}"
    lineage = str(root / "lineage")
    dataset = LineageRegistry(lineage).register("dataset", version, version, uri=out.join("curated", version))
    commit_version(out, out.join(".staging"), version,
                   {"version": version, "dataset_id": dataset.id, "lineage_root": lineage})
    return dataset.id


@pytest.mark.ray
def test_drift_job_flags_a_changed_prompt_mix_and_signal_mix(ray_cluster, tmp_path: Path, capsys) -> None:
    from jobs.drift import DriftConfig, run
    from rlhf_ray.config import WandbConfig
    from rlhf_ray.lineage import LineageRegistry

    usual = {"core": 0.8, "edge": 0.15, "model_confused": 0.05}
    write_dataset(tmp_path / "ref", usual, {"pairwise": 600, "rating": 400, "implicit": 300})
    current_id = write_dataset(tmp_path / "cur", {"core": 0.3, "edge": 0.6, "model_confused": 0.1},
                               {"pairwise": 900, "rating": 150, "implicit": 300}, seed=1)
    summary = run(DriftConfig(reference=str(tmp_path / "ref"), current=str(tmp_path / "cur"),
                              output_dir=str(tmp_path / "out"), wandb=WandbConfig(mode="disabled")))
    assert {"prompt_segment", "signal_mix"} <= set(summary["alerts"])
    assert summary["drift/psi/prompt_segment"] > 0.2 and summary["drift/alert/signal_mix"] == 1.0
    assert "drift/ks/prompt_length" in summary and "drift/label_balance_shift" in summary
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert {f["feature"] for f in report["features"]} >= {"prompt_length", "prompt_topic", "prompt_tokens",
                                                          "label_pairwise_choice", "label_thumbs"}
    event = LineageRegistry(tmp_path / "cur" / "lineage").events(current_id)[-1]
    assert event.event == "drift" and event.payload["alerts"] == summary["alerts"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-1]["job"] == "drift" and "drift/psi/signal_mix" in lines[-2]["metrics"]

    same = run(DriftConfig(reference=str(tmp_path / "ref"), output_dir=str(tmp_path / "same"),
                           wandb=WandbConfig(mode="disabled")))
    assert same["alerts"] == [] and same["drift/psi/prompt_topic"] == pytest.approx(0.0)


def test_drift_job_needs_something_to_compare(tmp_path: Path) -> None:
    from jobs.drift import DriftConfig, DriftError, detect

    with pytest.raises(DriftError, match="needs --reference"):
        detect(DriftConfig(output_dir=str(tmp_path)))
    with pytest.raises(DriftError, match="both --reference-rm and --current-rm"):
        detect(DriftConfig(reference=str(tmp_path), reference_rm=str(tmp_path), output_dir=str(tmp_path)))


@pytest.mark.ray
@pytest.mark.slow
def test_reward_drift_on_the_probe_set(trained_policy, tmp_path: Path) -> None:
    """One reward model against itself scores the fixed probe set identically: no drift, no alert."""
    from jobs.drift import DriftConfig, detect
    from rlhf_ray.sim import WorldConfig

    rm = trained_policy["rm"]["reward_model_dir"]
    summary = detect(DriftConfig(reference_rm=rm, current_rm=rm, world=WorldConfig(num_prompts=200),
                                 output_dir=str(tmp_path)))
    assert summary["alerts"] == []
    assert summary["drift/psi/reward_probe"] == pytest.approx(0.0, abs=1e-9)
    assert summary["drift/reward_mean_shift"] == pytest.approx(0.0, abs=1e-6)
