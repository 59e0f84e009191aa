"""`rlhf-ray canary`: serve an incumbent and a canary policy behind one OpenAI-compatible router on Ray Serve,
ramp the canary's share while its guardrails hold, and let the sequential test promote or roll it back.

In simulation mode the world's users send the traffic and give thumbs from the hidden utility, until the
test decides. With `traffic.replay` the job replays a file of chat requests through the same HTTP API, and a
scripted user (`traffic.feedback`, a `package.module:function`) judges the answers: no simulator needed. Otherwise
the job ramps on a timer and watches real traffic. Either way the decision is made
inside the serving system (the canary monitor), which keeps guarding after the job has gone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import requests
from pydantic import Field, model_validator

from actors.runtime import serving_process
from jobs.common import add_config_arguments, resolve_config
from jobs.regress import RegressConfig, SuiteRunSection, regress
from rlhf_ray.config import JobConfig, StrictModel
from rlhf_ray.dataplane.shard_sets import write_shard_manifest
from rlhf_ray.inputs.world import WorldConfig
from rlhf_ray.lineage import LineageRegistry
from rlhf_ray.lineage.jobs import lineage_for, lineage_root, register_input_checkpoint
from rlhf_ray.serving.admin import load_admin_token
from rlhf_ray.serving.config import LOOPBACK, CanaryAppArgs, PolicySection, ServingSections
from rlhf_ray.serving.replay import ReplayTraffic, read_traffic
from rlhf_ray.serving.variants import VariantFile, apply_variant, is_variant, load_variant, register_variant
from rlhf_ray.storage import StorageRoot, digest_files
from rlhf_ray.telemetry.sink import sink_for

NAME = "canary"
HELP = "serve incumbent + canary on Ray Serve (OpenAI API), ramp while guardrails hold, sequential promote/rollback"
APP_SECTIONS = tuple(ServingSections.model_fields)
HTTP_TIMEOUT_S = 120.0
# Feedback the router refuses for what a user did (not for a fault of the driver): counted, not raised.
REFUSED_FEEDBACK = {409: "duplicate", 429: "rate_limited"}
SUMMARY_FILE = "canary.json"


class CanaryError(ValueError):
    """The canary cannot start: a missing checkpoint, key or port."""


class ServeSection(StrictModel):
    host: str = Field(LOOPBACK, description="HTTP bind address of Serve (loopback unless exposed on purpose)")
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = Field("canary", min_length=1)
    route_prefix: str = Field("/", pattern=r"^/")
    keep_running: bool = Field(False, description="leave the application serving when the job ends")


class RampSection(StrictModel):
    steps: tuple[float, ...] = Field((0.25, 0.5), description="canary weights after the initial one, in order")
    requests_per_step: int = Field(100, ge=1, description="simulation: requests at a weight before the next step")
    step_interval_s: float = Field(300.0, gt=0, description="live traffic: seconds at a weight before the next")
    max_duration_s: float = Field(3600.0, gt=0, description="live traffic: stop watching after this long")

    @model_validator(mode="after")
    def _increasing(self) -> RampSection:
        if any(not 0 < w <= 1 for w in self.steps) or list(self.steps) != sorted(self.steps):
            raise ValueError(f"ramp.steps must be increasing weights in (0, 1]; got {list(self.steps)}")
        return self


class DrivenTraffic(StrictModel):
    """How the job drives traffic itself (simulated users or a replayed file)."""

    max_requests: int = Field(3000, ge=1, description="stop (undecided) after this many requests")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    max_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, ge=0)


class SimulationSection(DrivenTraffic):
    enabled: bool = Field(True, description="drive traffic from the world's simulated users")
    feedback_rate: float = Field(1.0, gt=0, le=1, description="share of answers the users judge")
    num_prompts: int | None = Field(None, ge=1, description="draw from the first N training prompts (all: null)")


class TrafficSection(DrivenTraffic):
    replay: str | None = Field(None, description="JSONL file of chat requests to replay through the HTTP API, "
                               "again and again (rows with `messages` or `prompt`, optional `user`); replaces the "
                               "simulation")
    feedback: str | None = Field(None, description="the scripted user judging each replayed answer: "
                                 "'package.module:function(request, response, meta)' returning True/False (thumbs), "
                                 "an int 1–5 (Likert), a feedback body dict, or None")

    @model_validator(mode="after")
    def _feedback_needs_replay(self) -> TrafficSection:
        if self.feedback and not self.replay:
            raise ValueError(f"traffic.feedback={self.feedback!r} judges replayed answers; set traffic.replay FILE")
        return self


class CanaryConfig(JobConfig, ServingSections):
    """The job's settings: its own sections below, plus every serving section (incumbent, canary, generation,
    router, guardrails, sequential, feedback, admin, pseudonyms) of `ServingSections`."""

    incumbent_path: str | None = Field(None, description="checkpoint serving most traffic (sets incumbent.model_path)")
    canary_path: str | None = Field(None, description="checkpoint under test (sets canary.model_path)")
    incumbent_variant: str | None = Field(None, description="variant file (YAML: model_path, system_prompt, "
                                          "sampling) of the incumbent; sets those fields of `incumbent`")
    canary_variant: str | None = Field(None, description="variant file of the canary; sets those fields of `canary`")
    output_dir: str = "runs/canary"
    world: WorldConfig = WorldConfig()
    serve: ServeSection = ServeSection()
    ramp: RampSection = RampSection()
    simulation: SimulationSection = SimulationSection()
    traffic: TrafficSection = TrafficSection()
    regression_suite: str | None = Field(None, description="a behavioural regression suite (suites/*.yaml): the "
                                         "canary runs it against the incumbent first and refuses to deploy on a "
                                         "blocking regression (null: off)")
    regression: SuiteRunSection = Field(SuiteRunSection(), description="how the regression suite runs")


    @model_validator(mode="before")
    @classmethod
    def _variant_files(cls, data: Any) -> Any:
        """A variant file's checkpoint, system prompt and sampling go into its policy section (read once here, so
        every later step sees the variant)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("incumbent", "canary"):
            file = data.get(f"{name}_variant")
            if not file:
                continue
            variant = load_variant(str(file))
            path = data.get(f"{name}_path")
            if variant.model_path and path and os.path.abspath(path) != os.path.abspath(variant.model_path):
                raise ValueError(f"{name}_path={path!r} and {name}_variant {file!r} (model_path "
                                 f"{variant.model_path!r}) name two checkpoints; expected one of them")
            data[name] = apply_variant(PolicySection.model_validate(data.get(name) or {}), variant)
        return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--incumbent", help="incumbent checkpoint directory (sets incumbent_path)")
    parser.add_argument("--canary", help="canary checkpoint directory (sets canary_path)")
    parser.add_argument("--incumbent-variant", help="incumbent variant file: YAML with model_path, system_prompt "
                        "(or system_prompt_file) and sampling (sets incumbent_variant)")
    parser.add_argument("--canary-variant", help="canary variant file (sets canary_variant)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"incumbent": "incumbent_path", "canary": "canary_path", "incumbent_variant": "incumbent_variant",
             "canary_variant": "canary_variant", "out": "output_dir"}
    return run(resolve_config(CanaryConfig, args, flags))


# ---------------------------------------------------------------------------------------------- deployment


def _policy(config: CanaryConfig, variant: str, registry: LineageRegistry) -> PolicySection:
    """The variant's section with its lineage id: its checkpoint's, or, with a system prompt or sampling settings,
    a `variant` artifact's whose parents are the checkpoint and the system prompt (`register_variant`)."""
    section: PolicySection = getattr(config, variant)
    path = getattr(config, f"{variant}_path") or section.model_path
    if section.backend == "echo":
        section = section.model_copy(update={"policy_id": section.policy_id or f"echo-{variant}"})
    elif not path:
        raise CanaryError(f"{variant}_path is not set: pass --{variant} DIR (a policy checkpoint directory) or "
                          f"--{variant}-variant FILE with a model_path")
    elif not os.path.isdir(path):
        raise CanaryError(f"{variant}_path {path!r} is not a directory; expected a policy checkpoint directory")
    else:
        path = os.path.abspath(path)
        section = section.model_copy(update={
            "model_path": path, "policy_id": section.policy_id or register_input_checkpoint(registry, path)})
    if not is_variant(section):
        return section
    file = getattr(config, f"{variant}_variant")
    name = load_variant(file).name if file else f"{config.serve.app_name}-{variant}"
    return section.model_copy(update={"policy_id": register_variant(registry, section, name or variant)})


def _check_key(config: CanaryConfig) -> None:
    """Load the pseudonym key here, so a missing or short key fails the job naming its settings, not a replica."""
    keys = config.pseudonyms
    if keys.create_missing_key_file():
        print(f"[canary] created a new pseudonym key file {keys.key_file} (mode 0600)", file=sys.stderr)
    try:
        keys.pseudonymizer()
    except ValueError as error:
        raise CanaryError(str(error)) from None


def _operator_token(args: CanaryAppArgs) -> tuple[str, CanaryAppArgs]:
    """The admin token the job's own traffic uses to vouch for the users it drives (so their feedback counts) and
    to see which variant answered: the configured one, else a new one in `<state_dir>/admin.token` (mode 0600),
    which the deployment is then configured with."""
    try:
        token = load_admin_token(args.admin.token_env, args.admin.token_file)
    except ValueError as error:
        raise CanaryError(str(error)) from None
    if token is not None:
        return token, args
    if "://" in args.state_dir:
        raise CanaryError(f"admin token: none configured and state_dir {args.state_dir!r} is not local; set "
                          f"{args.admin.token_env} or admin.token_file for the job's driven traffic")
    path = Path(args.state_dir) / "admin.token"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    return token, args.model_copy(update={"admin": args.admin.model_copy(update={"token_file": str(path)})})


def app_args(config: CanaryConfig, registry: LineageRegistry) -> CanaryAppArgs:
    """The Serve application's arguments, with both policies and the deployment registered in lineage."""
    sections: dict[str, Any] = {name: getattr(config, name) for name in APP_SECTIONS}
    sections["incumbent"] = _policy(config, "incumbent", registry)
    sections["canary"] = _policy(config, "canary", registry)
    out = config.output_dir.rstrip("/")
    state_dir = os.path.abspath(f"{out}/state") if "://" not in out else f"{out}/state"
    args = CanaryAppArgs(state_dir=state_dir, lineage_root=lineage_root(config), **sections)
    parents = tuple(dict.fromkeys(p for p in (args.incumbent.policy_id, args.canary.policy_id)
                                  if p and registry.has(p)))
    definition = args.model_dump(mode="json", exclude={"deployment_id", "state_dir", "lineage_root"})
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    record = registry.register("deployment", config.serve.app_name, digest, parents=parents,
                               config={"canary_weight": config.router.initial_weight, "mode": config.router.mode},
                               uri=state_dir)
    return args.model_copy(update={"deployment_id": record.id})


# ---------------------------------------------------------------------------------------------- traffic


class CanaryClient:
    """The job's view of the running canary: HTTP for traffic and status, the monitor handle for ramping."""

    def __init__(self, base_url: str, app_name: str, concurrency: int, operator_token: str | None = None) -> None:
        from ray import serve

        self.base_url = base_url
        self.monitor = serve.get_deployment_handle("CanaryMonitor", app_name)
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.session = requests.Session()
        # the job is the trusted front end of the users it drives: the admin token vouches for the user it names
        self.headers = {"Authorization": f"Bearer {operator_token}"} if operator_token else {}

    def _as(self, user: str | None) -> dict[str, str]:
        return {**self.headers, "x-user-id": user} if user and self.headers else self.headers

    def chat(self, body: dict[str, Any]) -> dict[str, Any] | None:
        reply = self.session.post(f"{self.base_url}/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT_S,
                                  headers=self._as(body.get("user")))
        return reply.json() if reply.status_code == 200 else None

    def feedback(self, body: dict[str, Any], reply: dict[str, Any], user: str | None) -> str | None:
        """Feedback on `reply` from the user it was served to, proven by the answer's feedback token; why the
        router refused it when it did so for a user's own doing (a repeat, over the rate limit), else None. Any
        other refusal is a fault of this driver and raises."""
        answer = self.session.post(f"{self.base_url}/v1/feedback",
                                   json={**body, "feedback_token": reply["feedback_token"]},
                                   headers=self._as(user), timeout=HTTP_TIMEOUT_S)
        if answer.status_code in REFUSED_FEEDBACK:
            return REFUSED_FEEDBACK[answer.status_code]
        answer.raise_for_status()
        return None

    def status(self) -> dict[str, Any]:
        reply = self.session.get(f"{self.base_url}/v1/canary", timeout=HTTP_TIMEOUT_S)
        reply.raise_for_status()
        return reply.json()

    def ramp_to(self, weight: float) -> dict[str, Any]:
        return self.monitor.set_weight.remote(weight, None, f"ramp step to {weight:g}", source="ramp").result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.session.close()


def _healthy(status: dict[str, Any]) -> bool:
    return status["phase"] == "running" and not status["guardrails"]["breaches"]


class TrafficSource(Protocol):
    """Where driven traffic comes from: `SimulatedTraffic` (the world's users) or `ReplayTraffic` (a file and a
    scripted user)."""

    def next_request(self) -> Any: ...
    def chat_body(self, request: Any) -> dict[str, Any]: ...
    def judge_reply(self, request: Any, reply: dict[str, Any]) -> dict[str, Any] | None: ...
    def figures(self) -> dict[str, Any]: ...


def simulated_traffic(config: CanaryConfig) -> TrafficSource:
    from rlhf_ray.serving.simulation import SimulatedTraffic, SimulatedUsers

    sim = config.simulation
    return SimulatedTraffic(SimulatedUsers(config.world, config.seed, sim.num_prompts), config.router.model_name,
                            sim.max_tokens, sim.temperature, sim.feedback_rate)


def replay_traffic(config: CanaryConfig) -> ReplayTraffic:
    """The traffic file and the scripted user, checked before anything is deployed."""
    from rlhf_ray.rewards.spec import load_function

    traffic = config.traffic
    try:
        rows = read_traffic(traffic.replay or "")
        judge = load_function(traffic.feedback) if traffic.feedback else None
    except ValueError as error:
        raise CanaryError(f"traffic: {error}") from None
    return ReplayTraffic(rows, judge, config.router.model_name, traffic.max_tokens, traffic.temperature)


def drive(config: CanaryConfig, client: CanaryClient, sink: Any, source: TrafficSource,
          settings: DrivenTraffic) -> dict[str, Any]:
    """Send the source's requests and its users' feedback through the HTTP API, stepping the canary's weight up
    every `ramp.requests_per_step` requests while healthy, until the canary is promoted or rolled back or
    `settings.max_requests` are sent."""
    max_requests, concurrency = settings.max_requests, settings.concurrency
    steps, at_weight, sent = list(config.ramp.steps), 0, 0
    status, refused = client.status(), Counter()
    while sent < max_requests and status["phase"] == "running":
        batch = [source.next_request() for _ in range(concurrency)]
        bodies = [source.chat_body(request) for request in batch]
        replies = list(client.pool.map(client.chat, bodies))
        for request, body, reply in zip(batch, bodies, replies, strict=True):
            feedback = source.judge_reply(request, reply) if reply is not None else None
            if feedback is not None and (why := client.feedback(feedback, reply, body.get("user"))):
                refused[why] += 1
        sent += len(batch)
        at_weight += len(batch)
        status = client.status()
        if steps and at_weight >= config.ramp.requests_per_step and _healthy(status):
            status, at_weight = client.ramp_to(steps.pop(0)), 0
        if (sent // concurrency) % 10 == 0 or status["phase"] != "running":  # a progress line, not a flood
            sink.log({"requests": sent, "canary_weight": status["canary_weight"],
                      "judged_incumbent": status["variants"]["incumbent"]["judged"],
                      "judged_canary": status["variants"]["canary"]["judged"]}, step=sent)
    return {"requests_sent": sent, "feedback_refused": dict(refused), **source.figures()}


def watch(config: CanaryConfig, client: CanaryClient) -> dict[str, Any]:
    """Live traffic: step the weight up on a timer while the guardrails hold; return once decided or timed out."""
    started, steps = time.monotonic(), list(config.ramp.steps)
    last_step, status = started, client.status()
    while status["phase"] == "running" and time.monotonic() - started < config.ramp.max_duration_s:
        time.sleep(min(5.0, config.ramp.step_interval_s))
        status = client.status()
        if steps and time.monotonic() - last_step >= config.ramp.step_interval_s and _healthy(status):
            status, last_step = client.ramp_to(steps.pop(0)), time.monotonic()
    return {"watched_s": round(time.monotonic() - started, 1)}


def _decision_figures(status: dict[str, Any]) -> dict[str, Any]:
    variants, last = status["variants"], status["sequential"]["last"] or {}
    decision = status["decisions"][-1] if status["decisions"] else None
    judged = {v: variants[v]["judged"] for v in variants}
    return {
        "decision": decision["action"] if decision else "undecided",
        "decision_source": decision["source"] if decision else None,
        "reason": decision["reason"] if decision else last.get("reason"),
        "final_canary_weight": status["canary_weight"],
        "judged_at_decision": (decision["figures"].get("sequential", {}).get("trials") if decision else None),
        "judged": judged,
        "accept_rate": {v: variants[v]["accept_rate"] for v in variants},
        "requests": {v: variants[v]["requests"] for v in variants},
        "errors": {v: variants[v]["errors"] for v in variants},
        "p_value": last.get("p_value"),
        "fixed_horizon_total": status["sequential"]["fixed_horizon_total"],
    }


def register_captured_feedback(args: CanaryAppArgs, registry: LineageRegistry) -> str | None:
    """The feedback shards this deployment captured, as a `feedback` artifact whose parent is the deployment,
    with a shard manifest beside them: a dataset that ingests them names it as a parent, so lineage runs from
    the deployment through its users' feedback to the next reward model. None if nothing was captured."""
    root = StorageRoot.from_uri(args.feedback_dir)
    files = root.list_files(suffixes=(".jsonl",))
    if not files:
        return None
    record = registry.register("feedback", f"captured-by-{args.deployment_id}", digest_files(root, files),
                               parents=(args.deployment_id,), metrics={"shards": len(files)}, uri=args.feedback_dir)
    write_shard_manifest(root, record.id, args.lineage_root, files, deployment_id=args.deployment_id)
    return record.id


def check_regression_suite(config: CanaryConfig) -> dict[str, Any] | None:
    """The precondition of a canary with `regression_suite`: the canary against the incumbent on the suite (`rlhf-ray
    regress`), each as served (checkpoint, system prompt, sampling); a case the incumbent passes and the canary
    fails, unless an accepted change, refuses the deployment. None without a suite."""
    if not config.regression_suite:
        return None
    paths = {v: getattr(config, f"{v}_path") or getattr(config, v).model_path for v in ("incumbent", "canary")}
    if missing := [v for v, path in paths.items() if not path]:
        raise CanaryError(f"regression_suite={config.regression_suite!r} needs both checkpoints; no path for {missing}")
    result = regress(RegressConfig(
        policy_path=paths["canary"], baseline_path=paths["incumbent"], suite=config.regression_suite,
        policy_variant=VariantFile(system_prompt=config.canary.system_prompt, sampling=config.canary.sampling),
        baseline_variant=VariantFile(system_prompt=config.incumbent.system_prompt, sampling=config.incumbent.sampling),
        output_dir=f"{config.output_dir.rstrip('/')}/regression", seed=config.seed, ray=config.ray,
        wandb=config.wandb.model_copy(update={"mode": "disabled"}),
        lineage=config.lineage.model_copy(update={"root": lineage_root(config)}),  # the canary's own registry
        **config.regression.model_dump()))
    if result["verdict"] != "pass":
        raise CanaryError(f"regression suite {config.regression_suite!r}: cases {result['blocking']} pass on the "
                          f"incumbent and fail on the canary; not deploying (report {result['report']})")
    return {key: result[key] for key in ("verdict", "regressions", "accepted", "report")}


def run(config: CanaryConfig) -> dict[str, Any]:
    from ray import serve

    from actors.serve_app import deploy_canary

    started = time.perf_counter()
    replay = replay_traffic(config) if config.traffic.replay else None
    _check_key(config)
    driven: DrivenTraffic = config.traffic if replay else config.simulation
    sink = sink_for(NAME, config)
    # SIGINT / SIGTERM: the application is deleted (its router replicas flush their feedback journals) and a Ray
    # this job started is shut down; a cluster it joined keeps running
    with serving_process(config.ray):
        regression = check_regression_suite(config)  # before anything is deployed or registered in lineage
        args = app_args(config, lineage_for(config))
        operator = None
        if replay is not None or config.simulation.enabled:
            operator, args = _operator_token(args)
        base_url = deploy_canary(args, config.serve.app_name, config.serve.route_prefix, config.serve.host,
                                 config.serve.port)
        print(f"[canary] serving on {base_url} (deployment {args.deployment_id})", file=sys.stderr)
        client = CanaryClient(base_url, config.serve.app_name, driven.concurrency, operator)
        try:
            if replay is not None:
                traffic = drive(config, client, sink, replay, config.traffic)
            elif config.simulation.enabled:
                traffic = drive(config, client, sink, simulated_traffic(config), config.simulation)
            else:
                traffic = watch(config, client)
            status = client.status()
        finally:
            client.close()
            if not config.serve.keep_running:
                serve.delete(config.serve.app_name)
    captured = register_captured_feedback(args, LineageRegistry(args.lineage_root))
    figures = _decision_figures(status)
    # a fixed-horizon test at the canary's final share would have needed this many judged answers
    figures["decided_before_fixed_horizon"] = (figures["judged_at_decision"] is not None
                                              and figures["judged_at_decision"] < figures["fixed_horizon_total"])
    summary = {
        **figures, **traffic, "deployment_id": args.deployment_id,
        "policies": {"incumbent": args.incumbent.policy_id, "canary": args.canary.policy_id},
        "base_url": base_url, "feedback_dir": args.feedback_dir, "feedback_id": captured,
        "audit_dir": f"{args.state_dir}/audit", "regression": regression,
        "lineage_root": args.lineage_root, "timing/canary": round(time.perf_counter() - started, 2),
    }
    # the decision beside the audit trail, for `rlhf-ray report` and for people
    StorageRoot.from_uri(config.output_dir).write_bytes_atomic(
        json.dumps(summary, indent=2, sort_keys=True, default=str).encode(), SUMMARY_FILE)
    return sink.close(summary)
