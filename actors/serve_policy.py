"""`PolicyDeployment`: one Serve deployment per policy version, answering one prompt per call.

The generation backend is the rollout workers' (`rlhf_ray.rollout.backends`): HF `generate` on CPU or GPU,
vLLM on GPU, chosen by config; `echo` answers with the prompt, for measuring the serving path alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from actors.serve_control import HEALTH_CHECK_PERIOD_S
from rlhf_ray.rollout.backends import BACKENDS, GenerationBackend, GenerationParams
from rlhf_ray.serving.config import PolicySection
from rlhf_ray.serving.echo import EchoBackend

SERVING_BACKENDS: dict[str, type[GenerationBackend]] = {**BACKENDS, "echo": EchoBackend}


def make_serving_backend(section: PolicySection) -> GenerationBackend:
    if section.backend != "echo" and not section.model_path:
        raise ValueError(f"policy backend {section.backend!r} needs model_path; expected a checkpoint directory")
    return SERVING_BACKENDS[section.backend](section.model_path, **section.backend_kwargs)


@serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S)
class PolicyDeployment:
    """Answers `generate(prompt, ...)` with a dict: text, token counts and why generation stopped."""

    def __init__(self, variant: str, section: dict[str, Any]) -> None:
        import torch

        policy = PolicySection.model_validate(section)
        torch.set_num_threads(policy.torch_threads)
        self.variant = variant
        self.policy_id = policy.policy_id or variant
        self.backend = make_serving_backend(policy)
        self.blocking = policy.backend != "echo"
        # one generate at a time per replica: HF generate is CPU-bound and seeds a shared torch RNG
        self._lock = asyncio.Lock()

    async def generate(self, prompt: str, prompt_id: str, max_tokens: int, temperature: float,
                       top_p: float = 1.0, seed: int | None = None) -> dict[str, Any]:
        params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        if not self.blocking:
            sample = self.backend.generate([prompt], [prompt_id], 1, params)[0]
        else:
            async with self._lock:
                # off the event loop, so health checks and queued requests are still served meanwhile
                sample = (await asyncio.to_thread(self.backend.generate, [prompt], [prompt_id], 1, params))[0]
        return {"text": sample.response, "prompt_tokens": len(sample.prompt_ids),
                "completion_tokens": len(sample.response_ids), "finish_reason": "stop" if sample.finished
                else "length", "policy_id": self.policy_id}

    async def __call__(self, request: Any) -> dict[str, Any]:
        """Direct HTTP entry (`{"prompt": ...}`), used by the benchmark to compare with the router path."""
        body = await request.json()
        return await self.generate(str(body.get("prompt", "")), "direct", int(body.get("max_tokens", 16)), 0.0)
