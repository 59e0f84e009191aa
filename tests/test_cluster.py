"""Running on a real Ray cluster.

Fast: the resource arithmetic (`rlhf_ray.config.resources`), GPU configs checked on a laptop, the live check that
refuses a PPO run before any actor starts, and rollout workers colocated in the learner ranks' bundles.

Multi-node (`slow`): a cluster of real `ray start` nodes on this machine (cluster/local/ray_local.py: a head with
`learner_node`, two workers with `rollout_node`, token auth, own temp dir and ports), separate from the session's
in-process Ray. Jobs go through the Jobs API (Python client and `ray job submit`) exactly as on a remote cluster;
a PPO job puts its rollout workers and learner on their nodes and still finishes when the rollout workers' node
is killed mid-run; `rlhf-ray cluster status|scale` read the cluster and talk to its autoscaler (Ray's laptop
autoscaler, which launches worker nodes as local raylets).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.ppo_config import PPOError
from actors.ppo_resources import demand_summary
from jobs.ppo import PPOConfig, controller_for
from rlhf_ray.config import ConfigError, LineageConfig, RayConfig, WandbConfig, load_config
from rlhf_ray.config.resources import BundleGroup, fit_problems
from rlhf_ray.models import init_model
from rlhf_ray.sim import World, WorldConfig
from rlhf_ray.telemetry import MetricsSink

ROOT = Path(__file__).resolve().parents[1]
RAY_LOCAL = ROOT / "cluster" / "local" / "ray_local.py"
BIN = Path(sys.executable).parent
WORLD = WorldConfig(num_prompts=200)
JOB_ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_SILENT": "true"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


# ---- resource arithmetic ----------------------------------------------------------------------------------------
def test_arithmetic_sums_groups_and_packs_gpu_shares_per_device() -> None:
    node = [{"CPU": 96.0, "GPU": 8.0}]
    assert fit_problems([BundleGroup("rollout", 2, {"GPU": 1}), BundleGroup("learner", 4, {"GPU": 1})], node) == []
    (over,) = fit_problems([BundleGroup("rollout", 4, {"GPU": 1}), BundleGroup("learner", 8, {"GPU": 1})], node)
    assert over == "GPU: rollout 4 × 1 + learner 8 × 1 = 12 needed; the cluster has 8"
    (shares,) = fit_problems([BundleGroup("learner+rollout", 3, {"GPU": 0.6})], [{"CPU": 8, "GPU": 2}])
    assert "bundle 3 of 3" in shares and "cannot be split across devices" in shares  # 1.8 ≤ 2, yet no fit
    assert fit_problems([BundleGroup("a", 2, {"GPU": 0.6}), BundleGroup("b", 2, {"GPU": 0.4})],
                        [{"CPU": 8, "GPU": 2}]) == []  # 0.6 + 0.4 share a device
    (whole,) = fit_problems([BundleGroup("engine", 2, {"GPU": 8})], [{"CPU": 64, "GPU": 4}] * 4)
    assert whole.startswith("engine: no node can hold one bundle {GPU: 8}")
    (fraction,) = fit_problems([BundleGroup("learner", 1, {"GPU": 1.5})], node)
    assert "1.5 GPU per bundle" in fraction
    (label,) = fit_problems([BundleGroup("rollout", 2, {"CPU": 0.25, "rollout_node": 0.01})], [{"CPU": 4}])
    assert label == "rollout_node: rollout 2 × 0.01 = 0.02 needed; the cluster has 0"
    ray_node = {"CPU": 2.0, "memory": 1e9, "object_store_memory": 1e8, "node:10.0.0.1": 1.0}
    assert fit_problems([BundleGroup("x", 1, {"CPU": 2})], [ray_node]) == []


def test_gpu_configs_validate_on_a_laptop_with_their_arithmetic() -> None:
    config = load_config(PPOConfig, ROOT / "configs" / "ppo_8b_8gpu.yaml")
    demand = demand_summary(config)
    assert demand["total"]["GPU"] == 8
    assert {group["name"]: group["count"] for group in demand["groups"]} == {
        "learner+rollout": 6, "reward": 1, "reference": 1}
    assert config.rollout.backend == "vllm" and config.learner.deepspeed.zero_stage == 3
    with pytest.raises(ConfigError, match=r"learner\+rollout: 1\.1 GPU per bundle"):
        load_config(PPOConfig, ROOT / "configs" / "ppo_8b_8gpu.yaml", ["learner.num_gpus=0.7"])
    with pytest.raises(ConfigError, match=r"GPU: learner\+rollout 6 × 1 \+ reward 1 × 1 \+ reference 1 × 1 = 8 "
                                          r"needed; the cluster has 4"):
        load_config(PPOConfig, ROOT / "configs" / "ppo_8b_8gpu.yaml",
                    ["cluster.nodes=[{cpus: 8}, {cpus: 96, gpus: 4}]"])
    with pytest.raises(ConfigError, match=r"rollout\.num_workers=4 must equal learner\.num_workers=6"):
        load_config(PPOConfig, ROOT / "configs" / "ppo_8b_8gpu.yaml", ["rollout.num_workers=4"])
    multinode = load_config(PPOConfig, ROOT / "configs" / "ppo_multinode.yaml")
    assert multinode.rollout.resources == {"rollout_node": 0.01} and multinode.learner.resources


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(init_model(World(WORLD, 0).corpus(), tmp_path_factory.mktemp("cluster") / "model", "tiny", seed=0).path)


def _ppo(policy: str, out: Path, **overrides: Any) -> PPOConfig:
    fields = {"model_path": policy, "output_dir": str(out), "world": WORLD, "iterations": 1,
              "prompts_per_iteration": 4, "samples_per_prompt": 2, "eval_prompts": 2, "eval_samples_per_prompt": 1,
              "rollout": {"max_new_tokens": 8, "num_cpus": 0.2},
              "learner": {"num_cpus": 0.2, "num_minibatches": 1, "lr": 1e-3},
              "reward": {"rule_keywords": ["order", "refund"]}, "advantage": {"estimator": "grpo"},
              "ray": RayConfig(num_cpus=2), "wandb": WandbConfig(mode="disabled"),
              "lineage": LineageConfig(root=str(out / "lineage"))}
    return PPOConfig(**{**fields, **overrides})


@pytest.mark.ray
def test_the_live_cluster_is_checked_before_any_actor_starts(ray_cluster, policy: str, tmp_path: Path) -> None:
    before = ray.available_resources().get("CPU")
    sink = MetricsSink("ppo", WandbConfig(mode="disabled"), str(tmp_path))
    with pytest.raises(PPOError, match=r"nothing started.*GPU: rollout 2 × 1 = 2 needed; the cluster has 0"):
        controller_for(_ppo(policy, tmp_path, rollout={"num_gpus": 1}), sink)
    with pytest.raises(PPOError, match=r"learner_node: learner 1 × 0\.01 = 0\.01 needed; the cluster has 0"):
        controller_for(_ppo(policy, tmp_path, learner={"resources": {"learner_node": 0.01}}), sink)
    assert ray.available_resources().get("CPU") == before  # no placement group was reserved


@pytest.mark.ray
@pytest.mark.slow
def test_colocated_rollout_workers_share_the_learner_ranks_bundles(ray_cluster, policy: str, tmp_path: Path) -> None:
    config = _ppo(policy, tmp_path, rollout={"max_new_tokens": 8, "num_cpus": 0.1, "colocate_with_learner": True},
                  learner={"num_workers": 2, "num_cpus": 0.2, "num_minibatches": 1, "lr": 1e-3})
    controller = controller_for(config, MetricsSink("ppo", WandbConfig(mode="disabled"), str(tmp_path)))
    try:
        shared = controller.learners.placement_group
        assert controller.rollout.placement_group.id == shared.id
        assert [spec["CPU"] for spec in shared.bundle_specs] == pytest.approx([0.3, 0.3])  # rank + its engine
        assert controller.sync_weights()["timing/sync"] >= 0  # learner rank 0 → both colocated engines
    finally:
        controller.shutdown()


# ---- a multi-node cluster on this machine ------------------------------------------------------------------------
class LocalCluster:
    """A `cluster/local/ray_local.py` cluster, seen from the test: its Jobs and state REST APIs (with the token),
    and CLI commands run with its environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = json.loads((root / "cluster.json").read_text())
        self.token = Path(self.state["token_path"]).read_text().strip()
        self.dashboard = self.state["dashboard_url"]
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
                    "RAY_ADDRESS": self.state["gcs_address"], "RAY_API_SERVER_ADDRESS": self.dashboard,
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.state["token_path"],
                    "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    **JOB_ENV}

    def reload(self) -> None:
        self.state = json.loads((self.root / "cluster.json").read_text())

    def rest(self, path: str, **query: Any) -> Any:
        url = f"{self.dashboard}{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["data"]["result"]["result"]

    def alive_actors(self) -> list[dict[str, Any]]:
        return self.rest("/api/v0/actors", limit=1000, filter_keys="state", filter_predicates="=",
                         filter_values="ALIVE", detail="true")

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {node["node_id"]: node for node in self.rest("/api/v0/nodes", limit=1000, detail="true")}

    def jobs(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers={"Authorization": f"Bearer {self.token}"})

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout)


def _ray_local(*args: str, timeout: float = 180) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(RAY_LOCAL), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout) if done.stdout.strip() else {}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        _ray_local("up", "--dir", str(root), "--head-cpus", "4", "--head-resources", '{"learner_node": 1}')
        for name in ("rollout-a", "rollout-b"):
            _ray_local("add", "--dir", str(root), "--name", name, "--cpus", "1", "--resources", '{"rollout_node": 1}')
        yield LocalCluster(root)
    finally:
        if (root / "cluster.json").exists():
            _ray_local("down", "--dir", str(root))
        shutil.rmtree(root, ignore_errors=True)


def _wait(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _finish(cluster: LocalCluster, submission_id: str, timeout_s: float) -> str:
    client = cluster.jobs()
    status = _wait(lambda: (s := client.get_job_status(submission_id).value) in TERMINAL and s, timeout_s,
                   f"job {submission_id}", poll_s=2.0)
    logs = client.get_job_logs(submission_id)
    assert status == "SUCCEEDED", logs[-4000:]
    return logs


def _summary(logs: str, job: str) -> dict[str, Any]:
    lines = [line for line in logs.splitlines() if line.startswith("{") and f'"job": "{job}"' in line]
    assert lines, logs[-3000:]
    return json.loads(lines[-1])


@pytest.mark.slow
@pytest.mark.ray
def test_jobs_run_unchanged_through_the_python_client_and_the_cli(local_cluster: LocalCluster,
                                                                  tmp_path: Path) -> None:
    submission_id = local_cluster.jobs().submit_job(
        entrypoint=f"rlhf-ray simulate --out {tmp_path / 'feedback'} --rows 400 --seed 0",
        runtime_env={"working_dir": str(ROOT), "env_vars": JOB_ENV})
    summary = _summary(_finish(local_cluster, submission_id, 240), "simulate")
    assert summary["rows"] == 400 and (tmp_path / "feedback" / "manifest.json").exists()

    done = local_cluster.run(str(BIN / "ray"), "job", "submit", "--working-dir", str(ROOT),
                             "--runtime-env-json", json.dumps({"env_vars": JOB_ENV}),
                             "--", "rlhf-ray", "cluster", "status", "--json")
    assert done.returncode == 0 and "succeeded" in done.stdout, (done.stdout + done.stderr)[-4000:]
    status = _summary(done.stdout, "cluster")  # `cluster status` ran inside the job: RAY_ADDRESS joins the cluster
    assert status["alive_nodes"] == 3 and not status["autoscaler"]["present"]
    labels = sorted(tuple(sorted(set(node["total"]) - {"CPU"})) for node in status["nodes"])
    assert labels == [("learner_node",), ("rollout_node",), ("rollout_node",)]
    jobs = {job["submission_id"]: job for job in status["jobs"]}
    assert jobs[submission_id]["status"] == "SUCCEEDED"
    assert any(job["status"] == "RUNNING" and "cluster status" in job["entrypoint"] for job in jobs.values())
    assert status["serve"] == [] and status["canary"] == {}


@pytest.mark.slow
@pytest.mark.ray
def test_ppo_places_roles_by_node_and_finishes_after_losing_a_rollout_node(local_cluster: LocalCluster, policy: str,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "ppo"
    submission_id = local_cluster.jobs().submit_job(
        entrypoint=f"rlhf-ray ppo --config configs/ppo_multinode.yaml --model {policy} --out {out} iterations=20 "
                   f"checkpoint_every=10 eval_every=10 wandb.mode=disabled",
        runtime_env={"working_dir": str(ROOT), "env_vars": JOB_ENV})

    def placed() -> dict[str, set[str]]:
        where: dict[str, set[str]] = {}
        for actor in local_cluster.alive_actors():
            where.setdefault(actor["class_name"], set()).add(actor["node_id"])
        return where if {"RolloutWorker", "PolicyLearner", "RewardScorer", "ReferenceModel"} <= set(where) else {}

    where = _wait(placed, 240, "the PPO actors")
    nodes = local_cluster.nodes()
    rollout_nodes, learner_nodes = where["RolloutWorker"], where["PolicyLearner"]
    assert all("rollout_node" in nodes[node]["resources_total"] for node in rollout_nodes)
    assert all("learner_node" in nodes[node]["resources_total"] for node in learner_nodes)
    assert not rollout_nodes & learner_nodes
    stateless = where["RewardScorer"] | where["ReferenceModel"]
    assert stateless <= learner_nodes, "scorer and reference stay with the driver on the head, off the rollout nodes"

    history = out / "metrics.jsonl"
    _wait(lambda: history.exists() and history.read_text().count("\n") >= 2, 240, "the first PPO iteration")
    workers = [a for a in local_cluster.alive_actors() if a["class_name"] == "RolloutWorker"]
    victim_node = workers[0]["node_id"]
    victim = next(name for name, node in local_cluster.state["nodes"].items() if node["node_id"] == victim_node)
    lost = {a["actor_id"] for a in workers if a["node_id"] == victim_node}
    _ray_local("remove", "--dir", str(local_cluster.root), "--name", victim)  # SIGKILL: the node is lost

    summary = _summary(_finish(local_cluster, submission_id, 420), "ppo")
    assert summary["iterations"] == 20 and Path(summary["policy_dir"]).is_dir()
    nodes = local_cluster.nodes()
    assert nodes[victim_node]["state"] == "DEAD"
    job_id = local_cluster.jobs().get_job_info(submission_id).job_id
    after = {a["actor_id"]: a for a in local_cluster.rest("/api/v0/actors", limit=1000, detail="true",
                                                          filter_keys="job_id", filter_predicates="=",
                                                          filter_values=job_id)
             if a["class_name"] == "RolloutWorker"}
    assert set(after) == {a["actor_id"] for a in workers}
    assert all(int(after[actor_id]["num_restarts"]) >= 1 for actor_id in lost), "Ray restarted the lost workers"
    assert all(a["node_id"] != victim_node and "rollout_node" in nodes[a["node_id"]]["resources_total"]
               for a in after.values()), "… on the surviving rollout node"


@pytest.mark.slow
@pytest.mark.ray
def test_cluster_scale_asks_the_autoscaler_or_says_there_is_none(local_cluster: LocalCluster) -> None:
    refused = local_cluster.run(str(BIN / "rlhf-ray"), "cluster", "scale", "--gpus", "2")
    assert refused.returncode == 1
    assert "this cluster has no autoscaler" in refused.stderr
    assert "GPU: {GPU: 1} 2 × 1 = 2 needed; the cluster has 0" in refused.stderr

    root = Path(tempfile.mkdtemp(prefix="ra-", dir="/tmp"))
    types = root / "types.json"
    types.write_text(json.dumps({"rollout_worker": {"resources": {"CPU": 1, "rollout_node": 1}, "max_workers": 2}}))
    try:
        _ray_local("up", "--dir", str(root), "--head-cpus", "1", "--autoscale", str(types))
        autoscaled = LocalCluster(root)
        done = autoscaled.run(str(BIN / "rlhf-ray"), "cluster", "scale", "--bundles",
                              json.dumps([{"CPU": 1, "rollout_node": 1}] * 2), "--wait", "120")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = _summary(done.stdout, "cluster")
        assert summary["autoscaler"] and summary["fits_now"] and summary["nodes_alive"] == 3
        workers = [n for n in autoscaled.nodes().values() if n["state"] == "ALIVE" and not n["is_head_node"]]
        assert [n["resources_total"]["rollout_node"] for n in workers] == [1.0, 1.0]
    finally:
        if (root / "cluster.json").exists():
            _ray_local("down", "--dir", str(root))
        shutil.rmtree(root, ignore_errors=True)
