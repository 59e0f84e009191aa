"""cluster/: the launcher config passes Ray's own validation (what `ray up` runs before it calls the cloud), the
KubeRay manifests match the v1 CRD fields (cluster/kuberay/kuberay-v1.schema.json) with Kubernetes-valid pod
templates, every version agrees with the installed Ray, and what the manifests run is real: the RayJob's
entrypoint parses with `rlhf-ray`'s own parser, its PPO config fits the cluster at full scale, and the RayService's
Serve config is a valid canary application."""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from actors.ppo_resources import ppo_groups
from jobs.cli import build_parser
from jobs.ppo import PPOConfig
from rlhf_ray.config import load_config
from rlhf_ray.config.resources import BundleGroup, fit_problems

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
MANIFESTS = ("raycluster.yaml", "rayjob-ppo.yaml", "rayservice-canary.yaml")
IMAGE_ROOT = "/home/ray/rlhf-ray/"  # where cluster/Dockerfile puts the project


def _manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[doc["kind"]]()


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((KUBERAY / "kuberay-v1.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc))


def _quantity(value: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "8", 2) in cores."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _node_resources(group: dict[str, Any]) -> dict[str, float]:
    """The Ray resources KubeRay gives a pod of this group: rayStartParams first, else the container limits."""
    params = group["rayStartParams"]
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    resources = {"CPU": float(params["num-cpus"]) if "num-cpus" in params else _quantity(limits["cpu"])}
    gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    if gpus:
        resources["GPU"] = gpus
    resources.update(json.loads(params.get("resources", "{}").strip('"').replace('\\"', '"')))
    return resources


def _full_scale_nodes(cluster: dict[str, Any]) -> list[dict[str, float]]:
    nodes = [_node_resources(cluster["headGroupSpec"])]
    for group in cluster.get("workerGroupSpecs", []):
        nodes += [_node_resources(group)] * group["maxReplicas"]
    return nodes


# ---- KubeRay --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_matches_the_v1_crd_fields(name: str) -> None:
    assert _schema_errors(_manifest(name)) == []


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_pod_templates_are_valid_kubernetes(name: str) -> None:
    cluster = _cluster_spec(_manifest(name))
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    for group_name, group in groups:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group_name},
                        "template": group["template"]}
        kubernetes_validate.validate(pod_template, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_clusters_autoscale_within_their_bounds(name: str) -> None:
    cluster = _cluster_spec(_manifest(name))
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group["groupName"]
    assert any(group["maxReplicas"] > group["minReplicas"] for group in cluster["workerGroupSpecs"])
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in head["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_the_crd_schema_names_what_is_wrong() -> None:
    doc = _manifest("raycluster.yaml")
    typo = copy.deepcopy(doc)
    typo["spec"]["enableIntreeAutoscaling"] = typo["spec"].pop("enableInTreeAutoscaling")
    missing = copy.deepcopy(doc)
    del missing["spec"]["workerGroupSpecs"][1]["groupName"]
    wrong = copy.deepcopy(doc)
    wrong["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    wrong["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "six"
    assert any("'enableIntreeAutoscaling' was unexpected" in e for e in _schema_errors(typo))
    assert any(e.startswith("spec.workerGroupSpecs.1") and "'groupName' is a required property" in e
               for e in _schema_errors(missing))
    errors = _schema_errors(wrong)
    assert any(e.startswith("spec.autoscalerOptions.upscalingMode") for e in errors)
    assert any(e.startswith("spec.workerGroupSpecs.0.maxReplicas") and "'six' is not of type 'integer'" in e
               for e in errors)
    job = _manifest("rayjob-ppo.yaml")
    del job["spec"]["rayClusterSpec"]
    assert _schema_errors(job)  # neither a cluster to create nor one to select


def test_every_version_and_image_agrees_with_the_installed_ray() -> None:
    version = ray.__version__
    images = set()
    for name in MANIFESTS:
        cluster = _cluster_spec(_manifest(name))
        assert cluster["rayVersion"] == version, name
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            images |= {container["image"] for container in group["template"]["spec"]["containers"]}
    assert images == {"rlhf-ray:0.1.0"}, "one project image across the manifests"
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(version)}-py311-gpu$", dockerfile, re.M)
    launcher = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    assert launcher["docker"]["image"] == f"rayproject/ray:{version}-py311-gpu"
    pyproject = (ROOT / "pyproject.toml").read_text()
    major_minor = ".".join(version.split(".")[:2])
    assert f"ray[data,train,tune,serve]>={major_minor}" in pyproject


def test_rayjob_runs_real_commands_whose_ppo_config_fits_its_cluster() -> None:
    doc = _manifest("rayjob-ppo.yaml")
    spec = doc["spec"]
    from ray.runtime_env import RuntimeEnv

    runtime_env = RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    assert runtime_env["env_vars"]["WANDB_MODE"] == "offline"
    commands = [shlex.split(part) for part in spec["entrypoint"].split("&&")]
    assert [command[:2] for command in commands] == [["rlhf-ray", "cluster"], ["rlhf-ray", "ppo"]]
    parser = build_parser()
    parsed = [parser.parse_args(command[1:]) for command in commands]
    scale, ppo = parsed
    assert scale.action == "scale" and scale.config == ppo.config and scale.wait > 0
    assert ppo.config.startswith(IMAGE_ROOT), "the config is read from the image's copy of the project"
    config = load_config(PPOConfig, ROOT / ppo.config.removeprefix(IMAGE_ROOT),
                         [f"model_path={ppo.model}", f"reward.model_path={ppo.reward_model}", f"output_dir={ppo.out}"])
    nodes = _full_scale_nodes(spec["rayClusterSpec"])
    assert fit_problems(ppo_groups(config), nodes) == []
    # … and not with the GPU group at zero: the entrypoint's `cluster scale --wait` is what brings the node
    head_only = _full_scale_nodes({**spec["rayClusterSpec"], "workerGroupSpecs": []})
    assert any(problem.startswith("GPU:") for problem in fit_problems(ppo_groups(config), head_only))
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 0


def test_rayservice_serves_a_valid_canary_application_that_fits_its_cluster() -> None:
    from ray.serve.schema import ServeDeploySchema

    from rlhf_ray.serving.config import CanaryAppArgs, RouterState

    doc = _manifest("rayservice-canary.yaml")
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (app,) = serve_config.applications
    module, _, attribute = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    args = CanaryAppArgs.model_validate(app.args)
    overrides = {deployment.name: deployment for deployment in app.deployments}
    assert set(overrides) <= {"CanaryRouter", "incumbent", "canary"}
    RouterState.model_validate(overrides["CanaryRouter"].user_config)
    replicas = [BundleGroup("router", args.router.num_replicas, {"CPU": args.router.num_cpus})]
    for variant in (args.incumbent, args.canary):
        most = variant.autoscaling.max_replicas if variant.autoscaling else variant.num_replicas
        replicas.append(BundleGroup("policy", most, {"CPU": variant.num_cpus, "GPU": variant.num_gpus}))
    assert fit_problems(replicas, _full_scale_nodes(doc["spec"]["rayClusterConfig"])) == []
    gpu_group = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    min_gpus = gpu_group["minReplicas"] * _node_resources(gpu_group)["GPU"]
    assert min_gpus >= args.canary.num_gpus + args.incumbent.num_gpus, "both variants serve without scaling up"


# ---- cluster launcher -----------------------------------------------------------------------------------------
def _launcher() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_config_passes_rays_own_validation_and_holds_the_8gpu_ppo() -> None:
    prepared = _prepared(_launcher())
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    assert {name: (t["min_workers"], t["max_workers"]) for name, t in types.items() if name != "head"} == {
        "cpu_worker": (0, 6), "gpu_worker": (0, 4)}
    assert types["gpu_worker"]["resources"]["GPU"] == 8
    assert sum(t["max_workers"] for t in types.values()) <= prepared["max_workers"]
    nodes = [types["head"]["resources"]] + [types[name]["resources"] for name in ("cpu_worker", "gpu_worker")
                                            for _ in range(types[name]["max_workers"])]
    config = load_config(PPOConfig, ROOT / "configs" / "ppo_8b_8gpu.yaml")
    assert fit_problems(ppo_groups(config), nodes) == []
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in c for c in prepared["head_start_ray_commands"])


def test_launcher_validation_names_the_bad_field() -> None:
    wrong_type = _launcher()
    wrong_type["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    unknown = _launcher()
    unknown["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 8}
    too_many = _launcher()
    too_many["available_node_types"]["gpu_worker"]["min_workers"] = 20
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        _prepared(wrong_type)
    with pytest.raises(jsonschema.ValidationError, match="'resourcez' was unexpected"):
        _prepared(unknown)
    with pytest.raises(ValueError, match="max_workers"):
        _prepared(too_many)


def test_the_ray_cli_flags_the_admin_guide_uses_exist() -> None:
    used: dict[str, set[str]] = {"up": set(), "down": set()}
    for line in (CLUSTER / "README.md").read_text().splitlines():
        if match := re.search(r"\bray (up|down) (.*)", line):
            used[match.group(1)] |= set(re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", match.group(2)))
    ray_cli = str(Path(sys.executable).parent / "ray")
    for command, flags in used.items():
        assert flags, f"the admin guide shows `ray {command}` with its flags"
        help_text = subprocess.run([ray_cli, command, "--help"], capture_output=True, text=True, check=True,
                                   timeout=120).stdout
        assert {flag for flag in flags if flag not in help_text} == set(), command
