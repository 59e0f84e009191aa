"""The sweep's report: trials table (JSON + CSV), Pareto front of validation quality vs KL, plots, the chosen
trial's settings as a PPO config YAML, and — measured after the choice — the chosen trial's test-split utility.
Every file is written to a temp name and renamed into place."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobs.ppo import PPOConfig
from jobs.sweep_config import REPORT_SPLIT, SweepConfig, trial_config
from rlhf_ray.config import dump_config
from rlhf_ray.evaluation.trials import TrialOutcome, assess, choose, figures_from_report

BEST_CONFIG = "best_ppo.yaml"
PLOTS = ("reward_vs_quality.png", "pareto.png", "curves.png")
TEST_NOTE = (f"the chosen trial's policy, measured once on the {REPORT_SPLIT} split with the world's oracle after the "
             "choice was made; not used for choosing")
# Measures a chosen trial: (its PPO settings, its exported policy dir) → {"true_utility", "prompts", "answers"}.
Measure = Callable[[PPOConfig, str], dict[str, float]]


def _write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    with temporary.open("wb") as stream:
        write(stream)
    os.replace(temporary, path)


def outcomes_from_results(results: Any, iterations: int, trials_dir: Path) -> list[TrialOutcome]:
    """One outcome per Tune trial, from its last report (`start/*`, `eval/*`, `kl`, `iteration`)."""
    outcomes = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        done = int(metrics.get("iteration", 0))
        status = "error" if result.error else "completed" if done >= iterations else "stopped"
        params = {key: value for key, value in (result.config or {}).items()}
        outcomes.append(TrialOutcome(trial_id=trial_id, params=params, status=status, iterations=done,
                                     start=figures_from_report(metrics, "start"),
                                     end=figures_from_report(metrics, "eval"), kl=metrics.get("kl")))
    return sorted(outcomes, key=lambda o: o.trial_id)


def trial_rows(outcomes: Sequence[TrialOutcome], quality: str, chosen: int | None) -> list[dict[str, Any]]:
    rows = []
    for index, outcome in enumerate(outcomes):
        row: dict[str, Any] = {"trial_id": outcome.trial_id, **{f"param/{k}": v for k, v in outcome.params.items()},
                               "status": outcome.status, "iterations": outcome.iterations, "kl": outcome.kl}
        for name in ("reward", quality, "words", "canned_rate", "reward_length_corr"):
            row[f"start/{name}"], row[f"end/{name}"] = outcome.start.get(name), outcome.end.get(name)
        row.update(flags=";".join(outcome.flags), flag_details=outcome.flags, pareto=outcome.pareto,
                   chosen=index == chosen)
        rows.append(row)
    return rows


def _label(outcome: TrialOutcome) -> str:
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in outcome.params.items())


def _curves(trials_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    path = trials_dir / trial_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _plot(outcomes: Sequence[TrialOutcome], quality: str, disqualifying: set[str], trials_dir: Path,
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(figure: Any, name: str) -> None:
        figure.tight_layout()
        _write_atomic(out / name, lambda stream: figure.savefig(stream, format="png", dpi=110))
        plt.close(figure)

    measured = [o for o in outcomes if None not in (o.start.get("reward"), o.end.get("reward"),
                                                     o.quality(quality), o.quality(quality, "start"))]
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    for o in measured:
        x = o.end["reward"] - o.start["reward"]  # type: ignore[operator]
        y = o.quality(quality) - o.quality(quality, "start")  # type: ignore[operator]
        axis.scatter(x, y, color="tab:red" if set(o.flags) & disqualifying else "tab:blue", s=40)
        axis.annotate(_label(o), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.set(xlabel="Δ RM reward (held-out)", ylabel=f"Δ {quality} (held-out)",
             title="reward vs held-out quality (red: disqualified for reward hacking)")
    save(figure, PLOTS[0])

    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    points = [o for o in outcomes if o.kl is not None and o.quality(quality) is not None]
    axis.scatter([o.kl for o in points], [o.quality(quality) for o in points], color="tab:grey", s=30)
    front = sorted((o for o in points if o.pareto), key=lambda o: o.kl)  # type: ignore[arg-type, return-value]
    axis.plot([o.kl for o in front], [o.quality(quality) for o in front], "o-", color="tab:green", label="Pareto front")
    for o in points:
        axis.annotate(_label(o), (o.kl, o.quality(quality)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.set(xlabel="KL to the reference (last iteration)", ylabel=f"held-out {quality}",
             title="held-out quality vs KL")
    axis.legend()
    save(figure, PLOTS[1])

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for o in outcomes:
        history = [h for h in _curves(trials_dir, o.trial_id) if "reward/rm" in h]  # iterations, not the start
        evals = [(0, o.quality(quality, "start"))] + [(h["iteration"], h[f"eval/{quality}"])
                                                       for h in history if f"eval/{quality}" in h]
        axes[0].plot([h["iteration"] for h in history], [h["reward/rm"] for h in history], label=_label(o))
        axes[1].plot(*zip(*[(i, q) for i, q in evals if q is not None], strict=True), marker="o")
        axes[2].plot([h["iteration"] for h in history], [h["response/words"] for h in history])
    axes[0].set(xlabel="iteration", ylabel="RM reward (rollouts)", title="reward")
    axes[1].set(xlabel="iteration", ylabel=f"held-out {quality}", title="held-out quality")
    axes[2].set(xlabel="iteration", ylabel="mean words (rollouts)", title="length")
    axes[0].legend(fontsize=7)
    save(figure, PLOTS[2])


def write_report(config: SweepConfig, outcomes: Sequence[TrialOutcome], out: Path,
                 measure: Measure | None = None) -> dict[str, Any]:
    """Assess the trials, choose one on validation, and write trials.json/csv, the plots, best_ppo.yaml and
    report.json. With `measure`, the chosen trial's exported policy (`trials/<id>/summary.json`) is then measured
    once on the test split: `chosen/test_true_utility`, labelled in `test_split` as not used for choosing."""
    quality = config.quality
    assessed = assess(outcomes, quality, config.hacking.thresholds())
    chosen, reason = choose(assessed, quality, config.hacking.disqualify)
    rows = trial_rows(assessed, quality, chosen)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "trials.json", lambda stream: stream.write(json.dumps(rows, indent=2, default=str).encode()))
    text = io.StringIO()
    fields = sorted({key for row in rows for key in row if key != "flag_details"}, key=lambda k: (k != "trial_id", k))
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(out / "trials.csv", lambda stream: stream.write(text.getvalue().encode()))
    _plot(assessed, quality, set(config.hacking.disqualify), out / "trials", out)
    report: dict[str, Any] = {
        "trials": rows, "num_trials": len(rows), "quality": quality, "selection": reason,
        "disqualified": [o.trial_id for o in assessed if set(o.flags) & set(config.hacking.disqualify)],
        "flagged": [row["trial_id"] for row in rows if row["flags"]],
        "pareto": [row["trial_id"] for row in rows if row["pareto"]],
        "plots": [str(out / name) for name in PLOTS], "trials_table": str(out / "trials.csv")}
    if chosen is not None:
        best = assessed[chosen]
        base = config.ppo.model_dump(mode="json")
        settings = trial_config(base, dict(best.params), Path(config.ppo.output_dir)).model_copy(
            update={"resume": False, "wandb": config.ppo.wandb})
        _write_atomic(out / BEST_CONFIG, lambda stream: stream.write(dump_config(settings).encode()))
        report.update(chosen_trial=best.trial_id, chosen_params=dict(best.params), best_config=str(out / BEST_CONFIG),
                      **{f"chosen/{key}": value for key, value in best.end.items()},
                      **{f"chosen/start_{key}": value for key, value in best.start.items()})
        if measure is not None:
            exported = json.loads((out / "trials" / best.trial_id / "summary.json").read_text())["policy_dir"]
            tested = measure(settings, exported)
            report.update({f"chosen/{REPORT_SPLIT}_true_utility": tested["true_utility"]},
                          test_split={"prompts": tested["prompts"], "answers": tested["answers"], "note": TEST_NOTE})
    _write_atomic(out / "report.json",
                  lambda stream: stream.write(json.dumps(report, indent=2, default=str).encode()))
    return report
