"""Router overhead: latency and throughput through the canary router vs straight to the policy deployment.

    python benchmarks/serve.py --requests 2000 --concurrency 8

Both paths serve the `echo` policy (answers with the prompt, no model), so the figures are the serving path
alone: Serve's HTTP proxy → CanaryRouter (FastAPI, validation, sticky assignment, metrics) → DeploymentHandle →
policy replica, against Serve's HTTP proxy → policy replica. The load generator (aiohttp, keep-alive) runs on
loopback in this process: first one request at a time (latency p50/p99 without queueing), then `--concurrency`
at once (requests/s). Overhead = router figure − direct figure. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

PROMPT = "how do I reset my password ?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def _load(url: str, body: dict[str, Any], requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    remaining = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(url, json=body) as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"{url}: HTTP {reply.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * _percentile(latencies, 99),
            "req_per_s": len(latencies) / elapsed}


def _measure(url: str, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    asyncio.run(_load(url, body, args.warmup, 1))
    serial = asyncio.run(_load(url, body, args.requests, 1))
    loaded = asyncio.run(_load(url, body, args.requests, args.concurrency))
    return {"p50_ms": round(serial["p50_ms"], 3), "p99_ms": round(serial["p99_ms"], 3),
            "req_per_s_serial": round(serial["req_per_s"], 1),
            f"req_per_s_concurrency_{args.concurrency}": round(loaded["req_per_s"], 1),
            f"p50_ms_concurrency_{args.concurrency}": round(loaded["p50_ms"], 3),
            f"p99_ms_concurrency_{args.concurrency}": round(loaded["p99_ms"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import serve

    from actors.serve_app import deploy_canary
    from actors.serve_control import apply_app_config
    from rlhf_ray.governance import generate_key_file
    from rlhf_ray.serving.config import CanaryAppArgs

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        generate_key_file(Path(tmp) / "key")
        echo = {"backend": "echo", "num_cpus": 0.1, "max_ongoing_requests": 64}
        canary = CanaryAppArgs.model_validate({
            "state_dir": f"{tmp}/state", "incumbent": echo, "canary": echo,
            "pseudonyms": {"key_file": f"{tmp}/key"}, "router": {"initial_weight": 0.5, "max_ongoing_requests": 64}})
        base = deploy_canary(canary, name="bench-router", route_prefix="/router", port=port)
        apply_app_config({"name": "bench-direct", "route_prefix": "/direct",
                          "import_path": "actors.serve_app:policy_app", "args": {"variant": "direct", "policy": echo}})
        router = _measure(f"{base}/v1/chat/completions",
                          {"model": "rlhf-policy", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16,
                           "user": "bench-user"}, args)
        direct = _measure(f"http://127.0.0.1:{port}/direct", {"prompt": PROMPT, "max_tokens": 16}, args)
        serve.shutdown()
    ray.shutdown()
    print(json.dumps({
        "benchmark": "serve_router_overhead", "requests": args.requests, "concurrency": args.concurrency,
        "router": router, "direct": direct,
        "overhead_p50_ms": round(router["p50_ms"] - direct["p50_ms"], 3),
        "overhead_p99_ms": round(router["p99_ms"] - direct["p99_ms"], 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
