"""A reward model on Ray Serve: POST {"prompts": [...], "responses": [...]} → {"scores": [...]}.

Each (prompt, response) pair is one item of `@serve.batch`, so pairs from concurrent requests share a forward
pass: up to `max_batch_size` pairs, waiting at most `batch_wait_timeout_s` for a batch to fill. The scores are the
model's (RM − μ)/σ with its saved statistics (raw with normalize: false), the `rm` reward source's numbers, so
`reward.sources: [{kind: http, url: ...}]` and `evaluate --judge URL` read the same scale as the directory would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from rlhf_ray.rewards.sources import RMSource


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


@serve.deployment
class RewardModelDeployment:
    """One replica holding one reward model."""

    def __init__(self, model_path: str, normalize: bool = True, max_length: int = 512, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.01) -> None:
        self.source = RMSource(model_path, normalize, max_length, max_batch_size)
        self.score_pairs.set_max_batch_size(max_batch_size)
        self.score_pairs.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batches: list[int] = []  # sizes of the batches scored, for `stats`

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.batches.append(len(pairs))
        return self.source.score([p for p, _ in pairs], [r for _, r in pairs])

    async def __call__(self, request: Request) -> Any:
        if request.method != "POST":
            return JSONResponse({"error": "POST {\"prompts\": [...], \"responses\": [...]}"}, status_code=405)
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("the body must be JSON: {\"prompts\": [...], \"responses\": [...]}")
        prompts = body.get("prompts") if isinstance(body, dict) else None
        responses = body.get("responses") if isinstance(body, dict) else None
        for name, values in (("prompts", prompts), ("responses", responses)):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                return _bad_request(f"field {name!r} must be a list of strings; got {str(values)[:100]}")
        if len(prompts) != len(responses):
            return _bad_request(f"prompts and responses must have the same length; got {len(prompts)} and "
                                f"{len(responses)}")
        scores = await asyncio.gather(*(self.score_pairs((p, r)) for p, r in zip(prompts, responses, strict=True)))
        return {"scores": [float(s) for s in scores]}

    def stats(self) -> dict[str, Any]:
        """Batches scored so far and their sizes (pairs per forward pass)."""
        return {"batches": len(self.batches), "pairs": sum(self.batches),
                "max_batch": max(self.batches, default=0)}


def reward_model_app(model_path: str, normalize: bool = True, max_length: int = 512, max_batch_size: int = 16,
                     batch_wait_timeout_s: float = 0.01, num_replicas: int = 1, num_cpus: float = 0.5,
                     num_gpus: float = 0.0) -> Any:
    """The bound Serve application."""
    return RewardModelDeployment.options(num_replicas=num_replicas, ray_actor_options={
        "num_cpus": num_cpus, "num_gpus": num_gpus}).bind(model_path, normalize, max_length, max_batch_size,
                                                          batch_wait_timeout_s)
