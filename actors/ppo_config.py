"""The PPO engine's settings: the actor groups and their resources, the reward, KL and advantage estimator.

Read by the controller (`actors.ppo_controller`) and its resource arithmetic (`actors.ppo_resources`). Where the
prompts come from and who judges the answers is not configured here: the job hands the engine a
`PromptSource` and `Evaluator`s (`jobs.ppo`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from actors.ppo_resources import config_problems
from rlhf_ray.algos.advantages import GRPO_SCALES
from rlhf_ray.algos.phrases import load_phrase_list
from rlhf_ray.config import JobConfig, StrictModel, drop_retired
from rlhf_ray.config.resources import ClusterSection
from rlhf_ray.models.heads import DEFAULT_TOKEN_BUDGET
from rlhf_ray.models.options import ModelOptions
from rlhf_ray.models.placement import DEVICE_HELP, DeviceSpec, DtypeName, Placement
from rlhf_ray.rewards.spec import RewardSourceSpec
from rlhf_ray.training.config import DeepSpeedSection


class PPOError(ValueError):
    """The job cannot start: a missing model, reward or checkpoint."""


class RolloutSection(Placement):
    """Generation workers. `device` and `dtype` place the hf backend's model (loaded in `dtype`); vLLM places
    itself on the worker's GPU and takes its dtype from `backend_kwargs.dtype`."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf = transformers generate (CPU/GPU); vllm = GPU")
    num_workers: int = Field(2, ge=1)
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    max_restarts: int = Field(2, ge=-1, description="Ray restarts of a dead rollout worker")
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    backend_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra backend arguments")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per worker, e.g. "
                                        "{rollout_node: 0.01}: workers go only to nodes started with them")
    colocate_with_learner: bool = Field(False, description="worker i shares learner rank i's placement bundle "
                                        "(and GPU): one engine per learner rank")
    weight_sync: Literal["object_store", "nccl"] = Field(
        "object_store", description="how new policy weights reach the workers: object_store = one Ray object every "
        "worker gets (CPU or GPU, any backend); nccl = a broadcast from learner rank 0 into the vLLM engines' GPU "
        "memory (backend vllm, GPUs on the learner and the workers)")
    weight_sync_bucket_mb: float = Field(256.0, gt=0, description="nccl: tensors are broadcast in buckets of at "
                                         "most this many MiB (a larger tensor goes alone)")
    verify_weights_every: int = Field(10, ge=1, description="object_store: every N-th weight sync (and the first "
                                      "of a group, and a worker's first load after it restarted) the workers hash "
                                      "what they loaded and the digests must agree; the other syncs check the "
                                      "policy versions only (the sha256 reads every weight: most of a small model's "
                                      "sync)")
    logprob_diff_alert: float = Field(0.05, gt=0, description="log-prob parity: above this mean |Δ| between the "
                                      "log-probs the rollout reported for its tokens and the learner's recomputation "
                                      "(`rollout/logprob_diff_mean`) a warning goes to stderr and "
                                      "`rollout/logprob_diff_alerts` counts it")
    logprob_parity_every: int = Field(10, ge=1, description="where the rollout's log-probs stand in for the "
                                      "learner's old log-probs (sync, temperature 1, no top-p/top-k, hf in the "
                                      "learner's dtype), the learner still recomputes them every N-th iteration (and "
                                      "at the first one after a start or recovery) to check parity; otherwise it "
                                      "recomputes them every iteration, and parity is measured over the samples of "
                                      "its current policy (pipeline modes: rarely any, their samples are older)")

    @model_validator(mode="after")
    def _one_place_for_placement(self) -> RolloutSection:
        if self.backend == "vllm" and (self.device, self.dtype) != ("auto", "float32"):
            raise ValueError(f"rollout.device={self.device!r} / rollout.dtype={self.dtype!r} place the hf backend; "
                             "vLLM runs on the worker's GPU and takes backend_kwargs.dtype")
        if self.backend == "hf" and (named := sorted({"device", "dtype"} & set(self.backend_kwargs))):
            raise ValueError(f"rollout.backend_kwargs.{named[0]}: set rollout.{named[0]} instead (the hf backend's "
                             "placement has one setting)")
        return self

    def worker_backend_kwargs(self) -> dict[str, Any]:
        """What a rollout worker builds its backend with: `backend_kwargs`, plus the hf backend's device and dtype
        (vLLM places itself)."""
        placement = {"device": self.device, "dtype": self.dtype} if self.backend == "hf" else {}
        return {**self.backend_kwargs, **placement}

    @model_validator(mode="after")
    def _nccl_sync_needs_vllm_on_gpus(self) -> RolloutSection:
        # An error rather than a quiet fallback to the object store: a run sized for NCCL would move the whole
        # policy through the object store every iteration, which is the cost the setting exists to avoid.
        if self.weight_sync == "nccl" and (self.backend != "vllm" or self.num_gpus <= 0):
            raise ValueError(f"rollout.weight_sync='nccl' broadcasts into vLLM engines on GPUs: it needs "
                             f"rollout.backend='vllm' and rollout.num_gpus > 0; got backend={self.backend!r}, "
                             f"num_gpus={self.num_gpus} (use rollout.weight_sync='object_store')")
        return self


class OptimizerSection(Placement):
    """A trained role's group: its ranks, resources and optimizer. `device` and `dtype` (`Placement`): the fp32
    model lives on `device`, and its forward passes run under autocast in `dtype` (float16 with a grad scaler)."""

    num_workers: int = Field(1, ge=1, description="data-parallel ranks (a torch.distributed group)")
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per rank (default: Ray's, "
                                      "one per whole reserved CPU); the stages run one after another, so a rank "
                                      "may use more threads than it reserves")
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, description="passes over each iteration's experience")
    num_minibatches: int = Field(2, ge=1, description="optimizer steps per pass, per rank")
    deepspeed: DeepSpeedSection | None = None
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per rank, e.g. "
                                        "{learner_node: 0.01}: ranks go only to nodes started with them")

    @model_validator(mode="after")
    def _fp16_needs_the_torch_engine(self) -> OptimizerSection:
        if self.dtype == "float16" and self.deepspeed is not None:
            raise ValueError("dtype='float16' scales the loss in the plain torch engine; with deepspeed set, use "
                             "dtype: bfloat16 or float32 (or DeepSpeed's own fp16 section through deepspeed.overrides)")
        return self


class LearnerSection(OptimizerSection):
    policy_loss: Literal["ppo"] = "ppo"
    clip_eps: float = Field(0.2, gt=0)
    dual_clip: float | None = Field(None, gt=1, description="dual-clip constant c > 1 (Ye et al.), off by default")
    is_cap: float = Field(2.0, gt=1, description="samples of an older policy (pipeline modes): cap C of each token's "
                          "weight min(π_prox/π_behav, C) in the decoupled PPO loss")
    entropy_coef: float = Field(0.0, ge=0)
    logprob_token_budget: int | None = Field(DEFAULT_TOKEN_BUDGET, ge=1, description="tokens whose logits exist "
                                             "at once when computing log-probs and entropy (memory ≈ a few × budget "
                                             "× vocabulary × 4 bytes); null forms all [B, T, V] logits at once")


class CriticSection(OptimizerSection):
    num_cpus: float = Field(0.25, ge=0)
    lr: float = Field(1e-4, gt=0)
    value_clip: float | None = Field(0.2, gt=0)
    init_from: Literal["reward_model", "policy"] = Field("reward_model",
                                                         description="backbone of the critic (policy if no RM)")


class RewardSection(Placement):
    """The training reward: Σ_k w_k · score_k over `model_path` (one RM source of weight 1) and `sources`, or the
    rule reward when neither is set; minus the rule penalties (`rlhf_ray.roles.scoring`). `device` and `dtype`
    place the model sources (reward models, LLM judges), whose weights load in `dtype`."""

    model_path: str | None = Field(None, description="reward model directory from `rlhf-ray train-rm`")
    sources: list[RewardSourceSpec] = Field(default_factory=list, description="further weighted reward sources: "
                                            "[{kind: rm|http|function|llm_judge, weight, path|url|function, ...}]")
    retries: int = Field(2, ge=0, description="tries after a reward source's first failure before the step fails "
                         "naming it")
    rule_keywords: list[str] = Field(default_factory=list, description="rule reward when no reward source is given")
    normalize: bool = True
    verbosity_target_words: int = Field(60, ge=1)
    verbosity_coef: float = Field(0.0, ge=0, description="penalty per target-length of excess words")
    canned_phrases: list[str] = Field(default_factory=list, description="phrases penalised (with the file's)")
    canned_phrases_file: str | None = Field(None, description="a JSON list of phrases, or a folder of them with a "
                                            "LATEST file: the list `rlhf-ray curate` learns (<output_dir>/phrases) "
                                            "or your own")
    canned_coef: float = Field(0.0, ge=0, description="penalty per canned phrase")
    repetition_coef: float = Field(0.0, ge=0, description="penalty per repeated sentence")
    max_length: int = Field(256, ge=8)
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)

    def phrases(self) -> list[str]:
        """`canned_phrases` and the phrases of `canned_phrases_file`; a missing or malformed file is a PPOError
        naming the field."""
        if self.canned_phrases_file is None:
            return list(self.canned_phrases)
        try:
            return [*self.canned_phrases, *load_phrase_list(self.canned_phrases_file)]
        except (OSError, ValueError) as error:
            raise PPOError(f"reward.canned_phrases_file={self.canned_phrases_file!r}: {error}") from error


class PipelineSection(StrictModel):
    """How generation overlaps learning. sync: generate, score, update, sync, in lockstep. one_step_off: the
    generation of iteration k+1 runs while iteration k updates (its samples are one policy version old). async:
    up to `max_staleness` generation batches in flight ahead of the update. Samples of an older policy are trained
    with the decoupled PPO loss (`learner.is_cap`) against the rollout's behaviour log-probs."""

    mode: Literal["sync", "one_step_off", "async"] = "sync"
    max_staleness: int = Field(1, ge=1, description="async: generation batches in flight ahead of the update, and "
                               "the oldest policy (in updates behind the learner) a trained sample may come from; "
                               "older samples are dropped (ledger reason 'stale')")

    @model_validator(mode="after")
    def _one_step_off_is_one(self) -> PipelineSection:
        if self.mode == "one_step_off" and self.max_staleness != 1:
            raise ValueError(f"pipeline.max_staleness={self.max_staleness} with pipeline.mode='one_step_off' (which "
                             "is one batch ahead); use mode: async for more")
        return self

    def lookahead(self) -> int:
        """Generation batches submitted ahead of the one being trained."""
        return 0 if self.mode == "sync" else self.max_staleness


class KLSection(StrictModel):
    coef: float = Field(0.05, ge=0, description="β, the initial coefficient when adaptive")
    kind: Literal["k1", "k2", "k3"] = "k1"
    target: float | None = Field(None, gt=0, description="adaptive controller target KL (Ziegler et al.); off if unset")
    horizon: int = Field(10000, ge=1)


class AdvantageSection(StrictModel):
    estimator: Literal["gae", "grpo", "rloo", "reinforce_pp"] = "gae"
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten: bool = True
    grpo_scale: Literal[GRPO_SCALES] = "group"  # type: ignore[valid-type]


# Keys earlier releases read, dropped with a warning so their configs (and runs' saved configs) still load.
RETIRED_KEYS = {"data_cpus": "training prompts are shuffled in the driver, with no Ray Data tasks to reserve for"}


class PPOEngineConfig(JobConfig):
    model_path: str | None = Field(None, description="the starting policy (an SFT model directory)")
    model: ModelOptions = ModelOptions()
    reference_path: str | None = Field(None, description="frozen reference policy; default: model_path")
    judge_model_path: str | None = Field(None, description="a second reward model (e.g. trained on held-out pairs) "
                                         "scoring held-out answers as `eval/judge_reward`; never a training signal")
    output_dir: str = "runs/ppo"
    parent_ids: list[str] = Field(default_factory=list, description="lineage ids recorded as further parents of "
                                  "the policy, e.g. the sweep that chose these settings")
    iterations: int = Field(20, ge=1)
    prompts_per_iteration: int = Field(16, ge=1)
    samples_per_prompt: int = Field(1, ge=1, description="group size G (grpo and rloo need G ≥ 2)")
    eval_every: int = Field(5, ge=1, description="held-out evaluation every N iterations (and at start and end)")
    eval_split: Literal["validation", "test"] = Field("validation", description="the prompt split evaluated during "
                                                      "training (sweeps choose on it, so never the reported split)")
    eval_prompts: int = Field(32, ge=1, description="held-out prompts evaluated (at most the split's size)")
    eval_samples_per_prompt: int = Field(4, ge=1, description="samples per held-out prompt (less noisy means)")
    eval_temperature: float = Field(0.7, ge=0)
    checkpoint_every: int = Field(5, ge=1)
    resume: bool = Field(False, description="continue from <output_dir>/checkpoints/latest")
    max_step_retries: int = Field(2, ge=0, description="retries of a rollout step after a worker dies")
    max_learner_recoveries: int = Field(1, ge=0, description="rebuilds of the learner and critic groups from the "
                                        "latest checkpoint after one of their ranks dies (0: the run fails)")
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    reference_num_cpus: float = Field(0.25, ge=0)
    judge_num_cpus: float = Field(0.1, ge=0)
    reference_num_gpus: float = Field(0.0, ge=0)
    reference_logprob_token_budget: int | None = Field(DEFAULT_TOKEN_BUDGET, ge=1, description="the reference "
                                                       "model's learner.logprob_token_budget")
    reference_device: DeviceSpec = Field("auto", description=f"the frozen reference model's device: {DEVICE_HELP}")
    reference_dtype: DtypeName = Field("float32", description="float32 | bfloat16 | float16: the reference "
                                       "model's weights load in it (its log-probs are float32 whatever it is)")
    cluster: ClusterSection | None = Field(None, description="the cluster this config is sized for; the actors' "
                                           "resource arithmetic is checked against it when the config loads")
    rollout: RolloutSection = RolloutSection()
    learner: LearnerSection = LearnerSection()
    critic: CriticSection = CriticSection()
    reward: RewardSection = RewardSection()
    kl: KLSection = KLSection()
    advantage: AdvantageSection = AdvantageSection()
    pipeline: PipelineSection = PipelineSection()

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        return drop_retired(data, RETIRED_KEYS, "")

    @model_validator(mode="after")
    def _consistent(self) -> PPOEngineConfig:
        estimator = self.advantage.estimator
        if estimator in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ValueError(f"advantage.estimator={estimator!r} compares samples of one prompt: samples_per_prompt "
                             f"must be ≥ 2; got {self.samples_per_prompt}")
        rows = self.prompts_per_iteration * self.samples_per_prompt
        for name, section in (("learner", self.learner), ("critic", self.critic)):
            if rows < section.num_workers * section.num_minibatches:
                raise ValueError(f"{name}: prompts_per_iteration × samples_per_prompt = {rows} rows cannot fill "
                                 f"{section.num_workers} rank(s) × {section.num_minibatches} minibatches")
        if self.prompts_per_iteration < self.rollout.num_workers:
            raise ValueError(f"prompts_per_iteration={self.prompts_per_iteration} must be ≥ rollout.num_workers="
                             f"{self.rollout.num_workers} (each worker needs a prompt)")
        gpus = {"learner": (self.learner.device, self.learner.num_gpus),
                "critic": (self.critic.device, self.critic.num_gpus),
                "rollout": (self.rollout.device, self.rollout.num_gpus),
                "reward": (self.reward.device, self.reward.num_gpus),
                "reference": (self.reference_device, self.reference_num_gpus)}
        for name, (device, num_gpus) in gpus.items():
            if device.startswith("cuda") and num_gpus == 0:
                field = "reference_num_gpus" if name == "reference" else f"{name}.num_gpus"
                raise ValueError(f"{name} device {device!r} needs a GPU, but {field}=0: a Ray actor sees only the "
                                 "GPUs it reserves (set the num_gpus, or device: auto)")
        if self.rollout.weight_sync == "nccl" and self.learner.num_gpus <= 0:
            raise ValueError("rollout.weight_sync='nccl' sends from learner rank 0's GPU: it needs learner.num_gpus "
                             f"> 0; got {self.learner.num_gpus} (use rollout.weight_sync='object_store')")
        rollout = self.rollout
        if self.pipeline.mode != "sync":
            # The rollout reports log softmax(logits / T) before top-k/top-p: the behaviour policy's log-probs only
            # when it sampled from the policy itself. The older policy is gone by the update, so nothing can
            # recompute them: refused rather than trained with a biased importance weight.
            if (rollout.temperature, rollout.top_p, rollout.top_k) != (1.0, 1.0, 0):
                raise ValueError(f"pipeline.mode={self.pipeline.mode!r} trains on samples of older policies, whose "
                                 "log-probs only the rollout knows, and it reports them right only when sampling "
                                 "from the policy itself: it needs rollout.temperature=1, rollout.top_p=1, "
                                 f"rollout.top_k=0; got temperature={rollout.temperature}, top_p={rollout.top_p}, "
                                 f"top_k={rollout.top_k} (or use pipeline.mode: sync)")
            if rollout.weight_sync != "object_store":
                raise ValueError(f"pipeline.mode={self.pipeline.mode!r} hands new weights to the workers between "
                                 "their requests, which an NCCL broadcast (a collective every worker joins at once) "
                                 f"cannot; got rollout.weight_sync={rollout.weight_sync!r} (use object_store, or "
                                 "pipeline.mode: sync)")
        if problems := config_problems(self):
            raise ValueError("; ".join(problems))
        return self
