"""The `rlhf-ray` command's lazy job table: it matches the job modules, and a call imports only its own job."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import CONFIG_ERRORS, JOBS, USER_ERRORS, build_parser, loaded_classes

JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"


def _declares_a_job(path: Path) -> bool:
    """A job module assigns NAME at top level and defines main (read from source: no import needed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {target.id for node in tree.body if isinstance(node, ast.Assign)
             for target in node.targets if isinstance(target, ast.Name)}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    return "NAME" in names and "main" in functions


def test_every_job_module_is_in_the_table() -> None:
    modules = {f"jobs.{path.stem}" for path in JOBS_DIR.glob("*.py") if _declares_a_job(path)}
    assert modules == {job.module for job in JOBS}


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.name)
def test_table_matches_the_job_module(job) -> None:
    module = importlib.import_module(job.module)
    assert (job.name, job.help) == (module.NAME, module.HELP), f"update JOBS in jobs/cli.py for {job.module}"
    assert callable(module.add_arguments) and callable(module.main)


def test_error_names_resolve_to_exception_classes() -> None:
    for name in (*CONFIG_ERRORS, *USER_ERRORS):
        module, _, attribute = name.partition(":")
        importlib.import_module(module)
        assert issubclass(getattr(sys.modules[module], attribute), Exception), name
    assert len(loaded_classes((*CONFIG_ERRORS, *USER_ERRORS))) == len(CONFIG_ERRORS) + len(USER_ERRORS)


def test_errors_of_unloaded_modules_are_not_looked_up() -> None:
    assert loaded_classes(["rlhf_ray.no_such_module:Error", "jobs.cli:NoSuchError"]) == ()


def _job_modules_loaded_by(argv: list[str]) -> set[str]:
    """Run the CLI on `argv` in a fresh interpreter; the job modules it imported."""
    script = ("import json, sys\nfrom jobs.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
              "    pass\nprint(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120,
                            check=True, cwd=JOBS_DIR.parent)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return set(loaded) & {job.module for job in JOBS}


def test_help_lists_every_job_without_importing_one() -> None:
    assert _job_modules_loaded_by(["--help"]) == set()
    usage = build_parser().format_help()
    for job in JOBS:
        assert job.name in usage


def test_a_job_imports_only_its_own_module() -> None:
    assert _job_modules_loaded_by(["lineage", "--help"]) == {"jobs.lineage"}


def test_parsing_a_job_adds_its_arguments_and_entry() -> None:
    args = build_parser().parse_args(["lineage", "abc123", "--verify"])
    lineage = importlib.import_module("jobs.lineage")
    assert (args.job, args.artifact_id, args.verify, args.entry) == ("lineage", "abc123", True, lineage.main)
