"""The one catalogue of metric names the project exports to Prometheus.

Every Prometheus metric the code creates is declared here first (name, kind, tag keys, help text), so
dashboards and alerts can be checked against what the code really exports. Ray prefixes custom metrics with
`ray_` on its Prometheus endpoint: `rlhf_serve_requests_total` is scraped as `ray_rlhf_serve_requests_total`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["counter", "gauge", "histogram"]
RAY_PROMETHEUS_PREFIX = "ray_"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()  # histogram bucket upper bounds

    @property
    def prometheus_name(self) -> str:
        """The name as scraped from Ray's metrics endpoint."""
        return RAY_PROMETHEUS_PREFIX + self.name

    @property
    def scraped_names(self) -> tuple[str, ...]:
        """Every series name Prometheus sees for this metric: a histogram's `_bucket`, `_sum` and `_count`."""
        if self.kind == "histogram":
            return tuple(self.prometheus_name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.prometheus_name,)


LATENCY_BOUNDARIES_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SERVING: tuple[MetricSpec, ...] = (
    MetricSpec("rlhf_serve_requests_total", "counter", "chat completions answered, by variant and outcome",
               ("variant", "outcome")),
    MetricSpec("rlhf_serve_latency_seconds", "histogram", "chat completion latency through the router",
               ("variant",), LATENCY_BOUNDARIES_S),
    MetricSpec("rlhf_serve_feedback_total", "counter", "feedback events captured, by variant and kind",
               ("variant", "kind")),
    MetricSpec("rlhf_serve_safety_flags_total", "counter", "safety flags raised on answers, by variant",
               ("variant",)),
    MetricSpec("rlhf_serve_policy_retries_total", "counter", "policy calls retried because the replica serving "
               "them died, by variant", ("variant",)),
    MetricSpec("rlhf_serve_canary_weight", "gauge", "share of traffic routed to the canary (0..1)", ()),
    MetricSpec("rlhf_serve_canary_decisions_total", "counter", "canary decisions (promote, rollback, kill)",
               ("decision",)),
)

# ---- what jobs log through MetricsSink ------------------------------------------------------------------------
# Every metric below carries the tag `rlhf_job` (the job whose figures they are). Not `job`: Prometheus attaches
# its own `job` label (the scrape job) to every series, and a clash would rename ours to `exported_job`.
JOB_TAG = "rlhf_job"
STAGE_BOUNDARIES_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _gauge(name: str, description: str, *tags: str) -> MetricSpec:
    return MetricSpec(name, "gauge", description, (JOB_TAG, *tags))


JOBS: tuple[MetricSpec, ...] = (
    MetricSpec("rlhf_job_completions_total", "counter", "jobs that finished and printed their summary", (JOB_TAG,)),
    _gauge("rlhf_job_last_completion_timestamp_seconds", "Unix time the job last finished"),
    _gauge("rlhf_stage_seconds", "wall seconds of the last run of a stage (the job's timing/<stage> figures)",
           "stage"),
    MetricSpec("rlhf_stage_duration_seconds", "histogram", "distribution of stage wall seconds",
               (JOB_TAG, "stage"), STAGE_BOUNDARIES_S),
)

DATA_PLANE: tuple[MetricSpec, ...] = (
    _gauge("rlhf_data_rows", "feedback rows by outcome: simulated, input, accepted, quarantined, duplicate, dropped",
           "status"),
    _gauge("rlhf_data_rows_per_second", "rows per second through the job (simulate writes, ingest reads)"),
    _gauge("rlhf_signal_latency_seconds", "event -> ingest seconds of the newest dataset version (the stalest "
           "signal type's quantile)", "quantile"),
)

ANNOTATION_QA: tuple[MetricSpec, ...] = (
    _gauge("rlhf_annotation_agreement", "inter-annotator agreement on pairwise items", "statistic"),
    _gauge("rlhf_annotation_label_accuracy", "Dawid-Skene estimate of consensus label accuracy"),
    _gauge("rlhf_annotation_adjudication_queue", "items waiting for an expert"),
    _gauge("rlhf_annotation_flagged_annotators", "annotators flagged (spammer, fatigue, drift, over the cap)"),
    _gauge("rlhf_annotation_pairs", "preference pairs curated"),
    _gauge("rlhf_annotation_active_learning_picks", "items picked for more labels"),
)

TRAINING: tuple[MetricSpec, ...] = (
    _gauge("rlhf_train_loss", "training loss (split=train) and held-out loss (split=heldout)", "split"),
    _gauge("rlhf_train_heldout_accuracy", "held-out preference accuracy vs the truth (RM pairs; DPO implicit "
           "reward)"),
    _gauge("rlhf_train_steps", "optimizer steps of the run"),
    _gauge("rlhf_train_pairs_per_second", "reward-model training throughput"),
    _gauge("rlhf_rm_heldout_ece", "reward model expected calibration error on held-out pairs"),
    _gauge("rlhf_rm_length_correlation", "reward-length correlation at equal true utility (held-out)"),
    _gauge("rlhf_rm_accuracy_when_longer_is_worse", "held-out accuracy on pairs where the longer answer is worse"),
)

PPO: tuple[MetricSpec, ...] = (
    _gauge("rlhf_ppo_iteration", "PPO iterations done"),
    _gauge("rlhf_ppo_reward", "mean reward term per sample (rm, total and each rule penalty)", "term"),
    _gauge("rlhf_ppo_kl", "KL to the reference, nats per answer"),
    _gauge("rlhf_ppo_kl_per_token", "KL to the reference, nats per token"),
    _gauge("rlhf_ppo_kl_coef", "current KL coefficient beta"),
    _gauge("rlhf_ppo_response", "answer figures: words, tokens, canned_rate, repeats", "figure"),
    _gauge("rlhf_ppo_true_utility", "the world's hidden utility of the training samples (evaluation only)"),
    _gauge("rlhf_ppo_eval", "held-out evaluation figures: reward, words, canned_rate, true_utility", "figure"),
    _gauge("rlhf_ppo_policy", "learner update figures (loss, clip fraction, entropy, ...)", "figure"),
    _gauge("rlhf_ppo_critic", "critic update figures (value loss, ...)", "figure"),
    _gauge("rlhf_ppo_samples_per_second", "samples per second per iteration"),
    _gauge("rlhf_ppo_tokens_per_second", "generated tokens per second per iteration"),
    _gauge("rlhf_ppo_step_retries", "rollout steps retried after a worker died"),
    _gauge("rlhf_ppo_rollout", "log-prob parity: mean/max |rollout - learner| log-prob of the sampled tokens "
           "(logprob_diff_mean, logprob_diff_max) and the alerts raised (logprob_diff_alerts)", "figure"),
    _gauge("rlhf_ppo_pipeline", "pipelined rollout: staleness_mean, staleness_<s> (samples trained s policy "
           "versions behind), dropped_stale", "figure"),
    _gauge("rlhf_ppo_idle", "share of wall time a role's actors were not executing a call", "role"),
)

HACKING: tuple[MetricSpec, ...] = (
    _gauge("rlhf_hacking_flag", "reward-hacking monitor raised (1) or quiet (0)", "monitor"),
    _gauge("rlhf_hacking_figure", "reward-hacking monitor figures (length drift, reward-length correlation, ...)",
           "figure"),
)

EVALUATION: tuple[MetricSpec, ...] = (
    _gauge("rlhf_gate_passed", "offline gate verdict for the latest candidate (1 pass, 0 fail)"),
    _gauge("rlhf_gate_superior", "the latest candidate's win-rate interval lies above 0.5 (1 yes, 0 no; "
           "reported, not required)"),
    _gauge("rlhf_gate_win_rate", "candidate win-rate vs the incumbent by the judge, with its interval", "bound"),
    _gauge("rlhf_gate_first_pass_yield", "share of answers accepted without an edit", "policy"),
    _gauge("rlhf_gate_safety_misses", "answers with unsafe content", "policy"),
    _gauge("rlhf_gate_mean_words", "mean answer length in words", "policy"),
    _gauge("rlhf_gate_tokens_per_accepted", "generated tokens per accepted answer", "policy"),
    _gauge("rlhf_gate_seconds_per_accepted", "generation seconds per accepted answer", "policy"),
    _gauge("rlhf_gate_true_utility", "mean hidden utility of the answers (simulation only)", "policy"),
)

DRIFT: tuple[MetricSpec, ...] = (
    _gauge("rlhf_drift_psi", "population stability index, reference -> current", "feature"),
    _gauge("rlhf_drift_ks", "two-sample Kolmogorov-Smirnov statistic D, reference -> current", "feature"),
    _gauge("rlhf_drift_alert", "drift alert raised (1) or quiet (0)", "feature"),
    _gauge("rlhf_drift_label_balance_shift", "largest change of a label's share (pairwise choices, thumbs)"),
    _gauge("rlhf_drift_reward_mean_shift", "probe-set reward mean shift across RM versions, in reference sd"),
)

LOOP_LATENCY: tuple[MetricSpec, ...] = (
    _gauge("rlhf_loop_latency_seconds", "feedback-loop latency by segment: feedback_to_ingest, ingest_to_trained, "
           "trained_to_gated, trained_to_deployed, feedback_to_gated, feedback_to_deployed", "segment"),
)

GROUPS: dict[str, tuple[MetricSpec, ...]] = {
    "serving": SERVING, "jobs": JOBS, "data_plane": DATA_PLANE, "annotation_qa": ANNOTATION_QA,
    "training": TRAINING, "ppo": PPO, "hacking": HACKING, "evaluation": EVALUATION, "drift": DRIFT,
    "loop_latency": LOOP_LATENCY,
}
CATALOGUE: dict[str, MetricSpec] = {spec.name: spec for group in GROUPS.values() for spec in group}
