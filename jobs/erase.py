"""`rlhf-ray erase --subject PSEUDONYM --reason TEXT`: remove one person's rows from every store, for good.

Raw, canary and workbench shards, every dataset version (superseded by a version without the rows, whose files
are then deleted), quarantine, pair sets and the forward index; models downstream get a `trained_on_erased_data`
mark and the lineage chain an `erasure` event with counts per store — never the subject (`rlhf_ray.dataplane.
erasure`). A re-run after a kill finishes the journaled plan; a re-run after success finds nothing to erase.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from jobs.common import add_config_arguments, resolve_config
from jobs.curate import pairs_version
from rlhf_ray.config import JobConfig
from rlhf_ray.dataplane.erasure import ErasureError, discover_stores, erase_rows, scrub_reason
from rlhf_ray.dataplane.selectors import SubjectSelector
from rlhf_ray.governance import PiiMasker, PseudonymSection
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.forward import ForwardIndex, find_pseudonymizer, subject_aliases
from rlhf_ray.reporting import write_report
from rlhf_ray.telemetry.sink import MetricsSink

NAME = "erase"
HELP = ("erase a subject's rows from every store (shards, dataset versions, quarantine, pairs, index); "
        "log counts, never the subject, in lineage")


class EraseConfig(JobConfig):
    subject: str | None = Field(None, description="the subject's pseudonym (e.g. usr_0123456789abcdef)")
    user: str | None = Field(None, description="or the raw user/annotator id, pseudonymized with the key")
    reason: str = Field("", description="why (e.g. the request's ticket); PII is masked before it is logged")
    pseudonyms: PseudonymSection = PseudonymSection()
    workbench_dirs: list[str] = Field(default_factory=list, description="workbench output dirs (their shards/)")
    shard_dirs: list[str] = Field(default_factory=list, description="more feedback shard folders to scrub")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", help="the subject's pseudonym (sets subject)")
    parser.add_argument("--user", help="a raw user/annotator id, hashed with the pseudonym key (sets user)")
    parser.add_argument("--reason", help="why the data is erased (sets reason; PII masked in the log)")
    parser.add_argument("--root", help="lineage root of the run (sets lineage.root)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(EraseConfig, args, {"subject": "subject", "user": "user", "reason": "reason",
                                                  "root": "lineage.root"}))


def _subject(config: EraseConfig, root: str) -> tuple[list[str], Any]:
    if (config.subject is None) == (config.user is None):
        raise ErasureError("erase needs exactly one of --subject PSEUDONYM or --user RAW_ID; "
                           f"got {'both' if config.subject else 'neither'}")
    if not config.reason.strip():
        raise ErasureError("reason is empty: pass --reason TEXT (e.g. the request's ticket number); it is logged")
    # Raw shards hold raw ids: only the key can tell which are the subject's, so it is required.
    try:
        pseudonyms = find_pseudonymizer(root, config.pseudonyms.key_file, config.pseudonyms.key_env, required=True)
    except ValueError as error:
        raise ErasureError(str(error)) from None
    subject = config.subject if config.subject is not None else pseudonyms.pseudonym(config.user)
    return subject_aliases(subject, pseudonyms), pseudonyms


def signals_of(root: str, aliases: list[str]) -> set[str]:
    """The subject's signal ids the forward index knows (rows found by actor add to these while planning)."""
    found = ForwardIndex(root).lookup(aliases)
    return {s for table in found.values() for s in table.column("signal_id").drop_null().to_pylist()}


def erase(config: EraseConfig) -> dict[str, Any]:
    root = config.lineage.root
    if not root:
        raise ErasureError("lineage root is not set: pass --root RUN/lineage (where the run's lineage lives)")
    if not Path(root).is_dir() and "://" not in root:
        raise ErasureError(f"--root {root!r} is not a directory; expected a lineage root such as runs/quickstart/"
                           "lineage")
    aliases, pseudonyms = _subject(config, root)
    selector = SubjectSelector(aliases, signals_of(root, aliases), pseudonyms)
    stores = discover_stores(LineageRegistry(root), config.workbench_dirs, config.shard_dirs)
    reason = scrub_reason(config.reason, selector, lambda text: PiiMasker().mask(text)[0])
    print(f"[erase] scrubbing {len(stores.shards)} shard folders, {len(stores.datasets)} dataset roots, "
          f"{len(stores.curated)} curate folders", file=sys.stderr)
    result = erase_rows(root, stores, selector, "erasure", reason, pairs_version, pseudonyms)
    report = Path(root).parent / "report.html"
    if result.get("erasure_id") and report.is_file():
        write_report(report.parent)  # the run's page is rebuilt from what is left
        result["report_rebuilt"] = str(report)
    return {**result, "lineage_root": root}


def run(config: EraseConfig) -> dict[str, Any]:
    # No wandb run: it would keep the command line (the subject) in its metadata, a log nobody erases from.
    private = {"subject", "user", "reason"}
    sink = MetricsSink(NAME, config.wandb.model_copy(update={"mode": "disabled"}), config.output_dir,
                       run_config=config.model_dump(mode="json", exclude=private))
    figures = erase(config)
    sink.log({f"removed/{k}": v for k, v in figures["removed"].items()})
    return sink.close(figures)
