"""Which figures a job logs through `MetricsSink` feed which catalogue metric, with which tags.

Jobs keep logging plain figure names (`kl`, `reward/rm`, `timing/generate`); this table turns them into
Prometheus series, so a job needs no Prometheus code and the catalogue stays the one list of names. A figure
no binding names goes to stdout and wandb only. The loop logs the training stages' figures with the stage as
prefix (`sft_heldout_loss`, `rm_heldout_ece`, ...), so those names are listed beside the jobs' own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlhf_ray.telemetry.catalogue import CATALOGUE, JOB_TAG, MetricSpec

LOOP_STAGE_PREFIXES = {"sft": "sft_", "train-rm": "rm_", "dpo": "dpo_"}


@dataclass(frozen=True)
class Binding:
    """Figures → one metric: the exact names in `keys`, or every name starting with `prefix`, whose remainder
    becomes the tag `capture` (`timing/generate` → stage="generate"). `tags` are fixed tags of the series."""

    metric: str
    keys: tuple[str, ...] = ()
    prefix: str = ""
    capture: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    def tags_for(self, key: str) -> dict[str, str] | None:
        """The series tags (without the job tag) if this binding takes figure `key`, else None."""
        if key in self.keys:
            return dict(self.tags)
        if self.prefix and key.startswith(self.prefix) and len(key) > len(self.prefix):
            return {**dict(self.tags), self.capture: key[len(self.prefix):]}
        return None


def _exact(metric: str, *keys: str, **tags: str) -> Binding:
    return Binding(metric, keys=keys, tags=tuple(sorted(tags.items())))


def _prefixed(metric: str, prefix: str, capture: str) -> Binding:
    return Binding(metric, prefix=prefix, capture=capture)


def _staged(key: str, *stages: str) -> tuple[str, ...]:
    """A training job's figure name and the loop's stage-prefixed copies of it."""
    return (key, *(LOOP_STAGE_PREFIXES[stage] + key for stage in stages))


BINDINGS: tuple[Binding, ...] = (
    # every job: stage timings
    _prefixed("rlhf_stage_seconds", "timing/", "stage"),
    _prefixed("rlhf_stage_duration_seconds", "timing/", "stage"),
    # data plane: simulate, ingest, retention
    _exact("rlhf_data_rows", "rows", status="simulated"),
    _exact("rlhf_data_rows", "input_rows", status="input"),
    _exact("rlhf_data_rows", "accepted_rows", status="accepted"),
    _exact("rlhf_data_rows", "quarantined_rows", status="quarantined"),
    _exact("rlhf_data_rows", "duplicate_rows", status="duplicate"),
    _exact("rlhf_data_rows", "dropped_rows", status="dropped"),
    _exact("rlhf_data_rows_per_second", "rows_per_s"),
    _prefixed("rlhf_signal_latency_seconds", "signal_latency_seconds/", "quantile"),
    # annotation QA: curate
    _exact("rlhf_annotation_agreement", "fleiss_kappa", statistic="fleiss_kappa"),
    _exact("rlhf_annotation_agreement", "krippendorff_alpha", statistic="krippendorff_alpha"),
    _exact("rlhf_annotation_label_accuracy", "estimated_label_accuracy"),
    _exact("rlhf_annotation_adjudication_queue", "adjudication_queue"),
    _exact("rlhf_annotation_flagged_annotators", "flagged_annotators"),
    _exact("rlhf_annotation_pairs", "pairs"),
    _exact("rlhf_annotation_active_learning_picks", "active_learning_picks"),
    # training: sft, train-rm, dpo
    _exact("rlhf_train_loss", *_staged("train_loss", "sft", "dpo"), split="train"),
    _exact("rlhf_train_loss", *_staged("heldout_loss", "sft"), split="heldout"),
    _exact("rlhf_train_heldout_accuracy", *_staged("heldout_accuracy", "train-rm"),
           *_staged("heldout_reward_accuracy", "dpo")),
    _exact("rlhf_train_steps", *_staged("steps", "sft", "train-rm", "dpo")),
    _exact("rlhf_train_pairs_per_second", *_staged("train_pairs_per_s", "train-rm")),
    _exact("rlhf_rm_heldout_ece", *_staged("heldout_ece", "train-rm")),
    _exact("rlhf_rm_length_correlation", *_staged("heldout_length_correlation_at_equal_utility", "train-rm")),
    _exact("rlhf_rm_accuracy_when_longer_is_worse", *_staged("heldout_accuracy_when_longer_is_worse", "train-rm")),
    # PPO (actors/ppo_controller.py's per-iteration figures)
    _exact("rlhf_ppo_iteration", "iteration"),
    _prefixed("rlhf_ppo_reward", "reward/", "term"),
    _exact("rlhf_ppo_kl", "kl"),
    _exact("rlhf_ppo_kl_per_token", "kl_per_token"),
    _exact("rlhf_ppo_kl_coef", "kl_coef"),
    _prefixed("rlhf_ppo_response", "response/", "figure"),
    _exact("rlhf_ppo_true_utility", "true_utility"),
    _prefixed("rlhf_ppo_eval", "eval/", "figure"),
    _prefixed("rlhf_ppo_policy", "policy/", "figure"),
    _prefixed("rlhf_ppo_critic", "critic/", "figure"),
    _exact("rlhf_ppo_samples_per_second", "samples_per_s"),
    _exact("rlhf_ppo_tokens_per_second", "tokens_per_s"),
    _exact("rlhf_ppo_step_retries", "step_retries"),
    _prefixed("rlhf_ppo_rollout", "rollout/", "figure"),
    _prefixed("rlhf_ppo_pipeline", "pipeline/", "figure"),
    _prefixed("rlhf_ppo_idle", "idle/", "role"),
    # reward-hacking monitors (any job: ppo, sweep, evaluate)
    _prefixed("rlhf_hacking_flag", "hacking_flag/", "monitor"),
    _prefixed("rlhf_hacking_figure", "hacking/", "figure"),
    # offline gate: evaluate
    _exact("rlhf_gate_passed", "gate/passed"),
    _exact("rlhf_gate_superior", "gate/superior"),
    _exact("rlhf_gate_win_rate", "gate/win_rate", bound="estimate"),
    _exact("rlhf_gate_win_rate", "gate/win_rate_lower", bound="lower"),
    _exact("rlhf_gate_win_rate", "gate/win_rate_upper", bound="upper"),
    _prefixed("rlhf_gate_first_pass_yield", "gate/first_pass_yield/", "policy"),
    _prefixed("rlhf_gate_safety_misses", "gate/safety_misses/", "policy"),
    _prefixed("rlhf_gate_mean_words", "gate/mean_words/", "policy"),
    _prefixed("rlhf_gate_tokens_per_accepted", "gate/tokens_per_accepted/", "policy"),
    _prefixed("rlhf_gate_seconds_per_accepted", "gate/seconds_per_accepted/", "policy"),
    _prefixed("rlhf_gate_true_utility", "gate/true_utility/", "policy"),
    # drift
    _prefixed("rlhf_drift_psi", "drift/psi/", "feature"),
    _prefixed("rlhf_drift_ks", "drift/ks/", "feature"),
    _prefixed("rlhf_drift_alert", "drift/alert/", "feature"),
    _exact("rlhf_drift_label_balance_shift", "drift/label_balance_shift"),
    _exact("rlhf_drift_reward_mean_shift", "drift/reward_mean_shift"),
    # feedback-loop latency (evaluate; the canary for trained → deployed)
    _prefixed("rlhf_loop_latency_seconds", "loop_latency/", "segment"),
)


@dataclass(frozen=True)
class Observation:
    spec: MetricSpec
    tags: dict[str, str]
    value: float


def numeric(value: Any) -> float | None:
    """A figure's value as a float, or None for what Prometheus cannot hold (text, lists, None, NaN, inf)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def observations(job: str, figures: Mapping[str, Any]) -> list[Observation]:
    """Every (metric, tags, value) the figures of `job` feed; one figure may feed several metrics."""
    found = []
    for key, raw in figures.items():
        value = numeric(raw)
        if value is None:
            continue
        for binding in BINDINGS:
            tags = binding.tags_for(key)
            if tags is not None:
                found.append(Observation(CATALOGUE[binding.metric], {JOB_TAG: job, **tags}, value))
    return found
