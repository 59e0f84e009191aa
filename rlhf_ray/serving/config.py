"""Typed settings of a canary deployment: the two policies, the router, guardrails, the sequential test,
feedback capture and admin access. `CanaryAppArgs` is what the Serve application builder receives (from
`rlhf-ray canary`, a Serve config file or a RayService manifest)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlhf_ray.config import StrictModel
from rlhf_ray.governance import PseudonymSection

DEFAULT_ADMIN_TOKEN_ENV = "RLHF_RAY_ADMIN_TOKEN"
DEFAULT_API_KEYS_ENV = "RLHF_RAY_API_KEYS"
LOOPBACK = "127.0.0.1"


class AutoscalingSection(StrictModel):
    """Ray Serve `autoscaling_config` of a policy deployment (replicas follow ongoing requests)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must be ≤ max_replicas={self.max_replicas}")
        return self


class SamplingSection(StrictModel):
    """A variant's sampling settings: defaults for what a request leaves out, and the limits a request's own
    values are clamped to (so a user gets an answer whichever variant serves them)."""

    temperature: float | None = Field(None, ge=0, le=2, description="default temperature "
                                      "(None: generation.temperature)")
    top_p: float = Field(1.0, gt=0, le=1, description="default top_p")
    max_tokens: int | None = Field(None, ge=1, description="default max_tokens (None: generation.max_tokens)")
    min_temperature: float = Field(0.0, ge=0, le=2, description="a request's temperature is raised to this")
    max_temperature: float = Field(2.0, ge=0, le=2, description="a request's temperature is lowered to this")
    max_top_p: float = Field(1.0, gt=0, le=1, description="a request's top_p is lowered to this")
    max_tokens_limit: int | None = Field(None, ge=1, description="a request's max_tokens is lowered to this "
                                         "(None: generation.max_tokens_limit)")

    @model_validator(mode="after")
    def _ordered(self) -> SamplingSection:
        if self.min_temperature > self.max_temperature:
            raise ValueError(f"min_temperature={self.min_temperature} must be ≤ max_temperature="
                             f"{self.max_temperature}")
        return self


class PolicySection(StrictModel):
    """One served variant: a checkpoint, an optional system prompt and sampling settings, and its resources."""

    model_path: str | None = Field(None, description="policy checkpoint directory (unused by backend=echo)")
    policy_id: str | None = Field(None, description="lineage id of the variant (its checkpoint's when it has no "
                                  "system prompt or sampling settings); set by `rlhf-ray canary`")
    system_prompt: str | None = Field(None, min_length=1, description="put before every conversation (merged "
                                      "with a client's own system message, this first)")
    sampling: SamplingSection = SamplingSection()
    backend: Literal["hf", "vllm", "echo"] = Field("hf", description="hf = transformers generate (CPU/GPU), "
                                                   "vllm = GPU, echo = answers with the prompt (benchmarks)")
    backend_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra backend arguments")
    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per replica")
    num_replicas: int = Field(1, ge=1, description="fixed replica count when autoscaling is unset")
    autoscaling: AutoscalingSection | None = None
    max_ongoing_requests: int = Field(8, ge=1)


class GenerationSection(StrictModel):
    max_tokens: int = Field(32, ge=1, description="default max_tokens of a request")
    max_tokens_limit: int = Field(256, ge=1, description="largest max_tokens a request may ask for")
    temperature: float = Field(0.7, ge=0, description="default temperature of a request")
    max_n: int = Field(4, ge=1, description="largest n (answers per request) a request may ask for")
    timeout_s: float = Field(60.0, gt=0, description="a policy call slower than this is an error")


class RouterSection(StrictModel):
    model_name: str = Field("rlhf-policy", min_length=1, description="the `model` clients must ask for")
    initial_weight: float = Field(0.1, ge=0, le=1, description="share of users routed to the canary at start")
    mode: Literal["split", "shadow"] = Field("split", description="split = users see the canary; shadow = "
                                             "users see the incumbent, the canary gets a copy")
    num_cpus: float = Field(0.1, ge=0)
    num_replicas: int = Field(1, ge=1)
    monitor_num_cpus: float = Field(0.05, ge=0, description="CPUs reserved for the canary monitor")
    max_ongoing_requests: int = Field(64, ge=1)
    max_body_bytes: int = Field(65536, ge=1024, description="larger request bodies get 413")
    report_interval_s: float = Field(0.2, gt=0, description="how often a router replica reports to the monitor")
    response_cache: int = Field(10000, ge=1, description="answers remembered per replica for feedback")
    blocklist: tuple[str, ...] = Field((), description="phrases that make an answer a safety flag")
    default_region: str = Field("us", min_length=1, description="region tag of feedback rows without one")


class GuardrailSection(StrictModel):
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_p95_latency_s: float = Field(5.0, gt=0)
    max_safety_flag_rate: float = Field(0.05, ge=0, le=1)
    min_requests: int = Field(20, ge=1, description="canary requests in the window before guardrails judge")
    window: int = Field(200, ge=1, description="most recent canary requests the guardrails look at")

    @model_validator(mode="after")
    def _window(self) -> GuardrailSection:
        if self.window < self.min_requests:
            raise ValueError(f"window={self.window} must be ≥ min_requests={self.min_requests}")
        return self


class SequentialSection(StrictModel):
    alpha: float = Field(0.05, gt=0, lt=1, description="false-positive bound at any stopping time")
    power: float = Field(0.8, gt=0, lt=1, description="power of the fixed-horizon comparison")
    mde: float = Field(0.1, gt=0, lt=1, description="minimum detectable difference of accept rates")
    baseline_rate: float = Field(0.5, gt=0, lt=1, description="expected incumbent accept rate (for planning)")
    tau: float | None = Field(None, gt=0, description="mixture spread τ (default: mde)")
    min_samples: int = Field(20, ge=1, description="judged answers per variant before any decision")
    max_samples: int | None = Field(None, ge=2, description="stop and keep the incumbent after this many "
                                    "judged answers (default: twice the fixed-horizon total)")
    auto_decide: bool = Field(True, description="promote / roll back as soon as the test decides")
    max_outcomes_per_user: int = Field(20, ge=1, description="judged answers one user may contribute to an arm "
                                       "(caps any user's weight in the test)")


class FeedbackSection(StrictModel):
    dir: str | None = Field(None, description="feedback shard directory or URI (default: <state_dir>/feedback)")
    flush_rows: int = Field(200, ge=1, description="rows per shard file at most")
    flush_interval_s: float = Field(1.0, gt=0, description="buffered rows are written at least this often")
    rate_per_s: float = Field(1.0, gt=0, description="feedback requests a user may send per second (sustained), "
                              "per router replica")
    burst: int = Field(20, ge=1, description="feedback requests a user may send at once before the rate applies")


class AuthSection(StrictModel):
    """Who the users are: `{user name: api key}` (JSON or YAML), sent by clients as `Authorization: Bearer`.
    Without keys chat works, but feedback is unauthenticated and not counted by the sequential test."""

    keys_env: str = Field(DEFAULT_API_KEYS_ENV, description="environment variable holding the API keys table")
    keys_file: str | None = Field(None, description="file holding the API keys table, used when the env var is unset")


class AdminSection(StrictModel):
    token_env: str = Field(DEFAULT_ADMIN_TOKEN_ENV, description="environment variable holding the bearer token")
    token_file: str | None = Field(None, description="file holding the token, used when the env var is unset")


class ServingSections(StrictModel):
    """The settings a canary deployment and the `rlhf-ray canary` job share, section by section."""

    incumbent: PolicySection = PolicySection()
    canary: PolicySection = PolicySection()
    generation: GenerationSection = GenerationSection()
    router: RouterSection = RouterSection()
    guardrails: GuardrailSection = GuardrailSection()
    sequential: SequentialSection = SequentialSection()
    feedback: FeedbackSection = FeedbackSection()
    admin: AdminSection = AdminSection()
    auth: AuthSection = AuthSection()
    pseudonyms: PseudonymSection = PseudonymSection()


class CanaryAppArgs(ServingSections):
    """Arguments of the Serve application builder `actors.serve_app:canary_app`."""

    deployment_id: str = Field("canary", min_length=1, description="lineage id; also salts user hashing")
    state_dir: str = Field("runs/canary/state", description="audit entries, shadow log, default feedback dir")
    lineage_root: str | None = Field(None, description="lineage registry for promote / rollback events")

    @property
    def feedback_dir(self) -> str:
        return self.feedback.dir or f"{self.state_dir.rstrip('/')}/feedback"


Phase = Literal["running", "promoted", "rolled_back", "killed"]


class RouterState(StrictModel):
    """The router's `user_config`: what changes at runtime without restarting a replica."""

    canary_weight: float = Field(ge=0, le=1)
    mode: Literal["split", "shadow"] = "split"
    phase: Phase = "running"
    revision: int = Field(0, ge=0, description="bumped by every change, so replicas can tell stale from new")
