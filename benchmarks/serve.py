"""Router overhead: latency and throughput through the canary router, through an empty pass-through deployment in
the router's place (the floor: Serve's extra hop alone), and straight to the policy deployment.

    python benchmarks/serve.py --requests 300 --warmup 50 --concurrency 8 --rounds 5

All paths serve the `echo` policy (answers with the prompt, no model), so the figures are the serving path
alone: Serve's HTTP proxy → CanaryRouter (routing, validation, identity, sticky assignment, feedback token,
metrics) → DeploymentHandle → policy replica; Serve's HTTP proxy → PassThrough (reads the JSON body, one handle
call) → policy replica; and Serve's HTTP proxy → policy replica. The load generator (aiohttp, keep-alive) runs on
loopback in this process: one request at a time (latency p50/p99 without queueing), then `--concurrency` at once
(requests/s). The three paths are measured in turn, in a rotating order, `--rounds` times, and each figure is the
median over the rounds, so a burst of load on a shared machine hits all three alike. Router cost = router −
pass-through (target ≤ 1 ms p50, ≤ 5 ms p99); the Serve hop = pass-through − direct. Prints one JSON line with the
1-minute load average before and after, and (once after the rounds) the router's streaming time to the first
text chunk (the echo policy answers in one piece, so this is the streaming path's own latency).
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


def _measure(url: str, body: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    asyncio.run(_load(url, body, args.warmup, 1))
    serial = asyncio.run(_load(url, body, args.requests, 1))
    loaded = asyncio.run(_load(url, body, args.requests, args.concurrency))
    return {"p50_ms": serial["p50_ms"], "p99_ms": serial["p99_ms"], "req_per_s_serial": serial["req_per_s"],
            f"req_per_s_concurrency_{args.concurrency}": loaded["req_per_s"],
            f"p50_ms_concurrency_{args.concurrency}": loaded["p50_ms"],
            f"p99_ms_concurrency_{args.concurrency}": loaded["p99_ms"]}


async def _first_chunk(url: str, body: dict[str, Any], requests: int) -> dict[str, float]:
    """Streaming (`stream: true`), one request at a time: time to the first server-sent event carrying text, and to
    the end of the stream."""
    first, total = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started, seen = time.perf_counter(), None
            async with session.post(url, json={**body, "stream": True}) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"{url} (stream): HTTP {reply.status}")
                async for line in reply.content:
                    if seen is None and line.startswith(b"data: {") and b'"content":"' in line \
                            and b'"content":""' not in line:
                        seen = time.perf_counter() - started
            total.append(time.perf_counter() - started)
            first.append(seen if seen is not None else total[-1])
    return {"first_text_p50_ms": round(1000 * statistics.median(first), 3),
            "total_p50_ms": round(1000 * statistics.median(total), 3)}


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}


def _pass_through_app(policy: dict[str, Any]) -> Any:
    """An empty ingress in the router's place: read the JSON body, call the policy, return its answer."""
    from ray import serve
    from starlette.requests import Request

    from actors.serve_app import policy_options
    from actors.serve_policy import PolicyDeployment
    from rlhf_ray.serving.config import PolicySection

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
    class PassThrough:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            return await self.handle.generate.remote([{"role": "user", "content": body["prompt"]}], "p", 1,
                                                     {"max_tokens": body["max_tokens"], "temperature": 0.0})

    section = PolicySection.model_validate(policy)
    return PassThrough.bind(PolicyDeployment.options(name="pass-policy", **policy_options(section))
                            .bind("pass", section.model_dump()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import serve

    from actors.serve_app import deploy_canary
    from actors.serve_control import apply_app_config
    from rlhf_ray.governance import generate_key_file
    from rlhf_ray.serving.config import CanaryAppArgs

    load_before = os.getloadavg()[0]
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
        serve.run(_pass_through_app(echo), name="bench-pass", route_prefix="/pass")
        direct_body = {"prompt": PROMPT, "max_tokens": 16}
        paths = {
            "router": (f"{base}/v1/chat/completions", {"model": "rlhf-policy", "max_tokens": 16,
                                                       "messages": [{"role": "user", "content": PROMPT}]}),
            "pass_through": (f"http://127.0.0.1:{port}/pass", direct_body),
            "direct": (f"http://127.0.0.1:{port}/direct", direct_body),
        }
        names = list(paths)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for index in range(args.rounds):
            for name in names[index % 3:] + names[:index % 3]:  # rotate which path goes first
                rounds[name].append(_measure(*paths[name], args))
        streaming = asyncio.run(_first_chunk(*paths["router"], args.requests))
        serve.shutdown()
    ray.shutdown()
    figures = {name: _medians(values) for name, values in rounds.items()}
    router, floor, direct = figures["router"], figures["pass_through"], figures["direct"]
    print(json.dumps({
        "benchmark": "serve_router_overhead", "requests": args.requests, "concurrency": args.concurrency,
        "rounds": args.rounds, **figures,
        "router_cost_p50_ms": round(router["p50_ms"] - floor["p50_ms"], 3),
        "router_cost_p99_ms": round(router["p99_ms"] - floor["p99_ms"], 3),
        "serve_hop_p50_ms": round(floor["p50_ms"] - direct["p50_ms"], 3),
        "serve_hop_p99_ms": round(floor["p99_ms"] - direct["p99_ms"], 3),
        "overhead_vs_direct_p50_ms": round(router["p50_ms"] - direct["p50_ms"], 3),
        "router_streaming": streaming,
        "target": {"router_cost_p50_ms": 1.0, "router_cost_p99_ms": 5.0},
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
