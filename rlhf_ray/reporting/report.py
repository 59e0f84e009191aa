"""Build the report of a run directory from the files it holds; every section is optional.

    Data plane      versions/<v>.json               (rlhf-ray ingest)
    Annotation QA   agreement.json (+ annotators.parquet)   (rlhf-ray curate)
    PPO             metrics.jsonl                   (rlhf-ray ppo; a sweep's per-trial files are left to the sweep)
    Sweep           trials.json (+ its plots, report.json)  (rlhf-ray sweep)
    Offline gate    gate.json                       (rlhf-ray evaluate)
    Regression      regress.json                    (rlhf-ray regress; the loop's gate, a canary's precondition)
    Canary          audit/*.json, canary.json       (rlhf-ray canary)
    Drift           drift.json                      (rlhf-ray drift)

A section whose file is missing is listed under "Not in this run"; one whose file cannot be read says so in
its place instead of failing the whole report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf_ray.reporting.page import Section, paragraph, render_page
from rlhf_ray.reporting.quality import agreement_section, data_section, drift_section
from rlhf_ray.reporting.release import canary_section, gate_section, regression_section
from rlhf_ray.reporting.training import ppo_section, sweep_section
from rlhf_ray.storage import StorageRoot

REPORT_FILE = "report.html"
# Folders with nothing to report and many files: model weights, checkpoints, raw shards, wandb, lineage,
# and a sweep's per-trial runs (the sweep section summarises those).
SKIP_DIRS = frozenset({".git", "wandb", "ray_train", "checkpoints", "lineage", "shards", "quarantine", "trials",
                       "model", "policy", "reward_model", "pairs", "adjudication", "active_learning", "ground_truth",
                       "secrets", "__pycache__"})
MAX_PPO_RUNS = 4


def find_files(run_dir: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found.extend(Path(folder) / name for name in sorted(files) if not name.startswith("."))
    return found


Many = Callable[[list[Path], Path], Section | None]
One = Callable[[Path, Path], Section | None]

# (title, what a file must look like, how to build the section from all such files, or from each one)
SOURCES: tuple[tuple[str, Callable[[Path], bool], Many | None, One | None], ...] = (
    ("Data plane", lambda p: p.parent.name == "versions" and p.suffix == ".json", data_section, None),
    ("Annotation QA", lambda p: p.name == "agreement.json", None, agreement_section),
    ("PPO", lambda p: p.name == "metrics.jsonl", None, ppo_section),
    ("Sweep", lambda p: p.name == "trials.json", None, sweep_section),
    ("Offline gate", lambda p: p.name == "gate.json", None, gate_section),
    ("Regression suite", lambda p: p.name == "regress.json", None, regression_section),
    ("Canary", lambda p: p.name == "canary.json" or (p.parent.name == "audit" and p.suffix == ".json"),
     canary_section, None),
    ("Drift", lambda p: p.name == "drift.json", None, drift_section),
)


def canary_run(path: Path) -> Path:
    """The canary job's output folder of one of its files: `canary.json` lies in it, audit entries in
    `state/audit/` below it. One section per canary run, e.g. one per loop iteration."""
    return path.parent if path.name == "canary.json" else path.parent.parent.parent


# Sections built from all matching files at once, one per group of files (keyed as here), not one in all.
GROUPS: dict[str, Callable[[Path], Path]] = {"Canary": canary_run}


def _unreadable(title: str, path: str, error: Exception) -> Section:
    return Section(title, path, [paragraph(f"could not read it: {type(error).__name__}: {error}", "missing")])


def build_sections(run_dir: Path) -> tuple[list[Section], list[str]]:
    """The sections the run's files allow, and a line for each kind of file that is absent."""
    files = find_files(run_dir)
    sections, missing = [], []
    for title, matches, from_all, from_each in SOURCES:
        chosen = [p for p in files if matches(p)]
        if title == "PPO":
            chosen = chosen[:MAX_PPO_RUNS]
        built: list[Section | None] = []
        try:
            if from_all is not None and chosen:
                key = GROUPS.get(title, lambda path: run_dir)
                for group in sorted({key(path) for path in chosen}):
                    built.append(from_all([path for path in chosen if key(path) == group], run_dir))
            for path in chosen if from_each is not None else []:
                built.append(from_each(path, run_dir))
        except (OSError, ValueError, KeyError, TypeError) as error:  # one bad file must not sink the report
            built.append(_unreadable(title, ", ".join(str(p.relative_to(run_dir)) for p in chosen), error))
        found = [s for s in built if s is not None]
        sections.extend(found)
        if not found:
            missing.append(f"{title}: no file found")
    return sections, missing


def _render(run_dir: str | os.PathLike[str]) -> tuple[str, list[Section], list[str]]:
    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    sections, missing = build_sections(root)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(f"rlhf-ray report: {root.resolve().name}",
                       f"{root.resolve()} · generated {stamp} · {len(sections)} section(s)", sections, missing)
    return page, sections, missing


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The HTML page for a run directory."""
    return _render(run_dir)[0]


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write the page atomically (`<run_dir>/report.html` unless `out` is given); returns where and what."""
    page, sections, missing = _render(run_dir)
    target = Path(out) if out else Path(run_dir) / REPORT_FILE
    path = StorageRoot.from_uri(target.parent).write_bytes_atomic(page.encode(), target.name)
    return {"report": path, "sections": [s.title for s in sections], "missing": missing, "bytes": len(page)}
