"""The loop's stages: each one's settings section in the loop config, the job config it runs with (paths wired
from the stages before it), and how it runs — always through its job's own code path.

Base stages run in the first iteration only (simulate, init-model, sft, train-judge, dpo); refresh stages run in
every iteration (ingest, curate, train-rm, [sweep], ppo, gate, canary), under `<out>/iter-<k>/` from the second on,
PPO starting from the incumbent policy and the canary serving it next to the new candidate. The optional
sweep (`rlhf-ray sweep`, off unless listed in `stages`) chooses PPO settings on the iteration's reward model;
PPO then trains with the chosen settings and records the sweep as a lineage parent of its policy.

The judge (`train-judge`) is a reward model trained on the simulate stage's judge set — annotator pairs on
validation prompts, through ingest and curate in `<out>/judge/` — with train-rm's code. It judges the gate and the
sweep on validation, and scores PPO's validation answers; it never trains a policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from actors import ingest
from jobs import (
    canary,
    curate,
    dpo,
    evaluate,
    import_feedback,
    init_model,
    ppo,
    regress,
    sft,
    simulate,
    sweep,
    sweep_config,
    train_rm,
)
from jobs.loop_config import ImportSpec, LoopConfig
from rlhf_ray.config import LineageConfig, StrictModel
from rlhf_ray.inputs import PromptFilesSection
from rlhf_ray.lineage.hashing import canonical_json, sha256_hex
from rlhf_ray.storage import StorageRoot

# The canary of iteration k writes its captured feedback to <feedback shards>/canary-iter-<k>/.
CANARY_FEEDBACK_PREFIX = "canary-iter-"


class JudgeJobs(StrictModel):
    """The train-judge stage's job configs: ingest and curate of the judge set (PII masking, quarantine and
    consensus apply as to the feedback), then train-rm on its pairs."""

    output_dir: str
    ingest: ingest.IngestConfig
    curate: curate.CurateConfig
    reward_model: train_rm.TrainRMConfig


class ImportJobs(StrictModel):
    """The import stage's job configs (bring your own): the user's feedback files into the feedback shards, and
    the judge files into the judge set, each through `rlhf-ray import` (masked quarantine, pseudonymized ids)."""

    output_dir: str
    feedback: list[import_feedback.ImportConfig]
    judge: list[import_feedback.ImportConfig]


class Stages(NamedTuple):
    simulate: simulate.SimulateConfig
    imports: ImportJobs | None  # built only with a source
    ingest: ingest.IngestConfig
    curate: curate.CurateConfig
    model: init_model.InitModelConfig
    sft: sft.SFTConfig
    reward_model: train_rm.TrainRMConfig
    judge: JudgeJobs
    dpo: dpo.DPOConfig
    sweep: sweep_config.SweepConfig | None  # built only when listed: its checks need the PPO settings it will sweep
    ppo: ppo.PPOConfig
    gate: evaluate.EvaluateConfig | None  # built only when listed: it needs its judge (train-judge's, or a path)
    canary: canary.CanaryConfig
    regression: regress.RegressConfig | None = None  # the gate's regression suite, when gate.regression_suite is set


def feedback_shards(out: str) -> str:
    """The folder of feedback shards every iteration's ingest reads (and each canary writes a sub-folder of)."""
    return f"{out}/feedback/shards"


def iteration_dir(out: str, iteration: int) -> str:
    return out if iteration == 1 else f"{out}/iter-{iteration}"


def judge_set_dir(out: str) -> str:
    """The judge set: simulate's annotator pairs on validation prompts, or the user's judge files."""
    return f"{out}/feedback/{simulate.JUDGE_FOLDER.rstrip('/')}"


def judge_model_dir(out: str) -> str:
    """Where the train-judge stage exports its reward model."""
    return f"{out}/judge/reward_model/reward_model"


def _data_jobs(config: LoopConfig, common: dict[str, Any], pseudonyms: Any, shards: str, gold: str, dataset: str,
               curated: str, phrases: curate.PhrasesSection) -> tuple[ingest.IngestConfig, curate.CurateConfig]:
    """Ingest of `shards` into `dataset` and curate of that into `curated` (gold items from `gold`, which only the
    simulated world has), with the loop's data-plane and annotation-QA sections: the feedback and the judge set go
    the same way."""
    return (ingest.IngestConfig(input=shards, output_dir=dataset, pii=config.pii, pseudonyms=pseudonyms,
                                residency=config.residency, task_cpus=config.task_cpus, **common),
            curate.CurateConfig(input=dataset, gold=None if config.source else f"{gold}/gold_items.jsonl",
                                output_dir=curated,
                                consensus=config.consensus, adjudication=config.adjudication, health=config.health,
                                pairs=config.pairs, active=config.active, phrases=phrases, **common))


def _judge_jobs(config: LoopConfig, common: dict[str, Any], pseudonyms: Any, sft_model: str) -> JudgeJobs:
    """The judge set (`<out>/feedback/judge/`, written by simulate or by the import stage) through ingest and curate
    into `<out>/judge/`, then a reward model on the SFT backbone with the reward model's settings (epochs from
    `judge_model`)."""
    out = config.output_dir.rstrip("/")
    here, judge_set = f"{out}/judge", judge_set_dir(out)
    settings = config.reward_model.model_dump()
    if config.judge_model.epochs is not None:
        settings["train"]["epochs"] = config.judge_model.epochs
    # the canned-phrase list is the policy's penalty: a judge set learns none
    ingested, curated = _data_jobs(config, common, pseudonyms, f"{judge_set}/shards", f"{judge_set}/gold",
                                   f"{here}/dataset", f"{here}/curated", curate.PhrasesSection(enabled=False))
    return JudgeJobs(
        output_dir=here,
        ingest=ingested,
        curate=curated,
        reward_model=train_rm.TrainRMConfig(model_path=sft_model, pairs=f"{here}/curated",
                                            output_dir=f"{here}/reward_model", world=config.world, role="judge",
                                            **_user_model(config), **_eval_pairs(config), **settings, **common))


def _import_jobs(config: LoopConfig, common: dict[str, Any], pseudonyms: Any) -> ImportJobs | None:
    """Each of the source's feedback files into its own folder of the feedback shards, each judge file into the
    judge set's shards; None without a source."""
    if config.source is None:
        return None
    out = config.output_dir.rstrip("/")

    def one(spec: ImportSpec, folder: str) -> import_feedback.ImportConfig:
        return import_feedback.ImportConfig(format=spec.format, input=spec.input, field_map=spec.map,
                                            confidence=spec.confidence, region=spec.region, output_dir=folder,
                                            pii=config.pii, pseudonyms=pseudonyms, **common)

    return ImportJobs(
        output_dir=f"{out}/feedback",
        feedback=[one(spec, f"{feedback_shards(out)}/import-{k}-{spec.format}")
                  for k, spec in enumerate(config.source.feedback)],
        judge=[one(spec, f"{judge_set_dir(out)}/shards/import-{k}-{spec.format}")
               for k, spec in enumerate(config.source.judge_feedback) if "train-judge" in config.stages])


def _user_model(config: LoopConfig) -> dict[str, Any]:
    """The source's model options (chat template, LoRA) for every job that loads the policy or its backbone."""
    return {"model": config.source.model} if config.source else {}


def _eval_pairs(config: LoopConfig) -> dict[str, Any]:
    """The source's held-out pairs, as train-rm's and dpo's eval_pairs settings."""
    spec = config.source.eval_pairs if config.source else None
    return {} if spec is None else {"eval_pairs": spec.input, "eval_format": spec.format, "eval_field_map": spec.map}


def run_imports(jobs: ImportJobs) -> Figures:
    """Every import, with the row counts summed over the files."""
    started = time.perf_counter()
    results = [import_feedback.import_feedback(job) for job in (*jobs.feedback, *jobs.judge)]
    counts = {key: sum(result[key] for result in results) for key in ("input_rows", "written_rows",
                                                                        "quarantined_rows")}
    return {**counts, "files": [job.input for job in (*jobs.feedback, *jobs.judge)],
            "shards_ids": [result["shards_id"] for result in results],
            "timing/import": round(time.perf_counter() - started, 2)}


def stage_configs(config: LoopConfig, iteration: int = 1, incumbent: str | None = None) -> Stages:
    """Each stage gets its job's own config, under the loop's output dir and one shared lineage root.

    `incumbent` is the policy serving now (None: the SFT model): PPO starts from it, the gate and the canary
    compare the new candidate with it.
    """
    out = config.output_dir.rstrip("/")
    here = iteration_dir(out, iteration)
    common = {
        "seed": config.seed,
        "ray": config.ray,
        "wandb": config.wandb.model_copy(update={"mode": "disabled"}),
        "lineage": LineageConfig(root=config.lineage.root or f"{out}/lineage"),
    }
    pseudonyms = config.pseudonyms
    if pseudonyms.key_file is None:
        pseudonyms = pseudonyms.model_copy(update={"key_file": f"{out}/secrets/pseudonym.key"})
    model = init_model.InitModelConfig(output_dir=out, out=f"{out}/model", model=config.model, world=config.world,
                                       **common)
    sft_model = f"{out}/sft/model"  # where `sft` exports its model
    serving = incumbent or sft_model
    curated = f"{here}/curated"
    reward_model = f"{here}/reward_model/reward_model"  # where `train-rm` exports its model
    candidate = candidate_dir(config, here)
    judged = "train-judge" in config.stages
    source, user_model = config.source, _user_model(config)
    ppo_settings = config.ppo.model_dump()
    ppo_settings["reward"]["model_path"] = reward_model
    if judged:  # scores PPO's (and each sweep trial's) validation answers: the sweep's quality
        ppo_settings["judge_model_path"] = judge_model_dir(out)
    if source:
        ppo_settings["prompts"] = PromptFilesSection(train=source.prompts, validation=source.eval_prompts,
                                                     test=source.test_prompts)
    reward = ppo_settings["reward"]
    if config.phrases.enabled and not reward["canned_phrases"] and not reward["canned_phrases_file"]:
        reward["canned_phrases_file"] = f"{curated}/phrases"  # no list of the user's: the one curate learns
    ppo_config = ppo.PPOConfig(
        model_path=serving, reference_path=sft_model, output_dir=f"{here}/ppo", world=config.world,
        resume=StorageRoot.from_uri(f"{here}/ppo").exists("checkpoints", "latest"),  # after a crash
        **user_model, **ppo_settings, **common)
    sweep_stage = None
    if "sweep" in config.stages:
        trials = config.sweep.model_dump(exclude={"trial_iterations"})
        trial_ppo = ppo_config.model_copy(update={"iterations": config.sweep.trial_iterations or ppo_config.iterations,
                                                  "resume": False})
        sweep_stage = sweep_config.SweepConfig(ppo=trial_ppo, output_dir=f"{here}/sweep", **trials, **common)
    gate_stage = None
    if "gate" in config.stages:
        gate_settings = config.gate.model_dump(exclude={"candidate", "regression_suite", "regression"})
        if gate_settings["judge_by"] == "judge_rm" and not gate_settings["judge_path"]:
            gate_settings["judge_path"] = judge_model_dir(out)  # LoopConfig checked that train-judge is listed
        if source:
            gate_settings.update(prompt_file=source.eval_prompts, test_prompt_file=source.test_prompts)
        gate_stage = evaluate.EvaluateConfig(candidate_path=candidate, incumbent_path=serving,
                                             output_dir=f"{here}/gate", world=config.world, **gate_settings, **common)
    regression_stage = None
    if gate_stage is not None and config.gate.regression_suite:
        suite_settings = config.gate.regression.model_dump()
        suite_settings["judge_path"] = suite_settings["judge_path"] or gate_stage.judge_path  # the gate's judge
        regression_stage = regress.RegressConfig(policy_path=candidate, baseline_path=serving,
                                                 suite=config.gate.regression_suite,
                                                 output_dir=f"{here}/gate/regression", **suite_settings, **common)
    canary_settings = config.canary.model_dump()
    canary_settings["feedback"]["dir"] = f"{feedback_shards(out)}/{CANARY_FEEDBACK_PREFIX}{iteration}"
    canary_settings["pseudonyms"] = {"key_env": pseudonyms.key_env, "key_file": pseudonyms.key_file}
    base_model = source.base_model if source else model.model_dir
    sft_settings = config.sft.model_dump()
    if source:
        sft_settings["data"] = source.sft_data
    return Stages(
        simulate.SimulateConfig(output_dir=f"{out}/feedback", world=config.world, shards=config.shards,
                                task_cpus=config.task_cpus, **common),
        _import_jobs(config, common, pseudonyms),
        *_data_jobs(config, common, pseudonyms, feedback_shards(out), f"{out}/feedback/gold", f"{out}/dataset", curated,
                    config.phrases),
        model,
        sft.SFTConfig(model_path=base_model, output_dir=f"{out}/sft", world=config.world, **user_model,
                      **sft_settings, **common),
        train_rm.TrainRMConfig(model_path=sft_model, pairs=curated, output_dir=f"{here}/reward_model",
                               world=config.world, **user_model, **_eval_pairs(config),
                               **config.reward_model.model_dump(), **common),
        _judge_jobs(config, common, pseudonyms, sft_model),
        dpo.DPOConfig(model_path=sft_model, reference_path=sft_model, pairs=curated, output_dir=f"{out}/dpo",
                      world=config.world, **user_model, **_eval_pairs(config), **config.dpo.model_dump(), **common),
        sweep_stage,
        ppo_config,
        gate_stage,
        canary.CanaryConfig(incumbent_path=serving, canary_path=candidate, output_dir=f"{here}/canary",
                            world=config.world, **canary_settings, **common),
        regression=regression_stage,
    )


def candidate_dir(config: LoopConfig, here: str) -> str:
    """Where the gate's candidate policy is exported: this iteration's PPO policy, or the DPO policy."""
    out = config.output_dir.rstrip("/")
    return f"{out}/dpo/policy" if config.gate.candidate == "dpo" else f"{here}/ppo/policy"


Figures = dict[str, Any]


def with_sweep_choice(config: ppo.PPOConfig, swept: Figures | None) -> ppo.PPOConfig:
    """The PPO config with the sweep's chosen settings applied and the sweep as a lineage parent of the policy;
    unchanged without a sweep. A sweep that chose nothing (every trial flagged or failed) stops here."""
    if swept is None:
        return config
    if not swept.get("chosen_params"):
        raise sweep.SweepError(f"the sweep chose no settings ({swept.get('selection')}); see "
                               f"{swept.get('trials_table')}")
    chosen = ppo.PPOConfig.model_validate(sweep_config.with_params(config.model_dump(mode="json"),
                                                                   swept["chosen_params"]))
    return chosen.model_copy(update={"parent_ids": [*config.parent_ids, swept["sweep_id"]]})


def train_judge(jobs: JudgeJobs) -> Figures:
    """The judge set → dataset version → pairs → judge reward model, each through its job's own code path."""
    started = time.perf_counter()
    data = ingest.ingest(jobs.ingest)
    pairs = curate.run_curate(jobs.curate)
    model = train_rm.train_reward_model(jobs.reward_model)
    heldout = {key: value for key, value in model.items() if key.startswith("heldout_")}
    return {"judge_model_dir": model["reward_model_dir"], "judge_model_id": model["reward_model_id"],
            "judge_dataset_id": data["dataset_id"], "judge_quarantined_rows": data["quarantined_rows"],
            "judge_pairs_id": pairs["pairs_id"], "judge_pairs": pairs["pairs"],
            "judge_fleiss_kappa": pairs["fleiss_kappa"], "judge_epochs": model["epochs"],
            **{f"judge_{key}": value for key, value in heldout.items()},
            "timing/train_judge": round(time.perf_counter() - started, 2)}


def run_gate(stages: Stages) -> Figures:
    """The offline gate: evaluate's win-rate gate, then the regression suite on the candidate vs the incumbent when
    `gate.regression_suite` is set (`regression_*` figures; `jobs.loop.check_gates` fails the gate on a blocking
    regression, as on a failed check)."""
    figures = evaluate.evaluate(stages.gate)
    if stages.regression is None:
        return figures
    suite = regress.regress(stages.regression)
    return {**figures, "regression_verdict": suite["verdict"], "regression_blocking": suite["blocking"],
            "regression_accepted": suite["accepted"], "regression_report": suite["report"],
            "regression_event": suite["regression_event"]}


def stage_extras(stages: Stages, name: str) -> dict[str, str]:
    """What a stage reads that its job config does not show, for its fingerprint: the gate's regression suite (its
    settings and the suite file's content), so a changed suite re-runs the gate. Empty for every other stage."""
    if name != "gate" or stages.regression is None:
        return {}
    suite = Path(stages.regression.suite or "")
    return {"regression.config": sha256_hex(canonical_json(stages.regression.model_dump(mode="json"))),
            "regression.suite": sha256_hex(suite.read_bytes()) if suite.is_file() else "missing"}


class Stage(NamedTuple):
    """How the loop runs one stage: where it writes, its job's entry, and how its figures are named in the
    summary (`prefix` on every key except those starting with one of `keep`, so the stages never collide)."""

    where: Callable[[Stages], str]
    run: Callable[[Stages, dict[str, Figures]], Figures]
    prefix: str = ""
    keep: tuple[str, ...] = ()


RUNNERS: dict[str, Stage] = {
    "simulate": Stage(lambda s: s.simulate.output_dir, lambda s, done: simulate.generate(s.simulate)),
    "import": Stage(lambda s: s.imports.output_dir, lambda s, done: run_imports(s.imports), "import_",
                    ("timing/",)),
    "ingest": Stage(lambda s: s.ingest.output_dir, lambda s, done: ingest.ingest(s.ingest)),
    "curate": Stage(lambda s: s.curate.output_dir, lambda s, done: curate.run_curate(s.curate)),
    "init-model": Stage(lambda s: s.model.model_dir,
                        lambda s, done: init_model.build(s.model, parents=(done["ingest"]["dataset_id"],))),
    "sft": Stage(lambda s: s.sft.output_dir, lambda s, done: sft.train(s.sft), "sft_", ("sft_", "timing/")),
    "train-rm": Stage(lambda s: s.reward_model.output_dir,
                      lambda s, done: train_rm.train_reward_model(s.reward_model), "rm_", ("reward_model_", "timing/")),
    "train-judge": Stage(lambda s: s.judge.output_dir, lambda s, done: train_judge(s.judge)),
    "dpo": Stage(lambda s: s.dpo.output_dir, lambda s, done: dpo.train_dpo(s.dpo), "dpo_", ("timing/",)),
    "sweep": Stage(lambda s: s.sweep.output_dir, lambda s, done: sweep.run(s.sweep), "sweep_", ("sweep_", "timing/")),
    "ppo": Stage(lambda s: s.ppo.output_dir, lambda s, done: ppo.run(with_sweep_choice(s.ppo, done.get("sweep"))),
                 "ppo_", ("timing/",)),
    "gate": Stage(lambda s: s.gate.output_dir, lambda s, done: run_gate(s), "gate_", ("timing/",)),
    "canary": Stage(lambda s: s.canary.output_dir, lambda s, done: canary.run(s.canary), "canary_", ("timing/",)),
}

# The summary keys of the artifacts the stages register, in pipeline order.
ARTIFACT_KEYS = ("shards_id", "dataset_id", "pairs_id", "model_id", "sft_model_id", "reward_model_id",
                 "judge_model_id", "dpo_policy_id", "sweep_id", "ppo_policy_id")
