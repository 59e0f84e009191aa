"""What `rlhf-ray cluster status` reads from a running Ray cluster: nodes with their resources and actors, the
autoscaler's view, submitted jobs, Serve applications and the canary's state.

Everything comes from Ray's own interfaces: the autoscaler SDK (`ray.autoscaler.v2.sdk.get_cluster_status`, what
`ray status` prints), the state API (`ray.util.state`), the Jobs API (`JobSubmissionClient`) and Serve's REST API
(`ServeSubmissionClient`, what `serve status` reads). Each part fails soft: a cluster without Serve, or a
canary that does not answer, still gets a status.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rlhf_ray.config.resources import node_resources

CANARY_ROUTER = "CanaryRouter"  # the canary app's router deployment (`rlhf-ray canary`, actors/serve_router.py)
CANARY_PATH = "/v1/canary"
ADMIN_TOKEN_ENV = "RLHF_RAY_ADMIN_TOKEN"
HTTP_TIMEOUT_S = 5.0
READONLY_NODE_TYPE_PREFIX = "node_"  # the node types Ray's readonly provider invents for `ray start` nodes
AUTOSCALING_STATUS_KEY = "__autoscaling_status"  # ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS


@dataclass
class NodeView:
    node_id: str
    ip: str
    state: str
    is_head: bool
    node_type: str
    total: dict[str, float]
    used: dict[str, float]
    actors: dict[str, int] = field(default_factory=dict)


def nodes(gcs_address: str) -> tuple[list[NodeView], dict[str, Any]]:
    """Every node Ray knows (alive and recently dead) with total and used resources and its live actors by
    class; and the autoscaler's view (whether one runs, pending and failed nodes, requested resources)."""
    from ray.autoscaler.v2.sdk import get_cluster_status
    from ray.util.state import list_actors, list_nodes

    status = get_cluster_status(gcs_address)
    usage = {node.node_id: node for node in [*status.active_nodes, *status.idle_nodes]}
    actors: dict[str, Counter[str]] = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10000, raise_on_missing_output=False):
        actors.setdefault(actor.node_id, Counter())[actor.class_name] += 1
    views = []
    for node in list_nodes(limit=10000, raise_on_missing_output=False):
        seen = usage.get(node.node_id)
        used = {u.resource_name: u.used for u in seen.resource_usage.usage} if seen else {}
        views.append(NodeView(
            node_id=node.node_id, ip=node.node_ip, state=node.state, is_head=bool(node.is_head_node),
            node_type=seen.ray_node_type_name if seen else "", total=node_resources([node.resources_total])[0],
            used=node_resources([used])[0], actors=dict(sorted(actors.get(node.node_id, Counter()).items()))))
    views.sort(key=lambda view: (view.state != "ALIVE", not view.is_head, view.node_id))
    return views, autoscaler_view(status, views)


def legacy_autoscaler_report() -> dict[str, Any]:
    """The status the (v1) autoscaler monitor publishes, what `ray status` prints; {} when none was published."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALING_STATUS_KEY)
    return json.loads(raw) if raw else {}


def autoscaler_view(status: Any, views: list[NodeView]) -> dict[str, Any]:
    """Whether an autoscaler manages the nodes, and what it is doing. Nodes started by hand (`ray start`) get the
    readonly provider's invented `node_<id>` types; a launcher or KubeRay autoscaler names its types (`gpu_worker`,
    `ray.head.default`), in the v2 status or, for the v1 autoscaler, in the report its monitor publishes."""
    legacy = legacy_autoscaler_report()
    report = legacy.get("autoscaler_report") or {}
    types = {view.node_id: view.node_type for view in views if view.state == "ALIVE" and view.node_type}
    types.update(report.get("node_type_mapping") or {})  # the v1 monitor knows the types the v2 view lacks
    present = any(node_type != f"{READONLY_NODE_TYPE_PREFIX}{node_id}" for node_id, node_type in types.items())
    demands = status.resource_demands
    requested = [{"bundle": d.bundle, "count": d.count}
                 for request in demands.cluster_constraint_demand for d in request.bundles_by_count]
    return {
        "present": present,
        "node_types": dict(sorted(Counter(types.values()).items())) if present else {},
        "pending_launches": [{"type": launch.ray_node_type_name, "count": launch.count}
                             for launch in status.pending_launches]
                            or [{"type": name, "count": count}
                                for name, count in (report.get("pending_launches") or {}).items()],
        "pending_nodes": [node.ray_node_type_name for node in status.pending_nodes]
                         or [entry[1] for entry in report.get("pending_nodes") or []],
        "failed_nodes": [node.ray_node_type_name for node in status.failed_nodes]
                        or [entry[1] for entry in report.get("failed_nodes") or []],
        "requested": requested or (legacy.get("load_metrics_report") or {}).get("resource_requests") or [],
        "pending_demands": [{"bundle": d.bundle, "count": d.count}
                            for demand in [*demands.ray_task_actor_demand, *demands.placement_group_demand]
                            for d in demand.bundles_by_count],
    }


def jobs(dashboard_url: str, headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Submitted jobs, newest first (drivers started by hand are left out)."""
    from ray.job_submission import JobSubmissionClient, JobType

    client = JobSubmissionClient(dashboard_url, headers=dict(headers or {}))
    listed = [job for job in client.list_jobs() if job.type == JobType.SUBMISSION]
    listed.sort(key=lambda job: job.start_time or 0, reverse=True)
    return [{"submission_id": job.submission_id, "status": str(job.status.value), "entrypoint": job.entrypoint,
             "start_time": job.start_time, "end_time": job.end_time, "message": job.message} for job in listed]


def serve_details(dashboard_url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard_url, headers=dict(headers or {})).get_serve_details()


def serve_apps(details: Mapping[str, Any]) -> list[dict[str, Any]]:
    apps = []
    for name, app in sorted(details.get("applications", {}).items()):
        deployments = {
            dep_name: {"status": dep.get("status"),
                       "replicas": sum(1 for r in dep.get("replicas", []) if r.get("state") == "RUNNING"),
                       "target": (dep.get("target_num_replicas") or dep.get("deployment_config", {}).get(
                           "num_replicas"))}
            for dep_name, dep in sorted(app.get("deployments", {}).items())}
        apps.append({"name": name, "status": app.get("status"), "route_prefix": app.get("route_prefix"),
                     "message": app.get("message") or "", "deployments": deployments})
    return apps


def canary_state(details: Mapping[str, Any], gcs_address: str, timeout_s: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    """The canary router's state: its runtime `user_config` (canary weight, mode, phase) as Serve deployed it, and
    what the router itself answers on `GET <route_prefix>/v1/canary` (bearer token from RLHF_RAY_ADMIN_TOKEN).
    Empty when no application has a `CanaryRouter` deployment."""
    for name, app in sorted(details.get("applications", {}).items()):
        if CANARY_ROUTER not in app.get("deployments", {}):
            continue
        state: dict[str, Any] = {"app": name, "router_status": app["deployments"][CANARY_ROUTER].get("status")}
        deployed = app.get("deployed_app_config") or {}
        for entry in deployed.get("deployments", []):
            if entry.get("name") == CANARY_ROUTER and entry.get("user_config") is not None:
                state["user_config"] = entry["user_config"]
        state["endpoint"] = _canary_endpoint(details, app, gcs_address, timeout_s)
        return state
    return {}


def _canary_endpoint(details: Mapping[str, Any], app: Mapping[str, Any], gcs_address: str,
                     timeout_s: float) -> dict[str, Any]:
    http = details.get("http_options") or {}
    host = http.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = urlsplit(f"//{gcs_address}").hostname or "127.0.0.1"
    prefix = (app.get("route_prefix") or "/").rstrip("/")
    url = f"http://{host}:{http.get('port', 8000)}{prefix}{CANARY_PATH}"
    request = urllib.request.Request(url)
    if token := os.environ.get(ADMIN_TOKEN_ENV):
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return {"url": url, "ok": True, "body": json.loads(response.read() or b"null")}
    except (OSError, ValueError) as error:  # HTTPError and URLError are OSErrors
        return {"url": url, "ok": False, "error": f"{type(error).__name__}: {error}"}


def as_dicts(views: list[NodeView]) -> list[dict[str, Any]]:
    return [asdict(view) for view in views]
