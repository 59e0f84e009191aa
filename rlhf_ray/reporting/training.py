"""Report sections of the learning side: a PPO run's curves and reward-hacking flags, a sweep's trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_ray.evaluation.hacking import hacking_flags
from rlhf_ray.evaluation.trials import figures_from_report
from rlhf_ray.reporting import plots
from rlhf_ray.reporting.page import Section, banner, image, key_values, paragraph, subheading, table

MAX_SWEEP_PLOTS = 4


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a run still writing) is skipped, not fatal."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict)]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r.get("iteration", i + 1), r[key]) for i, r in enumerate(records) if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def _panel(records: list[dict[str, Any]], title: str, ylabel: str, lines: dict[str, str],
           markers: dict[str, str]) -> plots.Panel:
    series = {label: _series(records, key) for label, key in {**lines, **markers}.items()}
    return plots.Panel(title, ylabel, {k: v for k, v in series.items() if v[0]}, frozenset(markers))


def _start_end(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out figures at the run's start and end: `start/*` when the controller logged them, else the first
    evaluation; the end is the last evaluation."""
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    if not evals:
        return {}, {}
    start = figures_from_report(records[0], "start") or figures_from_report(evals[0], "eval")
    return start, figures_from_report(evals[-1], "eval")


def ppo_section(path: Path, run_dir: Path) -> Section | None:
    records = read_jsonl(path)
    if not records:
        return None
    section = Section(f"PPO: {path.parent.relative_to(run_dir) if path.parent != run_dir else 'run'}",
                      str(path.relative_to(run_dir)))
    section.blocks.append(image(plots.panels([
        _panel(records, "reward", "reward", {"RM (rollouts)": "reward/rm", "total (rollouts)": "reward/total"},
               {"RM (held-out)": "eval/reward"}),
        _panel(records, "KL to the reference", "nats / answer", {"KL": "kl"}, {}),
        _panel(records, "answer length", "words", {"rollouts": "response/words"}, {"held-out": "eval/words"}),
        _panel(records, "true utility (simulation only)", "utility", {"rollouts": "true_utility"},
               {"held-out": "eval/true_utility"}),
    ]), "PPO curves"))
    timings = {k.removeprefix("timing/"): float(np.mean([r[k] for r in records if k in r]))
               for k in dict.fromkeys(k for r in records for k in r if k.startswith("timing/"))
               if k not in ("timing/iteration", "timing/eval")}
    if timings:
        section.blocks.append(image(plots.bars(timings, "mean seconds per stage", "seconds"), "stage timings"))
    start, end = _start_end(records)
    if start and end:
        section.blocks.append(subheading("held-out: start → end"))
        section.blocks.append(table([{"figure": k, "start": start.get(k), "end": end.get(k)} for k in end]))
        quality = "true_utility" if "true_utility" in end else "judge_reward"
        flags = hacking_flags(start, end, quality)
        section.blocks.append(subheading("reward-hacking monitors"))
        section.blocks.append(banner(f"{len(flags)} flag(s) raised", not flags))
        if flags:
            section.blocks.append(key_values(flags))
    last = {k: v for k, v in records[-1].items() if isinstance(v, int | float) and not k.startswith("timing/")}
    section.blocks.append(subheading(f"last iteration ({records[-1].get('iteration', len(records))})"))
    section.blocks.append(key_values(last))
    return section


SWEEP_COLUMNS_FIRST = ("trial_id", "status", "iterations", "kl")
SWEEP_COLUMNS_LAST = ("flags", "pareto", "chosen")


def sweep_section(path: Path, run_dir: Path) -> Section | None:
    """`trials.json` of `rlhf-ray sweep` (a list of rows: trial_id, param/*, status, start/*, end/*, flags, ...),
    the plots the sweep wrote beside it, and its selection from report.json."""
    rows = json.loads(path.read_text())
    rows = rows.get("trials", []) if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows:
        return None
    section = Section("Sweep", str(path.relative_to(run_dir)))
    report = path.with_name("report.json")
    if report.is_file():
        summary = json.loads(report.read_text())
        section.blocks.append(paragraph(f"selection: {summary.get('selection', '–')}"))
    keys = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
    middle = [k for k in keys if k not in SWEEP_COLUMNS_FIRST + SWEEP_COLUMNS_LAST and k != "flag_details"]
    columns = [k for k in SWEEP_COLUMNS_FIRST if k in keys] + middle + [k for k in SWEEP_COLUMNS_LAST if k in keys]
    section.blocks.append(table([row for row in rows if isinstance(row, dict)], columns))
    for png in sorted(path.parent.glob("*.png"))[:MAX_SWEEP_PLOTS]:
        section.blocks.append(image(png.read_bytes(), png.name))
    return section
