"""One catalogue, one sink: figure → metric bindings, stage timers, feedback-loop latency, and a real job's figures
reaching all three sinks — stdout JSON lines, a wandb offline run, and Ray's Prometheus endpoint (scraped)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rlhf_ray.telemetry.bindings import BINDINGS, observations
from rlhf_ray.telemetry.catalogue import CATALOGUE, GROUPS, JOB_TAG, SERVING
from rlhf_ray.telemetry.loop_latency import latency_segments, loop_latency, signal_latency_figures
from rlhf_ray.telemetry.timing import StageTimer

ROOT = Path(__file__).resolve().parents[1]
FED_AT_CLOSE = {"rlhf_job_completions_total", "rlhf_job_last_completion_timestamp_seconds"}
NO_FIGURES = {"lineage", "cluster"}  # admin commands: they read or change state and report no figures


def test_the_catalogue_is_consistent() -> None:
    names = [spec.name for group in GROUPS.values() for spec in group]
    assert len(names) == len(set(names)) == len(CATALOGUE)
    assert [s.name for s in SERVING] == ["rlhf_serve_requests_total", "rlhf_serve_latency_seconds",
                                         "rlhf_serve_feedback_total", "rlhf_serve_safety_flags_total",
                                         "rlhf_serve_policy_retries_total", "rlhf_serve_canary_weight",
                                         "rlhf_serve_canary_decisions_total"]
    for spec in CATALOGUE.values():
        assert re.fullmatch(r"rlhf_[a-z0-9_]+", spec.name), spec.name
        assert spec.description.isascii(), f"{spec.name}: Ray encodes descriptions as ASCII"
        assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name
        assert (spec.kind == "histogram") == bool(spec.boundaries), spec.name
        assert list(spec.boundaries) == sorted(spec.boundaries), spec.name
        if spec not in SERVING:
            assert spec.tag_keys[0] == JOB_TAG, f"{spec.name}: every job metric carries the {JOB_TAG} tag"


def test_every_binding_fills_exactly_its_metrics_tags_and_every_job_metric_is_fed() -> None:
    for binding in BINDINGS:
        spec = CATALOGUE[binding.metric]
        tags = {JOB_TAG, *dict(binding.tags), *([binding.capture] if binding.capture else [])}
        assert tags == set(spec.tag_keys), f"{binding.metric}: a binding gives tags {sorted(tags)}"
        assert bool(binding.keys) != bool(binding.prefix), binding
    fed = {b.metric for b in BINDINGS} | FED_AT_CLOSE
    assert sorted(set(CATALOGUE) - fed - {s.name for s in SERVING}) == []


def test_figures_become_tagged_series() -> None:
    figures = {"kl": 0.12, "reward/rm": 0.4, "response/words": 31.0, "timing/generate": 1.5, "iteration": 3,
               "policy_dir": "/x", "nan": float("nan"), "gate/passed": True, "eval/true_utility": None,
               "unbound_figure": 7.0, "sft_heldout_loss": 0.9}
    found = {(o.spec.name, tuple(sorted(o.tags.items())), o.value) for o in observations("ppo", figures)}

    def tags(**extra: str) -> tuple:
        return tuple(sorted({JOB_TAG: "ppo", **extra}.items()))

    assert found == {
        ("rlhf_ppo_kl", tags(), 0.12),
        ("rlhf_ppo_reward", tags(term="rm"), 0.4),
        ("rlhf_ppo_response", tags(figure="words"), 31.0),
        ("rlhf_stage_seconds", tags(stage="generate"), 1.5),
        ("rlhf_stage_duration_seconds", tags(stage="generate"), 1.5),
        ("rlhf_ppo_iteration", tags(), 3.0),
        ("rlhf_gate_passed", tags(), 1.0),
        ("rlhf_train_loss", tags(split="heldout"), 0.9),  # the loop's stage-prefixed name
    }


def test_stage_timer_sums_repeated_stages() -> None:
    timer = StageTimer()
    for _ in range(2):
        with timer.stage("generate"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), timer.stage("reward"):
        raise RuntimeError("a failed stage is still timed")
    figures = timer.figures()
    assert set(figures) == {"timing/generate", "timing/reward"} and figures["timing/generate"] >= 0.02
    with pytest.raises(ValueError, match="stage name"), timer.stage("a/b"):
        pass


def test_signal_latency_takes_the_stalest_signal_type() -> None:
    quality = {"signal_types": {"pairwise": {"signal_latency_seconds": {"p50": 10.0, "p90": 50.0}},
                                "implicit": {"signal_latency_seconds": {"p50": 30.0, "p90": 40.0}}}}
    assert signal_latency_figures(quality) == {"signal_latency_seconds/p50": 30.0, "signal_latency_seconds/p90": 50.0}
    assert signal_latency_figures({}) == {}


def test_loop_latency_walks_the_lineage(tmp_path: Path) -> None:
    from rlhf_ray.lineage import LineageRegistry

    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    now = [t0]
    registry = LineageRegistry(tmp_path / "lineage", clock=lambda: now[0])
    data = tmp_path / "data"
    (data / "versions").mkdir(parents=True)
    quality = {"signal_types": {"rating": {"signal_latency_seconds": {"p50": 3600.0}}}}
    (data / "versions" / "ds-1.json").write_text(json.dumps({"quality": quality}))
    dataset = registry.register("dataset", "ds-1", "d1", uri=f"{data}/curated/ds-1")
    now[0] = t0 + timedelta(hours=5)
    model = registry.register("model", "sft", "m1", parents=(dataset.id,))
    figures = loop_latency(registry, model.id, "gated", t0 + timedelta(hours=6))
    assert figures == {"loop_latency/trained_to_gated": 3600.0, "loop_latency/ingest_to_trained": 18000.0,
                       "loop_latency/feedback_to_ingest": 3600.0, "loop_latency/feedback_to_gated": 25200.0}
    assert {o.spec.name for o in observations("evaluate", figures)} == {"rlhf_loop_latency_seconds"}
    checkpoint = registry.register("checkpoint", "dir", "c1")
    assert loop_latency(registry, checkpoint.id, "gated", t0) == {}  # when a bare directory was trained: unknown
    with pytest.raises(ValueError, match="naive datetime"):
        latency_segments("deployed", datetime(2026, 3, 1), t0)


def test_every_job_reports_through_the_sink() -> None:
    """Each `rlhf-ray` job module with figures builds its MetricsSink (`sink_for`, or the class itself)."""
    for path in sorted((ROOT / "jobs").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
        if "NAME" not in names or names["NAME"] in NO_FIGURES:
            continue
        called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name)}
        assert called & {"sink_for", "MetricsSink"}, f"{path.name}: job {names['NAME']!r} never builds its sink"


def test_the_sink_starts_no_ray_and_imports_none() -> None:
    """Logging before (or without) `ray.init`: stdout only, and Ray is never imported or started for it."""
    code = ("import sys, json\n"
            "from rlhf_ray.config import WandbConfig\n"
            "from rlhf_ray.telemetry.sink import MetricsSink\n"
            "sink = MetricsSink('probe', WandbConfig(mode='disabled'), '/tmp')\n"
            "sink.log({'kl': 0.5, 'timing/x': 1.0})\n"
            "sink.close({'done': True})\n"
            "print(json.dumps({'ray_imported': 'ray' in sys.modules, 'recorded': sink.prometheus.recorded}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["metrics"] == {"kl": 0.5, "timing/x": 1.0} and lines[1] == {"job": "probe", "done": True}
    assert lines[2] == {"ray_imported": False, "recorded": 0}


# ---- a real job, all three sinks -------------------------------------------------------------------------------

def _scrape(ray) -> str:
    """Every alive node's metrics endpoint (Ray's metrics agent on MetricsExportPort), concatenated."""
    pages = []
    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                pages.append(reply.read().decode())
    return "\n".join(pages)


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


@pytest.mark.ray
def test_a_job_reaches_stdout_wandb_and_prometheus(ray_cluster, tmp_path: Path, capsys) -> None:
    from jobs.simulate import SimulateConfig, run
    from rlhf_ray.config import WandbConfig
    from rlhf_ray.sim import ShardConfig, WorldConfig

    config = SimulateConfig(output_dir=str(tmp_path / "feedback"), world=WorldConfig(num_prompts=50),
                            shards=ShardConfig(rows=120, rows_per_shard=60, formats=("jsonl",)), task_cpus=0.25,
                            wandb=WandbConfig(mode="offline", dir=str(tmp_path / "wandb")))
    summary = run(config)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-2]["metrics"]["rows"] == 120 and lines[-1] == summary and summary["rows"] == 120
    assert list((tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")), "no wandb offline run was written"

    wanted = {("ray_rlhf_data_rows", "status", "simulated"), ("ray_rlhf_stage_seconds", "stage", "simulate"),
              ("ray_rlhf_stage_duration_seconds_count", "stage", "simulate"),
              ("ray_rlhf_job_completions_total", JOB_TAG, "simulate")}
    deadline, seen = time.monotonic() + 90, {}
    while time.monotonic() < deadline and len(seen) < len(wanted):
        text = _scrape(ray_cluster)
        for name, label, value in wanted:
            for labels, number in _samples(text, name):
                if labels.get(JOB_TAG) == "simulate" and labels.get(label) == value:
                    seen[name] = number
        time.sleep(2)
    assert set(seen) == {name for name, _, _ in wanted}, f"scraped only {sorted(seen)} within 90 s"
    assert seen["ray_rlhf_data_rows"] == 120 and seen["ray_rlhf_job_completions_total"] >= 1
