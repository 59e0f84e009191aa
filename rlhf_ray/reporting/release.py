"""Report sections of the release side: the offline gate's verdict and the canary's traffic and decision."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rlhf_ray.reporting import plots
from rlhf_ray.reporting.page import Section, banner, image, key_values, paragraph, subheading, table

DECISIONS = ("promote", "rollback", "kill")


def gate_section(path: Path, run_dir: Path) -> Section | None:
    """`gate.json` of `rlhf-ray evaluate`."""
    gate = json.loads(path.read_text())
    if not isinstance(gate, dict) or "verdict" not in gate:
        return None
    section = Section("Offline gate", str(path.relative_to(run_dir)))
    failed = gate.get("failed_checks", [])
    section.blocks.append(banner(f"verdict: {gate['verdict']}" + (f" (failed: {', '.join(failed)})" if failed else ""),
                                 gate["verdict"] == "pass"))
    section.blocks.append(paragraph(f"candidate {gate.get('candidate_id')} vs incumbent {gate.get('incumbent_id')}; "
                                    f"judge {gate.get('judge')}; {gate.get('prompts')} prompts × "
                                    f"{gate.get('samples_per_prompt')} answers"))
    wins = gate.get("win_rate", {})
    section.blocks.append(paragraph(f"win-rate {wins.get('rate', float('nan')):.3f} "
                                    f"[{wins.get('lower', float('nan')):.3f}, {wins.get('upper', float('nan')):.3f}] "
                                    f"({wins.get('method')}; {wins.get('wins')} wins, {wins.get('losses')} losses, "
                                    f"{wins.get('ties')} ties)"))
    section.blocks.append(table(gate.get("checks", []), ["name", "value", "limit", "passed"]))
    candidate, incumbent = gate.get("candidate", {}), gate.get("incumbent", {})
    section.blocks.append(subheading("figures"))
    section.blocks.append(table([{"figure": k, "candidate": candidate.get(k), "incumbent": incumbent.get(k)}
                                 for k in candidate]))
    compared = {k: {"candidate": candidate.get(k), "incumbent": incumbent.get(k)}
                for k in ("first_pass_yield", "true_utility") if candidate.get(k) is not None}
    if compared:
        section.blocks.append(image(plots.grouped_bars(compared, "candidate vs incumbent", "value"), "gate figures"))
    if gate.get("hacking_flags"):
        section.blocks.append(subheading("reward-hacking flags"))
        section.blocks.append(key_values(gate["hacking_flags"]))
    if gate.get("examples"):
        section.blocks.append(subheading("example answers"))
        section.blocks.append(table(gate["examples"]))
    return section


def regression_section(path: Path, run_dir: Path) -> Section | None:
    """`regress.json` of `rlhf-ray regress` (alone, in the loop's gate, or as a canary's precondition): the verdict
    and the per-case table (pass rates of candidate and baseline, status, blocking or accepted)."""
    suite = json.loads(path.read_text())
    if not isinstance(suite, dict) or "verdict" not in suite or "case_table" not in suite:
        return None
    section = Section("Regression suite", str(path.relative_to(run_dir)))
    blocking = suite.get("blocking", [])
    section.blocks.append(banner(f"verdict: {suite['verdict']}" + (f" (blocking: {', '.join(blocking)})"
                                                                   if blocking else ""), suite["verdict"] == "pass"))
    runs = suite.get("runs", {})
    section.blocks.append(paragraph(
        f"suite {suite.get('suite')} ({suite.get('cases')} cases); policy {suite.get('policy_id')} vs baseline "
        f"{suite.get('baseline_id') or '(none: every failing case blocks)'}; each case answered greedily and "
        f"{runs.get('samples')} times sampled, passed at a pass rate ≥ {runs.get('pass_threshold')}"))
    section.blocks.append(table(suite["case_table"], ["case", "status", "blocks", "candidate_pass_rate",
                                                      "baseline_pass_rate", "checks", "candidate_failed_checks",
                                                      "accepted", "candidate_answer"]))
    return section


def _audit_entries(paths: list[Path]) -> list[dict[str, Any]]:
    entries = [json.loads(p.read_text()) for p in paths]
    return sorted((e for e in entries if isinstance(e, dict) and "action" in e and "time" in e),
                  key=lambda e: e["time"])


def canary_section(paths: list[Path], run_dir: Path) -> Section | None:
    """The canary's audit entries (`<state_dir>/audit/*.json`: time, action, before/after weights, reason) as the
    traffic share over time and the decisions, plus its summary (`canary.json`) when the job wrote one."""
    entries = _audit_entries([p for p in paths if p.parent.name == "audit"])
    summaries = [json.loads(p.read_text()) for p in paths if p.name == "canary.json"]
    if not entries and not summaries:
        return None
    section = Section("Canary", ", ".join(sorted({str(p.parent.relative_to(run_dir)) for p in paths})))
    if summaries and isinstance(summaries[0], dict):
        summary = summaries[0]
        decision = summary.get("decision", "–")
        section.blocks.append(banner(f"decision: {decision}", decision == "promote"))
        section.blocks.append(key_values({k: v for k, v in summary.items() if not isinstance(v, list)}))
    if entries:
        start = datetime.fromisoformat(entries[0]["time"])
        times = [(datetime.fromisoformat(e["time"]) - start).total_seconds() for e in entries]
        weights = [float((e.get("after") or {}).get("canary_weight", 0.0)) for e in entries]
        events = [(t, e["action"]) for t, e in zip(times, entries, strict=True) if e["action"] in DECISIONS]
        section.blocks.append(image(plots.steps([0.0, *times], [float((entries[0].get("before") or {})
                                                                      .get("canary_weight", 0.0)), *weights],
                                                "canary share of traffic", "seconds since the first change",
                                                "canary weight", events), "canary traffic"))
        section.blocks.append(table([{"time": e["time"], "action": e["action"], "source": e.get("source"),
                                      "weight": (e.get("after") or {}).get("canary_weight"),
                                      "reason": e.get("reason")} for e in entries]))
    return section
