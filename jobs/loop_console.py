"""What `rlhf-ray loop` shows on the console for each stage: a finished stage's headline figures, and the progress
bar of a long one (read from the metric lines its job prints; `rlhf_ray.console`)."""

from __future__ import annotations

from jobs.loop_stages import Figures, Stages
from rlhf_ray.console import Record, Tracker

# The figures that sum up a stage on the console, as (summary key, format); absent ones are left out.
STAGE_FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "simulate": (("rows", "{:,} rows"),),
    "ingest": (("accepted_rows", "{:,} rows accepted"), ("quarantined_rows", "{:,} quarantined")),
    "curate": (("pairs", "{:,} pairs"), ("fleiss_kappa", "Fleiss κ {:.2f}")),
    "init-model": (("num_parameters", "{:,} parameters"),),
    "sft": (("sft_heldout_loss", "held-out loss {:.3f}"),),
    "train-rm": (("rm_heldout_accuracy", "held-out pair accuracy {:.3f}"),),
    "train-judge": (("judge_heldout_accuracy", "held-out pair accuracy {:.3f}"),),
    "dpo": (("dpo_heldout_reward_accuracy", "held-out reward accuracy {:.3f}"),),
    "ppo": (("ppo_end/true_utility", "held-out true utility {:.3f}"), ("ppo_end/judge_reward", "judge reward {:.3f}")),
    "gate": (("gate_verdict", "verdict {}"), ("gate_gate/win_rate", "win-rate {:.3f}")),
    "canary": (("canary_decision", "{}"), ("canary_requests_sent", "after {:,} requests")),
}
# Training stages → the job name their epoch lines carry (train-judge runs train-rm's trainer).
TRAINING_STAGES = {"sft": "sft", "train-rm": "train-rm", "train-judge": "train-rm", "dpo": "dpo"}


def stage_line(name: str, figures: Figures, seconds: float) -> str:
    """A finished stage in one line: its time and headline figures (`STAGE_FIGURES`)."""
    shown = [form.format(figures[key]) for key, form in STAGE_FIGURES.get(name, ())
             if figures.get(key) is not None]
    return f"  {name} done in {seconds:,.0f} s" + (": " + ", ".join(shown) if shown else "")


def stage_tracker(name: str, stages: Stages) -> Tracker | None:
    """The progress bar of a long stage, fed by the metric lines its job prints: training epochs (each rank's
    per-epoch line), PPO iterations, canary requests."""
    if name in TRAINING_STAGES:
        job = TRAINING_STAGES[name]
        train = {"sft": stages.sft, "train-rm": stages.reward_model, "train-judge": stages.judge.reward_model,
                 "dpo": stages.dpo}[name].train

        def epoch(record: Record) -> int | None:
            return record["epoch"] + 1 if record.get("job") == job and "rank" in record else None
        return Tracker(name, train.epochs, "epoch", epoch)
    if name == "ppo":
        return Tracker(name, stages.ppo.iterations, "iteration",
                       lambda record: record.get("step") if record.get("job") == "ppo" else None)
    canary = stages.canary
    if name == "canary" and (canary.traffic.replay or canary.simulation.enabled):
        driven = canary.traffic if canary.traffic.replay else canary.simulation
        return Tracker(name, driven.max_requests, "request",
                       lambda record: record.get("step") if record.get("job") == "canary" else None)
    return None
