"""The loop's config: which stages run, each stage's settings section, the loop's own gates and the watch.

Read by `jobs.loop_stages` (which turns it into each job's config) and by `jobs.loop` (which runs the stages).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from actors import ingest, ppo_config
from jobs import canary, curate, dpo, evaluate, import_feedback, init_model, ppo, regress, sft, sweep_config, train_rm
from jobs.training import ScalingSection
from rlhf_ray.config import JobConfig, StrictModel, drop_retired
from rlhf_ray.evaluation.drift import DriftThresholds
from rlhf_ray.governance import PiiSection, PseudonymSection
from rlhf_ray.inputs.world import ShardConfig, WorldConfig
from rlhf_ray.models import ModelOptions
from rlhf_ray.serving.config import ServingSections
from rlhf_ray.training.config import TrainSection

StageName = Literal["simulate", "import", "ingest", "curate", "init-model", "sft", "train-rm", "train-judge", "dpo",
                    "sweep", "ppo", "gate", "canary"]
STAGES: tuple[str, ...] = get_args(StageName)
DEFAULT_STAGES = [stage for stage in STAGES if stage not in ("import", "sweep")]  # a sweep costs a PPO run per trial
# With `source` (bring your own): the user's model and files replace simulate and init-model.
SOURCE_STAGES = ["import", "ingest", "curate", "sft", "train-rm", "dpo", "ppo", "gate", "canary"]
SIMULATION_ONLY = ("simulate", "init-model")
REFRESH_STAGES = ("ingest", "curate", "train-rm", "sweep", "ppo", "gate", "canary")
# The stages whose outputs a stage reads; each must be listed whenever the stage is (a tuple: any one of them).
# With `source`, the base model stands for init-model.
REQUIRES: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "ingest": (("simulate", "import"),),  # the feedback shards
    "curate": ("ingest",),          # the dataset version (and simulate's gold items)
    "init-model": ("ingest",),      # the dataset is the model's lineage parent
    "sft": ("init-model",),         # the model to fine-tune
    "train-rm": ("sft", "curate"),  # the SFT backbone and the preference pairs
    "train-judge": (("simulate", "import"), "sft"),  # the judge set (beside the feedback shards) and the SFT backbone
    "dpo": ("sft", "curate"),       # the SFT policy (also the reference) and the pairs
    "sweep": ("sft", "train-rm"),   # as PPO: each trial is a PPO run
    "ppo": ("sft", "train-rm"),     # the SFT policy (also the reference) and the reward model
    "gate": (("ppo", "dpo"),),      # the candidate policy (gate.candidate says whose)
    "canary": ("gate",),            # only a candidate that passed the offline gate is served
}
# Stages whose outputs a stage reads when they are listed, but which it does not need: the sweep's chosen settings;
# the judge RM, which scores PPO's and the sweep's validation answers and judges the gate (unless gate.judge_path
# names another judge, or a judge_by says oracle).
READS_IF_LISTED: dict[str, tuple[str, ...]] = {"sweep": ("train-judge",), "ppo": ("sweep", "train-judge"),
                                               "gate": ("train-judge",)}


def input_stages(name: str) -> tuple[str, ...]:
    """Every stage whose outputs stage `name` may read (alternatives included)."""
    needs = (*REQUIRES.get(name, ()), *READS_IF_LISTED.get(name, ()))
    return tuple(stage for need in needs for stage in ((need,) if isinstance(need, str) else need))


class SFTStage(StrictModel):
    """The `sft` job's settings in the loop; its model comes from init-model."""

    references_per_prompt: int = sft.SFTConfig.model_fields["references_per_prompt"]
    train: TrainSection = TrainSection()
    scaling: ScalingSection = ScalingSection()


class RewardModelStage(StrictModel):
    """The `train-rm` job's settings in the loop; its backbone is the SFT model, its pairs curate's."""

    heldout_pairs_per_prompt: int = train_rm.TrainRMConfig.model_fields["heldout_pairs_per_prompt"]
    train: train_rm.RewardTrainSection = train_rm.RewardTrainSection()
    scaling: ScalingSection = ScalingSection()


class JudgeModelStage(StrictModel):
    """The `train-judge` stage: the simulate stage's judge set (annotator pairs on validation prompts) through ingest
    and curate, then a reward model trained on those pairs with the reward model's settings (`reward_model`) but
    these. It judges the gate and the sweep, and scores PPO's validation answers; it never trains a policy."""

    epochs: int | None = Field(1, ge=1, description="training epochs (null: reward_model.train.epochs); one keeps "
                               "the stage cheap, the judge set being small")


class DPOStage(StrictModel):
    """The `dpo` job's settings in the loop; it starts from the SFT model, which is also its reference."""

    heldout_pairs_per_prompt: int = dpo.DPOConfig.model_fields["heldout_pairs_per_prompt"]
    train: dpo.DPOTrainSection = dpo.DPOTrainSection()
    scaling: ScalingSection = ScalingSection()


class PPOStage(StrictModel):
    """The `ppo` job's settings in the loop; it starts from the incumbent (the SFT model at first) against the
    iteration's reward model, with the SFT model as the frozen reference."""

    iterations: int = ppo.PPOConfig.model_fields["iterations"]
    prompts_per_iteration: int = ppo.PPOConfig.model_fields["prompts_per_iteration"]
    samples_per_prompt: int = ppo.PPOConfig.model_fields["samples_per_prompt"]
    eval_every: int = ppo.PPOConfig.model_fields["eval_every"]
    eval_prompts: int = ppo.PPOConfig.model_fields["eval_prompts"]
    eval_samples_per_prompt: int = ppo.PPOConfig.model_fields["eval_samples_per_prompt"]
    checkpoint_every: int = ppo.PPOConfig.model_fields["checkpoint_every"]
    max_step_retries: int = ppo.PPOConfig.model_fields["max_step_retries"]
    max_learner_recoveries: int = ppo.PPOConfig.model_fields["max_learner_recoveries"]
    reference_num_cpus: float = ppo.PPOConfig.model_fields["reference_num_cpus"]
    rollout: ppo_config.RolloutSection = ppo_config.RolloutSection()
    learner: ppo_config.LearnerSection = ppo_config.LearnerSection()
    critic: ppo_config.CriticSection = ppo_config.CriticSection()
    reward: ppo_config.RewardSection = ppo_config.RewardSection()
    kl: ppo_config.KLSection = ppo_config.KLSection()
    advantage: ppo_config.AdvantageSection = ppo_config.AdvantageSection()
    pipeline: ppo_config.PipelineSection = ppo_config.PipelineSection()

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        return drop_retired(data, ppo_config.RETIRED_KEYS, "ppo.")


class SweepStage(StrictModel):
    """The `sweep` job's settings in the loop: its trials are the iteration's PPO run (same start, reward model
    and settings) with the search space applied, for `trial_iterations` iterations."""

    name: str = sweep_config.SweepConfig.model_fields["name"]
    search_space: dict[str, sweep_config.ParamSpec] = sweep_config.SweepConfig.model_fields["search_space"]
    num_samples: int = sweep_config.SweepConfig.model_fields["num_samples"]
    max_concurrent_trials: int = sweep_config.SweepConfig.model_fields["max_concurrent_trials"]
    trial_cpus: float = sweep_config.SweepConfig.model_fields["trial_cpus"]
    trial_iterations: int | None = Field(None, ge=1, description="PPO iterations per trial (default: ppo.iterations); "
                                         "fewer makes a cheaper search before the full run")
    judge_by: Literal["judge_rm", "oracle"] = sweep_config.SweepConfig.model_fields["judge_by"]
    scheduler: sweep_config.SchedulerSection = sweep_config.SchedulerSection()
    hacking: sweep_config.HackingSection = sweep_config.HackingSection()
    max_failures: int = sweep_config.SweepConfig.model_fields["max_failures"]


class GateStage(StrictModel):
    """The offline gate (`rlhf-ray evaluate`) in the loop: the PPO candidate against the incumbent, judged by the
    train-judge stage's reward model unless `judge_path` names another one."""

    candidate: Literal["ppo", "dpo"] = Field("ppo", description="the stage whose policy is the candidate (and, "
                                             "once promoted, the next incumbent)")
    judge_by: Literal["judge_rm", "oracle"] = evaluate.EvaluateConfig.model_fields["judge_by"]
    judge_path: str | None = Field(None, description="the judge: a reward model directory, an http(s):// URL or "
                                   "package.module:function (null: the train-judge stage's reward model)")
    prompts: int = evaluate.EvaluateConfig.model_fields["prompts"]
    samples_per_prompt: int = evaluate.EvaluateConfig.model_fields["samples_per_prompt"]
    acceptance: Literal["user_model", "rubric"] = evaluate.EvaluateConfig.model_fields["acceptance"]
    interval: Literal["wilson", "bootstrap"] = evaluate.EvaluateConfig.model_fields["interval"]
    confidence: float = evaluate.EvaluateConfig.model_fields["confidence"]
    bootstrap_resamples: int = evaluate.EvaluateConfig.model_fields["bootstrap_resamples"]
    generation: evaluate.GenerationSection = evaluate.GenerationSection()
    judge: evaluate.JudgeSection = evaluate.JudgeSection()
    thresholds: evaluate.GateThresholds = evaluate.GateThresholds()
    regression_suite: str | None = Field(None, description="a behavioural regression suite (suites/*.yaml) the "
                                         "candidate runs against the incumbent after the win-rate gate; a case the "
                                         "incumbent passes and the candidate fails (not an accepted change) fails "
                                         "the gate (null: off)")
    regression: regress.SuiteRunSection = Field(regress.SuiteRunSection(), description="how the suite runs "
                                                "(judge_path null: the gate's judge)")


class CanaryStage(ServingSections):
    """The canary (`rlhf-ray canary`) in the loop: the incumbent and the gated candidate on Ray Serve; its
    captured feedback lands among the feedback shards, so the next iteration's ingest reads it."""

    serve: canary.ServeSection = canary.ServeSection()
    ramp: canary.RampSection = canary.RampSection()
    simulation: canary.SimulationSection = canary.SimulationSection()
    traffic: canary.TrafficSection = canary.TrafficSection()


class GatesSection(StrictModel):
    """The loop's own gates on data and reward model (the policy gate's thresholds are `gate.thresholds`);
    null turns a check off."""

    max_quarantine_rate: float | None = Field(0.25, ge=0, le=1, description="quarantined / ingested rows")
    min_kappa_ratio: float | None = Field(
        0.3, ge=0, description="least Fleiss κ of the pairwise labels, as a share of the κ their annotators' gold "
        "accuracies predict (curate's `expected_fleiss_kappa`). `python benchmarks/gates.py --seeds 40` at the "
        "quickstart's size (66–126 gold labels): good data read 0.32–2.32 (the expected κ is noisy on so few gold "
        "labels); with 60% of the non-gold labels replaced by coin flips, 31 of 40 fell below 0.3. 0.5 would catch "
        "36 but fail 2 good")
    min_gold_labels: int = Field(50, ge=1, description="gold labels the expected κ must rest on for "
                                 "min_kappa_ratio to judge; with fewer the check fails as unjudgeable")
    min_fleiss_kappa: float | None = Field(None, description="optional absolute floor on the pairwise labels' "
                                           "Fleiss κ, e.g. for data without gold (with min_kappa_ratio: null)")
    min_rm_accuracy: float | None = Field(0.6, ge=0, le=1, description="reward model's held-out accuracy against "
                                          "the truth: 0.6 is > 3 standard errors above chance (0.5) on the ~300 "
                                          "validation pairs, below every trained RM measured (biased ones 0.70)")
    max_rm_length_correlation: float | None = Field(
        0.3, description="reward–length correlation at equal utility (train-rm's "
        "`heldout_length_correlation_at_equal_utility`). `python benchmarks/gates.py --seeds 40` on the quickstart "
        "world's validation pairs: unbiased rewards (the true utility itself, or it plus noise) read −0.09 to +0.24; "
        "adding a quarter of an sd of reward per sd of length +0.25 to +0.42 (31 of 40 above 0.3), half +0.45 to "
        "+0.62 (all above)")


class WatchSection(StrictModel):
    """`loop --watch`: after the configured iterations, wait for new feedback and run another iteration when a
    retraining trigger fires (either one; null turns it off)."""

    poll_seconds: float = Field(60.0, gt=0, description="how often the feedback shards are listed")
    min_new_rows: int | None = Field(1000, ge=1, description="volume trigger: accepted rows ingested since the "
                                     "dataset the last iteration trained on")
    drift_alert: bool = Field(True, description="drift trigger: any `rlhf-ray drift` alert between the last "
                              "iteration's dataset and the new one")
    drift_thresholds: DriftThresholds = DriftThresholds()
    max_iterations: int | None = Field(None, ge=1, description="stop once this many iterations have run in all")
    max_wait_seconds: float | None = Field(None, gt=0, description="stop after this long without a trigger firing")

    @field_validator("drift_alert")
    @classmethod
    def _a_trigger_is_on(cls, value: bool, info: Any) -> bool:
        if not value and info.data.get("min_new_rows") is None:
            raise ValueError("watch needs a trigger: set min_new_rows or drift_alert: true")
        return value


class ImportSpec(StrictModel):
    """One file of the user's feedback in a public format, turned into shards by `rlhf-ray import`."""

    format: str = Field(description="an `rlhf-ray import --format` name, e.g. trl-preference or jsonl")
    input: str = Field(description="the file (.jsonl, .json or .parquet)")
    map: dict[str, str] = Field(default_factory=dict, description="field map (as `--map key=field`)")
    confidence: float | None = import_feedback.ImportConfig.model_fields["confidence"]
    region: str = import_feedback.ImportConfig.model_fields["region"]

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from rlhf_ray.inputs.formats import FORMATS

        if value not in FORMATS:
            raise ValueError(f"format {value!r} is not an import format; expected one of {sorted(FORMATS)}")
        return value


class SourceSection(StrictModel):
    """Bring your own model and data: with a source, the loop reads the user's checkpoint and files instead of the
    simulated world (no simulate, no init-model). Relative paths are read from the working directory."""

    base_model: str = Field(description="local Hugging Face causal-LM checkpoint directory: the policy to start from")
    model: ModelOptions = Field(ModelOptions(), description="its chat template (if it ships none) and LoRA")
    feedback: list[ImportSpec] = Field(min_length=1, description="preference and feedback files; the `import` stage "
                                       "writes them as shards under <out>/feedback/shards/, which ingest reads")
    judge_feedback: list[ImportSpec] = Field(default_factory=list, description="held-out preference files that "
                                             "train the judge (stage `train-judge`); never train the policy")
    eval_pairs: ImportSpec | None = Field(None, description="held-out pairs the reward model and DPO are measured "
                                          "on (the RM gate reads their accuracy)")
    sft_data: str = Field(description="SFT conversations (OpenAI `messages` or prompt/response rows, JSONL/Parquet)")
    prompts: str = Field(description="train prompts for PPO (JSONL/Parquet rows with `prompt` or `messages`)")
    eval_prompts: str = Field(description="validation prompts: PPO's evaluation and the gate choose on them")
    test_prompts: str | None = Field(None, description="test prompts, answered once by the gate for the report")


class LoopConfig(JobConfig):
    output_dir: str = "runs/quickstart"
    iterations: int = Field(1, ge=1, description="loop iterations; the refresh stages run again in each")
    stages: list[StageName] = Field(DEFAULT_STAGES, min_length=1,
                                    description="stages to run (in pipeline order); each one's inputs must be listed")
    source: SourceSection | None = Field(None, description="the user's model and data (bring your own); unset: the "
                                         "simulated world")
    world: WorldConfig = WorldConfig()
    shards: ShardConfig = ShardConfig()
    model: init_model.ModelSection = init_model.ModelSection()
    pii: PiiSection = PiiSection()
    pseudonyms: PseudonymSection = PseudonymSection()
    residency: ingest.ResidencySection = ingest.ResidencySection()
    consensus: curate.ConsensusSection = curate.ConsensusSection()
    adjudication: curate.AdjudicationSection = curate.AdjudicationSection()
    health: curate.HealthSection = curate.HealthSection()
    pairs: curate.PairsSection = curate.PairsSection()
    active: curate.ActiveSection = curate.ActiveSection()
    phrases: curate.PhrasesSection = curate.PhrasesSection()
    sft: SFTStage = SFTStage()
    reward_model: RewardModelStage = RewardModelStage()
    judge_model: JudgeModelStage = JudgeModelStage()
    dpo: DPOStage = DPOStage()
    sweep: SweepStage = SweepStage()
    ppo: PPOStage = PPOStage()
    gate: GateStage = GateStage()
    canary: CanaryStage = CanaryStage()
    gates: GatesSection = GatesSection()
    watch: WatchSection = WatchSection()
    task_cpus: float = Field(0.5, gt=0, description="Ray CPUs reserved by each shard-writing task")

    @model_validator(mode="before")
    @classmethod
    def _source_stages_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") is not None and "stages" not in data:
            return {**data, "stages": list(SOURCE_STAGES)}
        return data

    @field_validator("stages")
    @classmethod
    def _in_pipeline_order(cls, value: list[str]) -> list[str]:
        listed = set(value)
        return [stage for stage in STAGES if stage in listed]

    @model_validator(mode="after")
    def _inputs_are_listed(self) -> LoopConfig:
        """Every listed stage's input stages are listed too (with a source, its base model stands for init-model).
        A source's run lists no simulation-only stage."""
        listed = set(self.stages)
        if self.source is not None and (simulated := sorted(listed & set(SIMULATION_ONLY))):
            raise ValueError(f"stages: {simulated} belong to simulation; with `source` the base model and files "
                             "replace them: drop them")
        if self.source is None and "import" in listed:
            raise ValueError("stages: stage 'import' reads source.feedback: set `source` or drop 'import'")
        provided = listed | ({"init-model"} if self.source is not None else set())
        for stage in STAGES:
            options = [(need,) if isinstance(need, str) else need for need in REQUIRES.get(stage, ())]
            if missing := [" or ".join(map(repr, each)) for each in options if stage in listed
                           and not provided & set(each)]:
                raise ValueError(f"stages: stage {stage!r} needs stage(s) {', '.join(missing)} (its inputs), which "
                                 f"are not listed; add them or drop {stage!r}")
        if "gate" in listed and self.gate.candidate not in listed:
            raise ValueError(f"gate.candidate is {self.gate.candidate!r}, which is not a listed stage")
        if "train-judge" in listed and self.source is not None and not self.source.judge_feedback:
            raise ValueError("stage 'train-judge' trains on source.judge_feedback, which is empty; add held-out "
                             "preference files there, or drop the stage and give gate.judge_path")
        return self

    @model_validator(mode="after")
    def _judges_are_there(self) -> LoopConfig:
        """The gate and the sweep judge with the judge RM by default: its stage must be listed (or, for the gate, a
        judge of the user's named in gate.judge_path)."""
        judged = "train-judge" in self.stages
        if "gate" in self.stages and self.gate.judge_by == "judge_rm" and not (judged or self.gate.judge_path):
            raise ValueError("gate.judge_by='judge_rm' needs a judge reward model: list stage 'train-judge' or set "
                             "gate.judge_path; or gate.judge_by: oracle in a simulation study")
        if "sweep" in self.stages and self.sweep.judge_by == "judge_rm" and not judged:
            raise ValueError("sweep.judge_by='judge_rm' needs the judge reward model: list stage 'train-judge'; or "
                             "sweep.judge_by: oracle in a simulation study")
        return self
