"""The canary Serve application: builder, its Serve config, and deploying it.

    CanaryRouter (HTTP ingress, user_config = weights)   ──► incumbent: PolicyDeployment
                 │                                       └─► canary:    PolicyDeployment
                 └── reports / admin ──► CanaryMonitor (guardrails, sequential test, audit, lineage)

`canary_app` is a Serve application builder, so the same application deploys from Python
(`deploy_canary`), from a Serve config file (`serve deploy`) or from a KubeRay RayService manifest:
`serve_app_config` writes the config all three take.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from actors.serve_control import apply_app_config, serving_url
from actors.serve_monitor import ROUTER_DEPLOYMENT, CanaryMonitor, initial_router_state
from actors.serve_policy import PolicyDeployment
from actors.serve_router import CanaryRouter
from rlhf_ray.serving.config import LOOPBACK, CanaryAppArgs, PolicySection

IMPORT_PATH = "actors.serve_app:canary_app"


def policy_options(section: PolicySection) -> dict[str, Any]:
    """Serve options of a policy deployment: resources, concurrency and a fixed or autoscaled replica count."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus},
        "max_ongoing_requests": section.max_ongoing_requests,
    }
    if section.autoscaling is not None:
        options["autoscaling_config"] = section.autoscaling.model_dump()
    else:
        options["num_replicas"] = section.num_replicas
    return options


def canary_app(args: dict[str, Any]) -> Application:
    """Serve application builder (import path `actors.serve_app:canary_app`)."""
    parsed = CanaryAppArgs.model_validate(args)
    plain = parsed.model_dump(mode="json")
    policies = {variant: PolicyDeployment.options(name=variant, **policy_options(getattr(parsed, variant)))
                .bind(variant, plain[variant], plain["generation"]) for variant in ("incumbent", "canary")}
    router = parsed.router
    monitor = CanaryMonitor.options(ray_actor_options={"num_cpus": router.monitor_num_cpus}).bind(plain)
    return CanaryRouter.options(
        name=ROUTER_DEPLOYMENT, num_replicas=router.num_replicas, max_ongoing_requests=router.max_ongoing_requests,
        ray_actor_options={"num_cpus": router.num_cpus},
    ).bind(policies["incumbent"], policies["canary"], monitor, plain)


def policy_app(args: dict[str, Any]) -> Application:
    """Serve application builder of one policy alone (import path `actors.serve_app:policy_app`, args
    `{"variant": name, "policy": PolicySection}`): HTTP straight to the deployment, no router."""
    policy = PolicySection.model_validate(args["policy"])
    variant = str(args.get("variant", "policy"))
    return PolicyDeployment.options(name=variant, **policy_options(policy)).bind(variant, policy.model_dump())


def serve_app_config(args: CanaryAppArgs, name: str = "canary", route_prefix: str = "/") -> dict[str, Any]:
    """The application's entry of a Serve config (`applications:` list of `serve deploy` / RayService)."""
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "deployments": [{"name": ROUTER_DEPLOYMENT, "user_config": initial_router_state(args).model_dump()}],
    }


def deploy_canary(args: CanaryAppArgs, name: str = "canary", route_prefix: str = "/", host: str = LOOPBACK,
                  port: int = 8000) -> str:
    """Start Serve (HTTP on `host:port`, loopback by default) if it is not running, deploy the application
    and wait until it serves; returns its base URL. A running Serve keeps its own host and port."""
    serve.start(http_options={"host": host, "port": port})
    apply_app_config(serve_app_config(args, name, route_prefix))
    return serving_url(route_prefix)
