"""`benchmarks/gpu_check.py` as CI runs it: the tiny model on the CPU, in a subprocess, without Ray."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_with_a_tiny_model() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--size", "tiny"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == [] and report["device"] == "cpu"
    assert report["sft"]["loss_fell"] and report["sft"]["train_tokens_per_s"] > 0
    assert report["rollout"]["weights_dtype"] == "torch.bfloat16" and report["rollout"]["generated_tokens"] > 0
    assert 0 < report["scorers"]["reference_logprob_max_abs_delta"] < 0.05
    assert report["scorers"]["reward_max_abs_delta"] < 0.02
    assert report["learner"]["weights_dtype"] == "torch.float32"
    assert all(math.isfinite(report["learner"][k]) for k in ("loss", "approx_kl", "entropy"))
    zero3 = report["zero3"]
    assert "skipped" in zero3 or (zero3["partitioned"] and zero3["export_reload_equal"])
    assert report["memory"]["cpu_max_rss_gib"] > 0
