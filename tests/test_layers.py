"""The architecture's import rules hold: rlhf_ray imports neither actors nor jobs; actors never imports jobs; the
module graph has no cycle; only the listed modules read the simulator."""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"rlhf_ray": {"actors", "jobs"}, "actors": {"jobs"}}
PACKAGES = ("rlhf_ray", "actors", "jobs")
# Who may import `rlhf_ray.sim` (besides the simulator itself, benchmarks and tests): the job that writes its
# shards, the one world adapter, and the canary's simulated users.
SIM_READERS = {"jobs.simulate", "rlhf_ray.inputs.world", "rlhf_ray.serving.simulation"}


def _module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imported_modules(path: Path, known: Collection[str] = ()) -> set[str]:
    """Every module named by an absolute import anywhere in the file (function bodies and TYPE_CHECKING blocks
    included: a deferred import is still a dependency). `from p import n` names `p.n` when that is one of the
    `known` modules (a submodule), else `p`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    return names


def module_graph() -> dict[str, set[str]]:
    """Project module → the project modules it imports (a name below a module counts as that module)."""
    files = _module_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in _imported_modules(path, files):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path [a, b, ..., a], or [] when the graph is acyclic (depth-first, colouring)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_cycle_finder_sees_a_cycle_through_a_deferred_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_module_graph_has_no_import_cycle() -> None:
    graph = module_graph()
    assert {"jobs.ppo", "actors.ppo_controller", "rlhf_ray.inputs.world"} <= set(graph)
    assert "actors.ppo_config" in graph["actors.ppo_controller"]  # the graph sees real edges
    assert find_cycle(graph) == []


def test_engines_live_below_the_command_line() -> None:
    graph = module_graph()
    assert "actors.ppo_controller" in graph["jobs.ppo"] and "actors.ingest" in graph["jobs.ingest"]
    assert not {"jobs.ppo_controller", "jobs.ppo_resources"} & set(graph)


def test_only_the_listed_modules_import_the_simulator() -> None:
    readers = {module for module, path in _module_files().items()
               if not module.startswith("rlhf_ray.sim")
               and any(name == "rlhf_ray.sim" or name.startswith("rlhf_ray.sim.") for name in _imported_modules(path))}
    assert readers == SIM_READERS


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
    from actors.ingest import IngestConfig
    from jobs.canary import CanaryConfig
    from jobs.dpo import DPOConfig
    from jobs.evaluate import EvaluateConfig
    from jobs.init_model import InitModelConfig
    from jobs.loop import LoopConfig
    from jobs.ppo import PPOConfig
    from jobs.sft import SFTConfig
    from jobs.simulate import SimulateConfig
    from jobs.sweep_config import SweepConfig
    from jobs.train_rm import TrainRMConfig
    from jobs.workbench import WorkbenchConfig
    from rlhf_ray.config import load_config

    schemas = {"quickstart.yaml": LoopConfig, "byo.yaml": LoopConfig,
               "simulate.yaml": SimulateConfig, "init_model.yaml": InitModelConfig,
               "ingest.yaml": IngestConfig, "sft.yaml": SFTConfig, "sft_deepspeed.yaml": SFTConfig,
               "train_rm.yaml": TrainRMConfig, "dpo.yaml": DPOConfig, "ppo.yaml": PPOConfig,
               "canary.yaml": CanaryConfig, "sweep.yaml": SweepConfig, "evaluate.yaml": EvaluateConfig,
               "workbench.yaml": WorkbenchConfig, "ppo_multinode.yaml": PPOConfig, "ppo_8b_8gpu.yaml": PPOConfig}
    files = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert files == sorted(schemas), "every config file needs its schema listed here"
    for name, schema in schemas.items():
        load_config(schema, ROOT / "configs" / name)
