"""The loop's console: stage lines, progress and summaries on the terminal; Ray's and the libraries' output in
`<output_dir>/logs/`; a failed stage's error on the terminal with the log's path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_ray.console import Console, Tracker

TINY = ["world.num_prompts=60", "world.population.num_users=30", "world.population.num_annotators=6",
        "shards.rows_per_shard=300", "shards.rows=600", "wandb.mode=disabled", "iterations=1"]
# A quiet run of two stages: the log line, two lines per stage, the headline and summary (≈ 6), the JSON summary.
MAX_CONSOLE_LINES = 20


def _loop(out: Path, address: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`rlhf-ray loop` as a person runs it: its own process, its stderr not a terminal, joined to the test cluster
    (no second Ray to start)."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", "loop", "--config", "configs/quickstart.yaml",
                           f"output_dir={out}", f"ray.address={address}", *TINY, *overrides],
                          capture_output=True, text=True, timeout=300, check=False)


def _log_text(out: Path) -> str:
    logs = sorted((out / "logs").glob("loop-*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


@pytest.mark.ray
def test_a_quiet_loop_prints_stages_and_summaries_and_logs_ray_to_a_file(ray_cluster, tmp_path: Path) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    run = _loop(tmp_path, address, "stages=[simulate,ingest]")
    assert run.returncode == 0, run.stderr[-3000:]
    console = run.stdout.splitlines() + run.stderr.splitlines()
    assert len(console) <= MAX_CONSOLE_LINES, "\n".join(console)
    assert json.loads(run.stdout.splitlines()[-1])["job"] == "loop"  # the summary is still stdout's last line
    assert "simulate done in" in run.stderr and "rows accepted" in run.stderr and "logs/loop-" in run.stderr
    assert not [line for line in console if " INFO " in line or " WARNING " in line]
    log = _log_text(tmp_path)
    # Ray's own lines (connecting, Ray Data's executor) and the stages' JSON metric lines are in the log instead
    assert "Connecting to existing Ray cluster" in log and "streaming_executor" in log
    assert log.count('"job": "loop"') == 2  # each stage's figures as a metric line


@pytest.mark.ray
def test_a_failing_stage_prints_its_error_and_the_log_path(ray_cluster, tmp_path: Path) -> None:
    (tmp_path / "feedback").write_text("a file where simulate writes its shard folder")
    run = _loop(tmp_path, ray_cluster.get_runtime_context().gcs_address, "stages=[simulate]")
    assert run.returncode != 0
    log_path = next((tmp_path / "logs").glob("loop-*.log"))
    assert "stage simulate failed (RayTaskError(NotADirectoryError)" in run.stderr
    assert f"full log: {log_path}" in run.stderr
    assert "Traceback" in _log_text(tmp_path)


def test_progress_reads_metric_lines_as_ray_forwards_them() -> None:
    stream = io.StringIO()
    console = Console(stream, log_path="run.log")
    console.track(Tracker("ppo", 20, "iteration",
                          lambda record: record.get("step") if record.get("job") == "ppo" else None))
    for step in range(21):
        console.observe(f'\x1b[36m(PPOController pid=7)\x1b[0m {{"job": "ppo", "step": {step}, "metrics": {{}}}}')
        console.observe(f'{{"job": "sft", "step": {step}}}')  # another job's line: not this bar's
        console.observe("2026-01-01 INFO worker.py:1 -- {not json")
    console.track(None)
    # without a terminal: a plain line at the first step, then one per tenth of the work, not one per iteration
    shown = [1, *range(2, 21, 2)]
    assert stream.getvalue().splitlines() == [f"  ppo: iteration {step}/20" for step in shown], stream.getvalue()
