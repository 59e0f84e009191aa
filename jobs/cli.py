"""The `rlhf-ray` command: one subcommand per job, the same entry under `ray job submit`.

Job modules import Ray, torch, transformers and the like: seconds each. So the command knows its jobs from a
static table (name, module, help) and imports a job's module only when that subcommand is parsed: `rlhf-ray
--help` imports no job, `rlhf-ray lineage ...` only `jobs.lineage`. tests/test_cli.py keeps the table equal
to each module's NAME and HELP.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Job:
    """A subcommand: its name and help (as its module's NAME and HELP say) and the module implementing it."""

    name: str
    module: str
    help: str


JOBS: tuple[Job, ...] = (
    Job("loop", "jobs.loop",
        "run the RLHF loop end to end, with gates and lineage: simulate → ingest → curate → init-model → sft → "
        "train-rm → train-judge → dpo → [sweep] → ppo → gate → canary, for `iterations` rounds (`stages` picks a "
        "subset; --watch waits for new feedback)"),
    Job("simulate", "jobs.simulate",
        "write feedback shards (Parquet + JSONL, with malformed rows and planted PII) from the synthetic world"),
    Job("ingest", "jobs.ingest",
        "validate, mask, pseudonymize, de-duplicate and version feedback shards with Ray Data"),
    Job("import", "jobs.import_feedback",
        "turn a preference/feedback file (OpenAI, TRL, HH-RLHF, UltraFeedback, Label Studio, Argilla, JSONL logs) "
        "into feedback shards for ingest; bad records quarantined, masked"),
    Job("curate", "jobs.curate",
        "annotation QA (agreement, Dawid–Skene consensus, annotator health, adjudication) → preference pairs"),
    Job("retention", "jobs.retention",
        "delete rows past their retention period from every store (shards, versions, quarantine, pairs, index)"),
    Job("erase", "jobs.erase",
        "erase a subject's rows from every store (shards, dataset versions, quarantine, pairs, index); "
        "log counts, never the subject, in lineage"),
    Job("export", "jobs.export",
        "copy a curated dataset version to a destination, refusing rows the residency policy keeps out"),
    Job("init-model", "jobs.init_model",
        "train a tokenizer offline on the world's corpus (or --corpus files) and save a tiny/small "
        "Llama/Qwen2/GPT-NeoX model (no downloads)"),
    Job("sft", "jobs.sft",
        "supervised fine-tuning on Ray Train (DDP; loss on response tokens) of any local HF checkpoint"),
    Job("train-rm", "jobs.train_rm",
        "train a Bradley–Terry reward model on preference pairs (Ray Train); held-out accuracy, ECE, length bias"),
    Job("dpo", "jobs.dpo",
        "DPO / IPO / hinge preference optimisation of a policy on curated pairs, on Ray Train"),
    Job("ppo", "jobs.ppo",
        "PPO / GRPO / RLOO / REINFORCE++ on separate Ray actors (rollout, reward, reference, critic, learner)"),
    Job("sweep", "jobs.sweep",
        "Ray Tune sweep of PPO settings (KL coefficient, verbosity penalty, ...) judged on validation by a judge RM; "
        "the chosen trial's test-split utility reported once"),
    Job("serve-rm", "jobs.serve_rm",
        "host a reward model on Ray Serve (batched): POST {prompts, responses} → {scores}, for http reward sources"),
    Job("evaluate", "jobs.evaluate",
        "offline gate: candidate vs incumbent policy on validation prompts (non-inferior win-rate by a judge RM, "
        "yield, safety, cost)"),
    Job("regress", "jobs.regress",
        "behavioural regression suite: a policy vs a baseline on a suite's cases (greedy + sampled answers); a case "
        "the baseline passes and the policy fails blocks"),
    Job("canary", "jobs.canary",
        "serve incumbent + canary on Ray Serve (OpenAI API), ramp while guardrails hold, sequential promote/rollback"),
    Job("drift", "jobs.drift",
        "drift between two dataset versions (prompts, signal mix, label balance) and two reward models (probe set)"),
    Job("lineage", "jobs.lineage",
        "what changed, why, with what impact: an artifact's parents, gate and canary events, training-pair sources"),
    Job("report", "jobs.report",
        "write a self-contained HTML report (plots embedded) of a run directory"),
    Job("cluster", "jobs.cluster",
        "cluster admin: status (nodes, resources, jobs, Serve, canary) and scale (autoscaler requests)"),
    Job("workbench", "jobs.workbench",
        "annotation workbench on Ray Serve: label (blind, keyboard), resolve disputes, watch quality in a browser"),
)

# Exception classes as "module:Class", named rather than imported, since importing them would import their job
# modules. An exception can only be raised once its module is loaded, so only loaded modules are looked in.
CONFIG_ERRORS = ("rlhf_ray.config.loader:ConfigError",)
# Errors that mean "this input cannot be processed": reported in one line, no traceback.
USER_ERRORS = (
    "rlhf_ray.models.loading:ModelNotFoundError", "rlhf_ray.lineage.hashing:LineageError",
    "rlhf_ray.dataplane.erasure:ErasureError", "rlhf_ray.lineage.forward:ForwardLineageError",
    "rlhf_ray.dataplane.versions:DatasetVersionError", "rlhf_ray.dataplane.residency:ResidencyViolation",
    "rlhf_ray.annotation.answers:AnswerFileError", "rlhf_ray.inputs.prompts:PromptFileError",
    "actors.ingest:IngestError", "jobs.export:ExportError", "jobs.curate:CurateError", "jobs.sft:SFTError",
    "rlhf_ray.inputs.formats:ImportFormatError",
    "jobs.train_rm:RewardModelError", "jobs.dpo:DPOError", "actors.ppo_config:PPOError", "jobs.sweep:SweepError",
    "jobs.canary:CanaryError", "jobs.cluster:ClusterError", "jobs.evaluate:EvaluateError", "jobs.drift:DriftError",
    "jobs.report:ReportError", "jobs.workbench:WorkbenchError", "jobs.regress:RegressError",
    "rlhf_ray.evaluation.regression:SuiteError",
)
EXIT_USAGE = 2
EXIT_FAILED = 1


class _JobParser(argparse.ArgumentParser):
    """A subcommand's parser: the first time it parses, it imports its job module and adds the job's arguments."""

    def __init__(self, *args: Any, job_module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._job_module = job_module

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._job_module is not None:
            job = importlib.import_module(self._job_module)
            self._job_module = None
            job.add_arguments(self)
            self.set_defaults(entry=job.main)
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-ray",
        description="RLHF as a production loop on Ray. Every job prints a one-line JSON summary last.",
        epilog="On a cluster: ray job submit --working-dir . -- rlhf-ray <job> [args]",
    )
    subparsers = parser.add_subparsers(dest="job", metavar="JOB", required=True, parser_class=_JobParser)
    for job in JOBS:
        subparsers.add_parser(job.name, help=job.help, description=job.help, job_module=job.module)
    return parser


def loaded_classes(names: Iterable[str]) -> tuple[type[BaseException], ...]:
    """The classes among `names` ("module:Class") whose module is loaded."""
    found = []
    for name in names:
        module, _, attribute = name.partition(":")
        cls = getattr(sys.modules.get(module), attribute, None)
        if cls is not None:
            found.append(cls)
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.entry(args)
    except Exception as error:
        if isinstance(error, loaded_classes(CONFIG_ERRORS)):
            print(f"rlhf-ray {args.job}: invalid config:\n{error}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, loaded_classes(USER_ERRORS)):
            print(f"rlhf-ray {args.job}: {error}", file=sys.stderr)
            return EXIT_FAILED
        raise
    return 0 if summary.get("log_ok", True) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
