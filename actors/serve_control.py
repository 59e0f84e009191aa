"""Talking to the Serve controller: deploy an application from its config, change one deployment's
`user_config` in place, read replica ids and handles — and create the catalogue's Prometheus metrics.

Why the declarative (config) path rather than `serve.run`: `serve.run` gives every deployment a fresh random
code version, so redeploying it with a new `user_config` restarts every replica; a config deploy (what
`serve deploy` and KubeRay's RayService do) keeps the code version of an unchanged application and turns a
`user_config` change into a lightweight update — `reconfigure()` on the running replicas, no restart. The
only Python entry to that path is the Serve client's `deploy_apps`, reached through
`ray.serve.context._get_global_client`; it is confined to this module.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from ray.serve import metrics as serve_metrics
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.schema import ServeDeploySchema

from rlhf_ray.telemetry.catalogue import CATALOGUE

DEPLOY_TIMEOUT_S = 300.0
# The Serve controller learns that a replica died from its next health check (Serve's default: every 10 s) and
# only then starts a replacement; meanwhile the handles queue that deployment's calls if it has no other replica.
# A check is one trivial actor call, so checking the router and policy replicas every 2 s costs next to nothing
# and shortens such an outage by up to 8 s.
HEALTH_CHECK_PERIOD_S = 2.0
_POLL_S = 0.5


def _client() -> Any:
    from ray.serve.context import _get_global_client

    return _get_global_client()


def deployed_app_configs() -> dict[str, dict[str, Any]]:
    """The config of every application deployed from a config, by name."""
    details = _client().get_serve_details()
    return {name: copy.deepcopy(app["deployed_app_config"])
            for name, app in details.get("applications", {}).items() if app.get("deployed_app_config")}


def apply_app_config(app_config: dict[str, Any], wait: bool = True) -> None:
    """Deploy (or update) one application, keeping every other config-deployed application as it is
    (a config deploy replaces the whole set, so the others are sent along unchanged)."""
    apps = deployed_app_configs()
    apps[app_config["name"]] = app_config
    _client().deploy_apps(ServeDeploySchema(applications=list(apps.values())))
    if wait:
        wait_running(app_config["name"])


def wait_running(app_name: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """Block until the application is RUNNING; fail with Serve's message if it fails to deploy."""
    deadline = time.monotonic() + timeout_s
    status = "NOT_STARTED"
    while time.monotonic() < deadline:
        app = _client().get_serve_details().get("applications", {}).get(app_name)
        status = app["status"] if app else "NOT_STARTED"
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"Serve application {app_name!r} is {status}: {app.get('message', '')}")
        time.sleep(_POLL_S)
    raise TimeoutError(f"Serve application {app_name!r} not RUNNING after {timeout_s:.0f} s (last: {status})")


def set_user_config(app_name: str, deployment: str, user_config: dict[str, Any]) -> None:
    """Lightweight update: the deployment's replicas get `reconfigure(user_config)`, none restarts."""
    app = deployed_app_configs().get(app_name)
    if app is None:
        raise RuntimeError(f"Serve application {app_name!r} was not deployed from a config; cannot reconfigure")
    entries = app.setdefault("deployments", [])
    entry = next((d for d in entries if d["name"] == deployment), None)
    if entry is None:
        entries.append({"name": deployment, "user_config": user_config})
    else:
        entry["user_config"] = user_config
    apply_app_config(app, wait=False)


def replica_ids(app_name: str, deployment: str) -> list[str]:
    """Actor ids of the deployment's running replicas (a restart changes them)."""
    app = _client().get_serve_details()["applications"][app_name]
    return sorted(r["actor_id"] for r in app["deployments"][deployment]["replicas"] if r["state"] == "RUNNING")


def replica_actors(app_name: str, deployment: str) -> dict[str, Any]:
    """Actor id → actor handle of the deployment's running replicas (e.g. for a fault drill that kills one;
    Serve replaces a dead replica with a new actor, so a new id)."""
    import ray

    app = _client().get_serve_details()["applications"][app_name]
    return {r["actor_id"]: ray.get_actor(r["actor_name"], namespace=SERVE_NAMESPACE)
            for r in app["deployments"][deployment]["replicas"] if r["state"] == "RUNNING"}


def serving_url(route_prefix: str) -> str:
    """Where an application under `route_prefix` answers: the running Serve's own host and port (a Serve that
    was already running keeps them, whatever a job configured), loopback when it listens on every interface."""
    http = _client().get_serve_details()["http_options"]
    host = "127.0.0.1" if http["host"] in ("0.0.0.0", "::", "") else http["host"]
    return f"http://{host}:{int(http['port'])}{route_prefix.rstrip('/')}"


def serve_metric(name: str) -> Any:
    """The `ray.serve.metrics` object of a catalogue entry (Serve adds deployment / replica / app tags)."""
    spec = CATALOGUE[name]
    if spec.kind == "counter":
        return serve_metrics.Counter(spec.name, spec.description, tag_keys=spec.tag_keys or None)
    if spec.kind == "gauge":
        return serve_metrics.Gauge(spec.name, spec.description, tag_keys=spec.tag_keys or None)
    return serve_metrics.Histogram(spec.name, spec.description, boundaries=list(spec.boundaries),
                                   tag_keys=spec.tag_keys or None)
