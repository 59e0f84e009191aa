"""`rlhf-ray workbench`: the annotation workbench on Ray Serve, over a curate output and a feedback directory.

    rlhf-ray workbench --curated runs/quickstart/curated --out runs/workbench   (sign-in tokens: auth.*)
    rlhf-ray workbench --demo --out runs/workbench-demo                         (inputs from the simulated world)

Reads curate's adjudication queue, active-learning picks and annotator health plus the dataset version they
came from, and serves the labeling, review, dashboards and guidelines pages and their JSON API on loopback.
Writes under `output_dir`::

    shards/wb-<first>-<last>.jsonl     accepted labels and resolutions as contract rows: `rlhf-ray ingest --input`
    adjudication/resolved.jsonl        resolved disputes {item_id, answer}: curate's `adjudication.resolved`
    disputes/threads.jsonl             dispute threads (labels, rationales, comments, resolution) for guidelines
    state/queue.json, state/events.jsonl   the task queue and the event log: a restart resumes exactly

Tokens are read here (env var or file), reduced to sha256 digests and keyed pseudonyms, and never printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pydantic import Field

from actors.runtime import ensure_ray, serving_process
from jobs.common import add_config_arguments, resolve_config
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.governance import PseudonymSection
from rlhf_ray.storage import StorageRoot
from rlhf_ray.telemetry.sink import sink_for
from rlhf_ray.workbench.auth import load_identities
from rlhf_ray.workbench.config import QueueSection, SessionSection, ShardSection, UiSection, WorkbenchArgs
from rlhf_ray.workbench.demo import write_demo_inputs
from rlhf_ray.workbench.inputs import InputError, dataset_root_from_lineage, load_inputs, read_report

NAME = "workbench"
HELP = "annotation workbench on Ray Serve: label (blind, keyboard), resolve disputes, watch quality in a browser"
POLL_S = 1.0


class WorkbenchError(ValueError):
    """The workbench cannot start: missing inputs, tokens or key; the message says which setting to fix."""


class AuthSection(StrictModel):
    tokens_env: str = Field("RLHF_RAY_WORKBENCH_TOKENS", description="environment variable holding the token table")
    tokens_file: str | None = Field(None, description="file holding the token table (JSON/YAML, mode 0600), used "
                                                      "when the env var is unset")


class ServeSection(StrictModel):
    host: str = Field("127.0.0.1", description="bind address; loopback unless exposed on purpose")
    port: int = Field(8010, ge=1, le=65535, description="HTTP port of Serve (a running Serve keeps its own)")
    app_name: str = "workbench"
    route_prefix: str = Field("/workbench", pattern=r"^/[A-Za-z0-9/_-]*$")
    num_cpus: float = Field(0.2, gt=0, description="CPUs of the one replica (I/O-bound)")
    run_for_s: float | None = Field(None, ge=0, description="stop after this many seconds; null: until Ctrl-C")


class WorkbenchConfig(JobConfig):
    curated: str | None = Field(None, description="output_dir of `rlhf-ray curate`")
    dataset: str | None = Field(None, description="output_dir of `rlhf-ray ingest` (default: from lineage)")
    gold: str | None = Field(None, description="gold answer key JSONL {item_id, answer}")
    demo: bool = Field(False, description="no curate output: build one from the simulated world under output_dir")
    output_dir: str = "runs/workbench"
    guidelines_dir: str = Field("guidelines", description="versioned Markdown: <dir>/<family>/<version>.md")
    queue: QueueSection = QueueSection()
    session: SessionSection = SessionSection()
    shards: ShardSection = ShardSection()
    ui: UiSection = UiSection()
    auth: AuthSection = AuthSection()
    pseudonyms: PseudonymSection = PseudonymSection()
    serve: ServeSection = ServeSection()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curated", help="curate output directory (sets curated)")
    parser.add_argument("--dataset", help="ingest output directory (sets dataset)")
    parser.add_argument("--gold", help="gold answer key JSONL (sets gold)")
    parser.add_argument("--out", help="feedback output directory (sets output_dir)")
    parser.add_argument("--port", type=int, help="HTTP port (sets serve.port)")
    parser.add_argument("--demo", action="store_const", const="true", help="inputs from the simulated world")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    return run(resolve_config(WorkbenchConfig, args, {"curated": "curated", "dataset": "dataset", "gold": "gold",
                                                      "out": "output_dir", "port": "serve.port", "demo": "demo"}))


def workbench_args(config: WorkbenchConfig) -> WorkbenchArgs:
    """Check the inputs and read the tokens here, before any Ray work: the replica gets digests, no secrets."""
    if config.pseudonyms.create_missing_key_file():
        print(f"[workbench] created a new pseudonym key file {config.pseudonyms.key_file} (mode 0600)", file=sys.stderr)
    try:
        pseudonymizer = config.pseudonyms.pseudonymizer()
        identities = load_identities(config.auth.tokens_env, config.auth.tokens_file, pseudonymizer)
    except ValueError as error:
        raise WorkbenchError(str(error)) from None
    if "://" in config.output_dir:
        raise WorkbenchError(f"output_dir {config.output_dir!r} must be a local directory: it holds the event log")
    curated, dataset, gold = config.curated, config.dataset, config.gold
    if curated is None and config.demo:
        demo = write_demo_inputs(StorageRoot.from_uri(config.output_dir).join("demo-inputs"), pseudonymizer,
                                 seed=config.seed)
        curated, dataset, gold = demo.curated, demo.dataset, gold or demo.gold
    if curated is None:
        raise WorkbenchError("curated is not set: pass --curated DIR (the output_dir of `rlhf-ray curate`) or --demo")
    try:
        if dataset is None:
            dataset = dataset_root_from_lineage(read_report(curated))
        load_inputs(curated, dataset, gold)  # fail here, with the path, not inside a Serve replica
    except (InputError, ValueError) as error:
        raise WorkbenchError(str(error)) from None
    return WorkbenchArgs(curated=curated, dataset=dataset, gold=gold, output_dir=config.output_dir,
                         guidelines_dir=config.guidelines_dir, seed=config.seed, queue=config.queue,
                         session=config.session, shards=config.shards, ui=config.ui, identities=identities)


def deploy(config: WorkbenchConfig, args: WorkbenchArgs | None = None) -> tuple[str, Any]:
    """Start Serve on the configured host/port if it is not running, deploy the workbench, return (url, handle).
    A Serve already running keeps its own host and port, and the url says where it listens."""
    from ray import serve

    from actors.serve_control import serving_url
    from actors.workbench import workbench_app

    args = args or workbench_args(config)
    ensure_ray(config.ray)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    handle = serve.run(workbench_app(args, config.serve.num_cpus), name=config.serve.app_name,
                       route_prefix=config.serve.route_prefix)
    return serving_url(config.serve.route_prefix), handle


def stop(config: WorkbenchConfig, handle: Any) -> dict[str, Any]:
    """Write waiting rows, take the final figures, remove the application (Serve itself keeps running)."""
    from ray import serve

    handle.flush.remote().result()
    summary = handle.summary.remote().result()
    serve.delete(config.serve.app_name)
    return summary


def run(config: WorkbenchConfig) -> dict[str, Any]:
    started = time.perf_counter()
    args = workbench_args(config)
    sink = sink_for(NAME, config)
    # SIGTERM stops as Ctrl-C does, so waiting rows reach a shard; a Ray started here is shut down after
    with serving_process(config.ray):
        url, handle = deploy(config, args)
        print(f"[workbench] serving {url}/ — sign in with a token; pages: /label /review /dashboard /guidelines; "
              "Ctrl-C to stop", file=sys.stderr)
        deadline = None if config.serve.run_for_s is None else time.monotonic() + config.serve.run_for_s
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))
        except KeyboardInterrupt:
            print("[workbench] stopping", file=sys.stderr)
        summary = stop(config, handle)
    figures = {**summary, "url": url, "curated": args.curated, "dataset": args.dataset,
               "annotators": sum(i.role == "annotator" for i in args.identities.values()),
               "reviewers": sum(i.role == "reviewer" for i in args.identities.values()),
               "timing/workbench": round(time.perf_counter() - started, 2)}
    sink.log({k: v for k, v in figures.items() if isinstance(v, int | float)})
    return sink.close(figures)
