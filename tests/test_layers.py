"""The architecture's import rules hold: rlhf_ray imports neither actors nor jobs; actors never imports jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"rlhf_ray": {"actors", "jobs"}, "actors": {"jobs"}}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    violations = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & FORBIDDEN[package]) for path in files
    }
    assert {k: v for k, v in violations.items() if v} == {}


def test_every_config_file_validates_against_its_job_schema() -> None:
    from jobs.canary import CanaryConfig
    from jobs.dpo import DPOConfig
    from jobs.evaluate import EvaluateConfig
    from jobs.ingest import IngestConfig
    from jobs.init_model import InitModelConfig
    from jobs.loop import LoopConfig
    from jobs.ppo import PPOConfig
    from jobs.sft import SFTConfig
    from jobs.simulate import SimulateConfig
    from jobs.sweep import SweepConfig
    from jobs.train_rm import TrainRMConfig
    from jobs.workbench import WorkbenchConfig
    from rlhf_ray.config import load_config

    schemas = {"quickstart.yaml": LoopConfig, "simulate.yaml": SimulateConfig, "init_model.yaml": InitModelConfig,
               "ingest.yaml": IngestConfig, "sft.yaml": SFTConfig, "sft_deepspeed.yaml": SFTConfig,
               "train_rm.yaml": TrainRMConfig, "dpo.yaml": DPOConfig, "ppo.yaml": PPOConfig,
               "canary.yaml": CanaryConfig, "sweep.yaml": SweepConfig, "evaluate.yaml": EvaluateConfig,
               "workbench.yaml": WorkbenchConfig, "ppo_multinode.yaml": PPOConfig, "ppo_8b_8gpu.yaml": PPOConfig}
    files = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert files == sorted(schemas), "every config file needs its schema listed here"
    for name, schema in schemas.items():
        load_config(schema, ROOT / "configs" / name)
