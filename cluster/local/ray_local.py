#!/usr/bin/env python3
"""A multi-node Ray cluster on one machine, made of real `ray start` nodes: for trying cluster features (job
submission, placement across nodes, node loss, autoscaling) on a laptop and in the tests.

    python cluster/local/ray_local.py up   --dir /tmp/rlhf-local --head-cpus 2 --head-resources '{"learner_node": 1}'
    python cluster/local/ray_local.py add  --dir /tmp/rlhf-local --name w1 --cpus 1 --resources '{"rollout_node": 1}'
    eval "$(python cluster/local/ray_local.py env --dir /tmp/rlhf-local)"   # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, token
    ray job submit --working-dir . -- rlhf-ray simulate --out /tmp/feedback --rows 2000
    python cluster/local/ray_local.py remove --dir /tmp/rlhf-local --name w1      # the node dies (SIGKILL)
    python cluster/local/ray_local.py down --dir /tmp/rlhf-local

Each node is one `ray start --block` in its own process group, so `remove` and `down` end exactly the processes
of that node (raylet, workers, agents) and nothing else on the machine — unlike `ray stop`, which kills every
Ray process of the user, including other clusters and in-process `ray.init()` sessions.

Isolation from other Ray instances on the same machine:
- `--temp-dir` per node, under the cluster's directory: `ray.init()` without an address looks for
  `/tmp/ray/ray_current_cluster`, so a cluster under its own temp dir is never joined by accident; and nodes
  sharing one session directory would share `runtime_resources/`, where one node's runtime-env agent deletes a
  job's working_dir package that a process on another node still runs in (seen when a node is killed);
- every port explicit and free when chosen (GCS, dashboard, client server, per node: node manager, object
  manager, dashboard agent HTTP + gRPC, runtime-env agent, metrics export, and a 100-port worker range); the
  defaults (6379, 8265, 10001, 52365) collide as soon as two clusters or two nodes share a machine;
- token authentication with a fresh token in `<dir>/auth_token` (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH):
  `ray start` resolves 127.0.0.1 to the machine's address and the GCS listens on every interface, so the token
  is what keeps other users out; the dashboard (and Jobs API) binds 127.0.0.1 only.

`up --autoscale TYPES.json` starts the head with Ray's laptop autoscaler (the `fake_multinode` node provider,
which launches worker types as local raylets), so `request_resources` / `rlhf-ray cluster scale` really add
nodes. TYPES.json maps a worker type to `{"resources": {"CPU": 1, ...}, "min_workers": 0, "max_workers": 2}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

STATE = "cluster.json"
TOKEN = "auth_token"
WORKER_PORT_SPAN = 100
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 8.0
DEFAULT_OBJECT_STORE_BYTES = 256 * 1024**2
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # what the fake provider expects


class LocalClusterError(RuntimeError):
    pass


# ---- ports --------------------------------------------------------------------------------------------------
def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def free_port_block(span: int = WORKER_PORT_SPAN, low: int = 20000, high: int = 32000) -> int:
    """The first port of `span` consecutive bindable ports below the kernel's ephemeral range."""
    start = low + secrets.randbelow((high - low) // span) * span
    for offset in range(0, high - low, span):
        base = low + (start - low + offset) % (high - low)
        if base + span <= high and all(_bindable(port) for port in range(base, base + span)):
            return base
    raise LocalClusterError(f"no {span} consecutive free ports between {low} and {high}")


def node_port_args() -> list[str]:
    """Ports every node needs of its own when several share one machine."""
    worker = free_port_block()
    ports = {"node-manager-port": free_port(), "object-manager-port": free_port(),
             "dashboard-agent-listen-port": free_port(), "dashboard-agent-grpc-port": free_port(),
             "runtime-env-agent-port": free_port(), "metrics-export-port": free_port(),
             "min-worker-port": worker, "max-worker-port": worker + WORKER_PORT_SPAN - 1}
    return [f"--{key}={value}" for key, value in ports.items()]


# ---- state ---------------------------------------------------------------------------------------------------
def load_state(root: Path) -> dict[str, Any]:
    path = root / STATE
    if not path.exists():
        raise LocalClusterError(f"no local cluster under {root} (missing {STATE}); start one with `up --dir {root}`")
    return json.loads(path.read_text())


def save_state(root: Path, state: dict[str, Any]) -> None:
    (root / STATE).write_text(json.dumps(state, indent=2, sort_keys=True))


def cluster_env(state: dict[str, Any]) -> dict[str, str]:
    """What a process needs to talk to this cluster: the GCS and dashboard addresses and the token."""
    return {"RAY_ADDRESS": state["gcs_address"], "RAY_API_SERVER_ADDRESS": state["dashboard_url"],
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_path"]}


def _node_env(state: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_path"], "RAY_USAGE_STATS_ENABLED": "0",
                # jobs run `rlhf-ray ...`: the venv's scripts must be on the nodes' PATH
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra or {})
    return env


def _ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


def _start_node(root: Path, state: dict[str, Any], name: str, args: list[str],
                extra_env: dict[str, str] | None = None) -> int:
    log = (root / f"{name}.log").open("ab")
    process = subprocess.Popen([_ray_cli(), "start", "--block", "--disable-usage-stats", *args],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=_node_env(state, extra_env), start_new_session=True)
    return process.pid


def _resource_args(cpus: float, gpus: int, resources: dict[str, float], object_store_bytes: int) -> list[str]:
    args = [f"--num-cpus={cpus:g}", f"--object-store-memory={object_store_bytes}"]
    if gpus:
        args.append(f"--num-gpus={gpus}")
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    return args


def _alive_node_ids(state: dict[str, Any]) -> set[str] | None:
    """Ids of the alive nodes as the GCS sees them, from the dashboard's state API (None while it does not answer)."""
    query = urllib.parse.urlencode({"limit": 1000, "filter_keys": "state", "filter_predicates": "=",
                                    "filter_values": "ALIVE"})
    request = urllib.request.Request(f"{state['dashboard_url']}/api/v0/nodes?{query}", headers={
        "Authorization": f"Bearer {Path(state['token_path']).read_text().strip()}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {node["node_id"] for node in json.loads(response.read())["data"]["result"]["result"]}
    except (OSError, KeyError, ValueError):
        return None


def _wait_new_node(state: dict[str, Any], known: set[str], pid: int, log: Path) -> str:
    """Wait until a node that is not in `known` is alive; returns its id."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            raise LocalClusterError(f"`ray start` exited; see {log}:\n{_tail(log)}")
        if new := (_alive_node_ids(state) or set()) - known:
            return min(new)
        time.sleep(1.0)
    raise LocalClusterError(f"the node did not join within {START_TIMEOUT_S:.0f}s; see {log}:\n{_tail(log)}")


def _pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:  # not our child (another invocation of this script): probe it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


# ---- commands ------------------------------------------------------------------------------------------------
def up(root: Path, head_cpus: float, head_gpus: int, head_resources: dict[str, float], object_store_bytes: int,
       autoscale: dict[str, Any] | None = None) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    if (root / STATE).exists():
        raise LocalClusterError(f"a local cluster is already recorded under {root}; `down --dir {root}` first")
    token_path = root / TOKEN
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    gcs_port, dashboard_port = free_port(), free_port()
    state: dict[str, Any] = {
        "dir": str(root), "token_path": str(token_path), "temp_dir": str(root / "ray-head"),
        "gcs_address": f"127.0.0.1:{gcs_port}", "dashboard_url": f"http://127.0.0.1:{dashboard_port}", "nodes": {}}
    args = ["--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
            f"--temp-dir={state['temp_dir']}", *node_port_args(),
            *_resource_args(head_cpus, head_gpus, head_resources, object_store_bytes)]
    extra_env: dict[str, str] = {}
    if autoscale:
        config_path = root / "autoscaling.json"
        config_path.write_text(json.dumps(fake_autoscaling_config(state, head_cpus, head_resources, autoscale)))
        args.append(f"--autoscaling-config={config_path}")
        extra_env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                     "AUTOSCALER_METRIC_PORT": str(free_port()),
                     "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID, "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID}
    pid = _start_node(root, state, "head", args, extra_env)
    state["nodes"]["head"] = {"pgid": pid, "cpus": head_cpus, "gpus": head_gpus, "resources": head_resources}
    save_state(root, state)
    state["nodes"]["head"]["node_id"] = _wait_new_node(state, set(), pid, root / "head.log")
    state["autoscaling"] = bool(autoscale)
    save_state(root, state)
    return state


def fake_autoscaling_config(state: dict[str, Any], head_cpus: float, head_resources: dict[str, float],
                            worker_types: dict[str, Any]) -> dict[str, Any]:
    """A cluster-launcher config for Ray's laptop provider: worker types become local raylets on demand."""
    types = {name: {"node_config": {}, "min_workers": spec.get("min_workers", 0),
                    "max_workers": spec.get("max_workers", 1),
                    "resources": {"object_store_memory": DEFAULT_OBJECT_STORE_BYTES, **spec["resources"]}}
             for name, spec in worker_types.items()}
    types["ray.head.default"] = {"node_config": {}, "max_workers": 0,
                                 "resources": {"CPU": head_cpus, **head_resources}}
    return {"cluster_name": "rlhf-ray-local", "max_workers": sum(t["max_workers"] for t in types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": 1.0,
            "provider": {"type": "fake_multinode", "gcs_address": state["gcs_address"],
                         "disable_launch_config_check": True, "disable_node_updaters": True,
                         "use_node_id_as_ip": True},
            "auth": {"ssh_user": "nobody"}, "available_node_types": types, "head_node_type": "ray.head.default",
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": []}


def add(root: Path, name: str, cpus: float, gpus: int, resources: dict[str, float],
        object_store_bytes: int) -> dict[str, Any]:
    state = load_state(root)
    if name in state["nodes"]:
        raise LocalClusterError(f"node {name!r} already exists in {root}")
    args = [f"--address={state['gcs_address']}", "--node-ip-address=127.0.0.1", f"--temp-dir={root / f'ray-{name}'}",
            *node_port_args(), *_resource_args(cpus, gpus, resources, object_store_bytes)]
    known = _alive_node_ids(state) or set()
    pid = _start_node(root, state, name, args)
    state["nodes"][name] = {"pgid": pid, "cpus": cpus, "gpus": gpus, "resources": resources}
    save_state(root, state)
    state["nodes"][name]["node_id"] = _wait_new_node(state, known, pid, root / f"{name}.log")
    save_state(root, state)
    return state


def _kill_groups(pgids: list[int], grace_s: float) -> None:
    """SIGTERM the nodes' process groups (SIGKILL at once when grace_s is 0), wait for them together, then
    SIGKILL whatever is left."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL if grace_s <= 0 else signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in pgids):
        time.sleep(0.2)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reap the `ray start` process when it is our child
            os.waitpid(pgid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def remove(root: Path, name: str, graceful: bool = False) -> dict[str, Any]:
    """End one node: SIGKILL by default (the node is lost, as when a machine dies), SIGTERM with `graceful`."""
    state = load_state(root)
    node = state["nodes"].get(name)
    if node is None:
        raise LocalClusterError(f"no node {name!r} in {root}; nodes: {sorted(state['nodes'])}")
    if name == "head":
        raise LocalClusterError("the head cannot be removed alone; use `down`")
    _kill_groups([node["pgid"]], STOP_GRACE_S if graceful else 0.0)
    node["pgid"] = None
    save_state(root, state)
    return state


def down(root: Path) -> None:
    state = load_state(root)
    _kill_groups([node["pgid"] for node in state["nodes"].values() if node.get("pgid")], STOP_GRACE_S)
    for node in state["nodes"].values():
        node["pgid"] = None
    save_state(root, state)
    (root / STATE).rename(root / f"{STATE}.down")


# ---- CLI -----------------------------------------------------------------------------------------------------
def _resources(text: str) -> dict[str, float]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of resource amounts, e.g. '{{\"gpu_node\": 1}}'; "
                                         f"got {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "add", "remove", "down", "env", "show"):
        sub = commands.add_parser(name)
        sub.add_argument("--dir", required=True, type=Path, help="the cluster's directory (state, token, logs)")
        if name in ("up", "add"):
            sub.add_argument("--cpus", "--head-cpus", dest="cpus", type=float, default=1.0)
            sub.add_argument("--gpus", "--head-gpus", dest="gpus", type=int, default=0)
            sub.add_argument("--resources", "--head-resources", dest="resources", type=_resources, default={})
            sub.add_argument("--object-store-bytes", type=int, default=DEFAULT_OBJECT_STORE_BYTES)
        if name == "up":
            sub.add_argument("--autoscale", type=Path, help="worker types JSON: start Ray's laptop autoscaler")
        if name in ("add", "remove"):
            sub.add_argument("--name", required=True)
        if name == "remove":
            sub.add_argument("--graceful", action="store_true", help="SIGTERM and wait instead of SIGKILL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.dir.absolute()
    try:
        if args.command == "up":
            autoscale = json.loads(args.autoscale.read_text()) if args.autoscale else None
            state = up(root, args.cpus, args.gpus, args.resources, args.object_store_bytes, autoscale)
        elif args.command == "add":
            state = add(root, args.name, args.cpus, args.gpus, args.resources, args.object_store_bytes)
        elif args.command == "remove":
            state = remove(root, args.name, args.graceful)
        elif args.command == "down":
            down(root)
            return 0
        elif args.command == "env":
            print("\n".join(f"export {key}={value}" for key, value in cluster_env(load_state(root)).items()))
            return 0
        else:
            state = load_state(root)
    except LocalClusterError as error:
        print(f"ray_local {args.command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(state, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
