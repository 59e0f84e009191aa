"""`rlhf-ray cluster status|scale`: what a running Ray cluster holds, and asking its autoscaler for more.

    rlhf-ray cluster status --address HEAD_IP:6379             # nodes, resources, actors, jobs, Serve apps, canary
    rlhf-ray cluster scale  --address HEAD_IP:6379 --gpus 8     # autoscaler request: 8 bundles of {GPU: 1}
    rlhf-ray cluster scale  --config configs/ppo_8b_8gpu.yaml   # exactly the bundles `rlhf-ray ppo` will reserve
    rlhf-ray cluster scale  --clear                             # withdraw the request; idle nodes scale down

`--address` is the GCS address (what `ray start --address` takes); RAY_ADDRESS is used when it is unset, so the
commands also work inside `ray job submit`. On a cluster with token authentication set RAY_AUTH_MODE=token
(and RAY_AUTH_TOKEN_PATH when the token is not in ~/.ray/auth_token). `scale` calls
`ray.autoscaler.sdk.request_resources`, which only a cluster with an autoscaler (`ray up`, KubeRay with
`enableInTreeAutoscaling`) acts on; on a cluster of hand-started nodes it says so and what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from jobs import cluster_state
from jobs.common import add_config_arguments
from rlhf_ray.config.resources import BundleGroup, fit_problems

NAME = "cluster"
HELP = "cluster admin: status (nodes, resources, jobs, Serve, canary) and scale (autoscaler requests)"
WAIT_POLL_S = 2.0


class ClusterError(RuntimeError):
    """The cluster cannot be reached or cannot do what was asked."""


# ---- arguments ----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="nodes, resources, actors, autoscaler, jobs, Serve apps, canary")
    _address(status)
    status.add_argument("--json", action="store_true", help="print only the JSON summary")
    scale = actions.add_parser("scale", help="ask the autoscaler for resources (ray.autoscaler.sdk.request_resources)")
    _address(scale)
    scale.add_argument("--cpus", type=int, help="CPUs the cluster must be able to hold at once")
    scale.add_argument("--gpus", type=int, help="GPUs the cluster must hold, as that many {GPU: 1} bundles")
    scale.add_argument("--bundles", type=_bundles, help='resource shapes as JSON, e.g. \'[{"GPU": 1, "CPU": 8}]\'')
    scale.add_argument("--clear", action="store_true", help="withdraw the standing request")
    scale.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait until the alive nodes hold the request (0: return at once)")
    add_config_arguments(scale)  # --config PPO.yaml [overrides]: the PPO job's own bundles


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="GCS address HEAD_IP:PORT of the cluster (default: RAY_ADDRESS)")


def _bundles(text: str) -> list[dict[str, float]]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}); e.g. '[{{\"GPU\": 1}}]'") from None
    if not isinstance(value, list) or not all(
            isinstance(b, dict) and all(isinstance(v, (int, float)) and v >= 0 for v in b.values()) for b in value):
        raise argparse.ArgumentTypeError(f"expected a list of {{resource: amount ≥ 0}} objects; got {text}")
    return [{str(k): float(v) for k, v in bundle.items()} for bundle in value]


# ---- connection ---------------------------------------------------------------------------------------------
def connect(address: str | None) -> tuple[str, str | None]:
    """Join the cluster as a driver; returns its GCS address and dashboard URL (None when it runs none)."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS")
    if not target:
        raise ClusterError("no cluster given: pass --address HEAD_IP:6379 (the GCS address) or set RAY_ADDRESS")
    if "://" in target and not target.startswith("ray://"):
        raise ClusterError(f"address {target!r} is a URL; give the GCS address HEAD_IP:6379 (what `ray start "
                           f"--address` takes), not the dashboard's http://HEAD_IP:8265")
    try:
        context = ray.init(address=target, namespace="rlhf-ray-admin", logging_level="ERROR", log_to_driver=False)
    except Exception as error:  # ConnectionError, AuthenticationError, RuntimeError: all mean "not reachable"
        raise ClusterError(f"cannot join the Ray cluster at {target}: {type(error).__name__}: {error}\n"
                           f"(with token authentication: RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN_PATH unless the "
                           f"token is in ~/.ray/auth_token)") from None
    dashboard = context.dashboard_url
    return ray.get_runtime_context().gcs_address, f"http://{dashboard}" if dashboard else None


def _soft(read: Callable[[], Any]) -> Any:
    """A part of the status that may be missing (no dashboard, no Serve): its value, or {"error": why}."""
    try:
        return read()
    except Exception as error:  # the status of the rest is still worth printing
        return {"error": f"{type(error).__name__}: {error}"}


# ---- status -------------------------------------------------------------------------------------------------
def status(address: str | None) -> dict[str, Any]:
    import ray

    gcs, dashboard = connect(address)
    views, autoscaler = cluster_state.nodes(gcs)
    summary: dict[str, Any] = {
        "job": NAME, "action": "status", "gcs_address": gcs, "dashboard_url": dashboard, "ray_version": ray.__version__,
        "alive_nodes": sum(view.state == "ALIVE" for view in views), "nodes": cluster_state.as_dicts(views),
        "autoscaler": autoscaler}
    if dashboard is None:
        summary.update(jobs={"error": "the cluster runs no dashboard (Jobs and Serve REST APIs)"}, serve=[], canary={})
        return summary
    summary["jobs"] = _soft(lambda: cluster_state.jobs(dashboard))
    details = _soft(lambda: cluster_state.serve_details(dashboard))
    if "error" in details:
        summary.update(serve=details, canary={})
    else:
        summary.update(serve=cluster_state.serve_apps(details),
                       canary=_soft(lambda: cluster_state.canary_state(details, gcs)))
    return summary


def _amounts(total: dict[str, float], used: dict[str, float]) -> str:
    parts = []
    for key in sorted(total, key=lambda k: (k not in ("CPU", "GPU"), k)):
        if key in ("memory", "object_store_memory"):
            continue
        parts.append(f"{key} {used.get(key, 0.0):g}/{total[key]:g}")
    return ", ".join(parts)


def render_status(summary: dict[str, Any]) -> str:
    lines = [f"cluster {summary['gcs_address']}  dashboard {summary['dashboard_url'] or '(none)'}  "
             f"ray {summary['ray_version']}"]
    scaler = summary["autoscaler"]
    lines.append("autoscaler: " + (f"yes, node types {scaler['node_types']}" if scaler["present"] else
                                   "none (hand-started nodes: add them with `ray start --address`)")
                 + (f"; requested {scaler['requested']}" if scaler["requested"] else "")
                 + (f"; pending {scaler['pending_launches'] or scaler['pending_nodes']}"
                    if scaler["pending_launches"] or scaler["pending_nodes"] else "")
                 + (f"; waiting demands {scaler['pending_demands']}" if scaler["pending_demands"] else ""))
    lines.append(f"nodes: {summary['alive_nodes']} alive of {len(summary['nodes'])}")
    for node in summary["nodes"]:
        actors = ", ".join(f"{name}×{count}" for name, count in node["actors"].items()) or "-"
        lines.append(f"  {node['node_id'][:6]}…{node['node_id'][-6:]}  {node['ip']:<15} {node['state']:<5} "
                     f"{'head' if node['is_head'] else 'worker':<6} {_amounts(node['total'], node['used'])}"
                     f"  actors: {actors}")
    jobs = summary["jobs"]
    if isinstance(jobs, dict):
        lines.append(f"jobs: unavailable ({jobs['error']})")
    else:
        running = [job for job in jobs if job["status"] in ("PENDING", "RUNNING")]
        lines.append(f"jobs: {len(running)} running of {len(jobs)} submitted")
        lines += [f"  {job['submission_id']}  {job['status']:<9} {job['entrypoint'][:90]}" for job in jobs[:10]]
    serve = summary["serve"]
    if isinstance(serve, dict):
        lines.append(f"serve: unavailable ({serve['error']})")
    else:
        lines.append(f"serve: {len(serve)} application(s)")
        for app in serve:
            deployments = ", ".join(f"{name} {dep['status']} {dep['replicas']}"
                                    for name, dep in app["deployments"].items())
            lines.append(f"  {app['name']} {app['status']} route {app['route_prefix']}: {deployments}")
    canary = summary["canary"]
    if canary:
        endpoint = canary.get("endpoint", {})
        answer = endpoint.get("body") if endpoint.get("ok") else endpoint.get("error")
        lines.append(f"canary: app {canary.get('app')} router {canary.get('router_status')} "
                     f"config {canary.get('user_config')}; {endpoint.get('url')}: {answer}")
    else:
        lines.append("canary: none deployed")
    return "\n".join(lines)


# ---- scale --------------------------------------------------------------------------------------------------
def requested(args: argparse.Namespace) -> tuple[int, list[dict[str, float]]]:
    """(num_cpus, bundles) from the flags; `--config` adds the PPO job's bundles, one per actor."""
    bundles = list(args.bundles or []) + [{"GPU": 1.0}] * (args.gpus or 0)
    if args.config:
        from actors.ppo_resources import ppo_groups
        from jobs.ppo import PPOConfig
        from rlhf_ray.config import load_config

        config = load_config(PPOConfig, args.config, args.overrides)
        bundles += [dict(group.bundle) for group in ppo_groups(config) for _ in range(group.count)]
    elif args.overrides:
        raise ClusterError(f"KEY=VALUE overrides {args.overrides} need --config (a PPO config)")
    num_cpus = args.cpus or 0
    if args.clear and (num_cpus or bundles):
        raise ClusterError("--clear withdraws the request; it takes no --cpus, --gpus, --bundles or --config")
    if not args.clear and not (num_cpus or bundles):
        raise ClusterError("nothing to request: give --cpus, --gpus, --bundles or --config (or --clear)")
    return num_cpus, bundles


def _request_groups(num_cpus: int, bundles: list[dict[str, float]]) -> list[BundleGroup]:
    """The request as bundle groups, one per distinct shape (`{GPU: 1} × 8`)."""
    shapes = Counter(tuple(sorted(bundle.items())) for bundle in bundles if bundle)
    if num_cpus:
        shapes[(("CPU", 1.0),)] += num_cpus
    return [BundleGroup("{" + ", ".join(f"{k}: {v:g}" for k, v in shape) + "}", count, dict(shape))
            for shape, count in shapes.items()]


def _shortfall(gcs: str, groups: list[BundleGroup]) -> list[str]:
    views, _ = cluster_state.nodes(gcs)
    return fit_problems(groups, [view.total for view in views if view.state == "ALIVE"]) if groups else []


def scale(args: argparse.Namespace) -> dict[str, Any]:
    from ray.autoscaler.sdk import request_resources

    num_cpus, bundles = requested(args)
    gcs, _ = connect(args.address)
    groups = _request_groups(num_cpus, bundles)
    _, autoscaler = cluster_state.nodes(gcs)
    shortfall = _shortfall(gcs, groups)
    summary: dict[str, Any] = {"job": NAME, "action": "scale", "gcs_address": gcs, "num_cpus": num_cpus,
                               "bundles": bundles, "clear": bool(args.clear), "autoscaler": autoscaler["present"],
                               "fits_now": not shortfall, "shortfall": shortfall}
    if not autoscaler["present"]:
        raise ClusterError(
            "this cluster has no autoscaler: its nodes were started by hand (`ray start`), so nothing would launch "
            "a node for the request. " + (f"What is missing: {'; '.join(shortfall)}. " if shortfall else
                                          "The alive nodes already hold the request. ")
            + "Add nodes with `ray start --address=<GCS> --num-cpus=… --num-gpus=…`, or run the cluster with an "
            "autoscaler: the cluster launcher (`ray up cluster/aws-gpu.yaml`) or KubeRay "
            "(cluster/kuberay/raycluster.yaml, enableInTreeAutoscaling).")
    if args.clear:
        request_resources(num_cpus=0, bundles=[])
    else:
        request_resources(num_cpus=num_cpus or None, bundles=bundles or None)
    deadline = time.monotonic() + args.wait
    while shortfall and not args.clear and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_S)
        shortfall = _shortfall(gcs, groups)
    summary.update(fits_now=not shortfall, shortfall=shortfall,
                   nodes_alive=sum(view.state == "ALIVE" for view in cluster_state.nodes(gcs)[0]))
    return summary


def render_scale(summary: dict[str, Any]) -> str:
    if summary["clear"]:
        return "autoscaler request withdrawn: idle nodes above each type's min_workers scale down after idle_timeout"
    head = f"requested from the autoscaler: {summary['num_cpus']} CPU(s) + {len(summary['bundles'])} bundle(s)"
    if summary["fits_now"]:
        return f"{head}; the alive nodes hold it (the autoscaler keeps this capacity while the request stands)"
    return (f"{head}; still missing: {'; '.join(summary['shortfall'])} — the autoscaler is launching nodes; "
            f"watch with `rlhf-ray cluster status` or `ray status`")


def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    joined_here = not ray.is_initialized()
    try:
        if args.action == "status":
            summary = status(args.address)
            if not args.json:
                print(render_status(summary), file=sys.stderr)
        else:
            summary = scale(args)
            print(render_scale(summary), file=sys.stderr)
    finally:
        if joined_here and ray.is_initialized():
            ray.shutdown()
    print(json.dumps(summary, sort_keys=True, default=str))
    return summary
