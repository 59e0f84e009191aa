"""Report sections of the data side: dataset versions, annotation QA, drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf_ray.reporting import plots
from rlhf_ray.reporting.page import Section, banner, image, paragraph, subheading, table


def data_section(paths: list[Path], run_dir: Path) -> Section | None:
    """Committed dataset versions (`versions/<v>.json` of `rlhf-ray ingest`): counts, signal mix, latency,
    quarantine reasons of the newest."""
    manifests = [json.loads(p.read_text()) for p in paths]
    manifests = [m for m in manifests if isinstance(m, dict) and "quality" in m]
    if not manifests:
        return None
    section = Section("Data plane", ", ".join(str(p.relative_to(run_dir)) for p in paths))
    section.blocks.append(table(manifests, ["version", "input_rows", "accepted_rows", "quarantined_rows",
                                            "duplicate_rows", "dropped_rows"]))
    newest = max(manifests, key=lambda m: m["quality"].get("ingested_at", ""))
    types = newest["quality"].get("signal_types", {})
    if types:
        section.blocks.append(image(plots.bars({t: r.get("rows", 0) for t, r in types.items()},
                                               f"signal mix of {newest.get('version')}", "rows"), "signal mix"))
        section.blocks.append(subheading("signal latency (event → ingest), seconds"))
        section.blocks.append(table([{"signal type": t, **r.get("signal_latency_seconds", {})}
                                     for t, r in types.items()]))
    reasons = newest["quality"].get("top_quarantine_reasons", [])
    if reasons:
        section.blocks.append(subheading("top quarantine reasons"))
        section.blocks.append(table(reasons))
    return section


def _agreement_rows(agreement: dict[str, Any], report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for signal, result in agreement.items():
        if isinstance(result, dict) and "overall" in result:
            consensus = report.get(signal, {})
            rows.append({"signal": signal, **{k: result["overall"].get(k) for k in
                                              ("fleiss_kappa", "krippendorff_alpha", "n_items", "n_annotators")},
                         "estimated_label_accuracy": consensus.get("estimated_label_accuracy"),
                         "adjudication_queue": consensus.get("adjudication_queue")})
    for criterion, result in agreement.get("rubric", {}).items():
        rows.append({"signal": f"rubric: {criterion}", "fleiss_kappa": result.get("fleiss_kappa"),
                     "krippendorff_alpha": result.get("krippendorff_alpha"), "n_items": result.get("n_items"),
                     "n_annotators": result.get("n_annotators")})
    return rows


def _annotators(path: Path, section: Section) -> None:
    """Per-annotator health from annotators.parquet (pseudonymous ids): estimated accuracy vs agreement."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    points = [(r["consensus_agreement"], r["estimated_accuracy"]) for r in rows
              if r.get("consensus_agreement") is not None and r.get("estimated_accuracy") is not None]
    if points:
        flagged = [bool(r.get("flags")) for r in rows
                   if r.get("consensus_agreement") is not None and r.get("estimated_accuracy") is not None]
        section.blocks.append(image(plots.scatter(points, flagged, "annotators (red: flagged)",
                                                  "agreement with consensus", "estimated accuracy"), "annotators"))
    flagged_rows = [r for r in rows if r.get("flags")]
    if flagged_rows:
        section.blocks.append(subheading(f"flagged annotators ({len(flagged_rows)} of {len(rows)})"))
        section.blocks.append(table(flagged_rows, ["annotator", "labels", "estimated_accuracy",
                                                   "consensus_agreement", "longer_choice_rate", "flags"]))


def agreement_section(path: Path, run_dir: Path) -> Section | None:
    """`agreement.json` of `rlhf-ray curate` (and `annotators.parquet` beside it)."""
    report = json.loads(path.read_text())
    agreement = report.get("agreement") if isinstance(report, dict) else None
    if not isinstance(agreement, dict):
        return None
    section = Section("Annotation QA", str(path.relative_to(run_dir)))
    section.blocks.append(paragraph(f"consensus: {report.get('consensus_method', '–')}; pairs: "
                                    f"{report.get('pairs', '–')}; adjudication queue: "
                                    f"{report.get('adjudication_queue', '–')}"))
    section.blocks.append(table(_agreement_rows(agreement, report)))
    groups = agreement.get("pairwise", {}).get("groups", {})
    for by in ("guideline_version", "topic"):
        if groups.get(by):
            values = {name: {"Fleiss κ": g.get("fleiss_kappa"), "Krippendorff α": g.get("krippendorff_alpha")}
                      for name, g in groups[by].items()}
            section.blocks.append(image(plots.grouped_bars(values, f"pairwise agreement by {by}", "agreement"),
                                        f"agreement by {by}"))
    if report.get("pairs_by_source"):
        section.blocks.append(subheading("preference pairs by source"))
        section.blocks.append(table([{"source": k, "pairs": v} for k, v in report["pairs_by_source"].items()]))
    annotators = path.with_name("annotators.parquet")
    if annotators.is_file():
        _annotators(annotators, section)
    return section


def drift_section(path: Path, run_dir: Path) -> Section | None:
    """`drift.json` of `rlhf-ray drift`: PSI per feature against the alert threshold, and the alerts."""
    report = json.loads(path.read_text())
    features = report.get("features") if isinstance(report, dict) else None
    if not features:
        return None
    section = Section("Drift", str(path.relative_to(run_dir)))
    alerts = report.get("alerts", [])
    section.blocks.append(banner(f"{len(alerts)} alert(s): {', '.join(alerts) or 'none'}", not alerts))
    section.blocks.append(image(plots.bars({f["feature"]: f["psi"] for f in features}, "population stability index",
                                           "PSI", report.get("thresholds", {}).get("psi"), alerts), "PSI"))
    section.blocks.append(table(features, ["feature", "kind", "psi", "ks", "ks_p_value", "shift", "alert",
                                           "reasons"]))
    inputs = report.get("inputs") or {}
    if inputs:
        section.blocks.append(table([{"side": k, **v} for k, v in inputs.items()]))
    return section
