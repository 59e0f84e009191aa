"""`PolicyDeployment`: one Serve deployment per served variant (a checkpoint, an optional system prompt and sampling
settings), answering one conversation per call, whole (`generate`) or as it is generated (`stream`).

The generation backend is the rollout workers' (`rlhf_ray.rollout.backends`): HF `generate` on CPU or GPU,
vLLM on GPU, chosen by config; `echo` answers with the prompt, for measuring the serving path alone. A backend
without `stream` (vLLM's offline engine, echo) streams its whole answer as one piece.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray import serve

from actors.serve_control import HEALTH_CHECK_PERIOD_S
from rlhf_ray.rollout.backends import BACKENDS, Delta, GenerationBackend, GenerationParams
from rlhf_ray.rollout.batch import Sample
from rlhf_ray.serving.config import GenerationSection, PolicySection
from rlhf_ray.serving.echo import EchoBackend
from rlhf_ray.serving.variants import resolve_sampling, with_system_prompt

SERVING_BACKENDS: dict[str, type[GenerationBackend]] = {**BACKENDS, "echo": EchoBackend}


def make_serving_backend(section: PolicySection) -> GenerationBackend:
    if section.backend != "echo" and not section.model_path:
        raise ValueError(f"policy backend {section.backend!r} needs model_path; expected a checkpoint directory")
    return SERVING_BACKENDS[section.backend](section.model_path, **section.backend_kwargs)


@serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S)
class PolicyDeployment:
    """`generate(messages, prompt_id, n, sampling)` answers with a dict: the choices (text, finish reason,
    log-probs when asked) and token counts; `stream` yields the same pieces as they are generated. `sampling`
    holds the request's own settings (`max_tokens`, `temperature`, `top_p`, `seed`, `stop`, `logprobs`): the
    variant fills in what is missing and clamps the rest into its limits (`resolve_sampling`)."""

    def __init__(self, variant: str, section: dict[str, Any], generation: dict[str, Any] | None = None) -> None:
        import torch

        policy = PolicySection.model_validate(section)
        torch.set_num_threads(policy.torch_threads)
        self.variant = variant
        self.policy_id = policy.policy_id or variant
        self.system_prompt = policy.system_prompt
        self.sampling = policy.sampling
        self.generation = GenerationSection.model_validate(generation or {})
        self.backend = make_serving_backend(policy)
        self.blocking = policy.backend != "echo"
        tokenizer = getattr(self.backend, "tokenizer", None)
        self._decode = None if tokenizer is None else (lambda token: tokenizer.decode([token]))
        self._stops = set(getattr(self.backend, "stops", ()))
        # one generation at a time per replica: HF generate is CPU-bound and seeds a shared torch RNG
        self._lock = asyncio.Lock()

    def _request(self, messages: Sequence[dict[str, str]], sampling: dict[str, Any] | None
                 ) -> tuple[list[dict[str, str]], GenerationParams]:
        params = resolve_sampling(self.sampling, self.generation, **(sampling or {}))
        return with_system_prompt(messages, self.system_prompt), params

    def _logprobs(self, token_ids: Sequence[int], logprobs: Sequence[float] | None) -> list[dict[str, Any]] | None:
        """OpenAI's `logprobs.content` entries of the tokens the user sees (the closing stop token left out)."""
        if logprobs is None or self._decode is None:
            return None
        entries = []
        for token, logprob in zip(token_ids, logprobs, strict=True):
            if token not in self._stops:
                text = self._decode(token)
                entries.append({"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []})
        return entries

    def _final(self, sample: Sample, index: int, text: str) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": "stop" if sample.finished else "length",
                "prompt_tokens": len(sample.prompt_ids), "completion_tokens": len(sample.response_ids)}

    async def generate(self, messages: list[dict[str, str]], prompt_id: str, n: int = 1,
                       sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        conversation, params = self._request(messages, sampling)
        if not self.blocking:
            samples = self.backend.generate([conversation], [prompt_id], n, params)
        else:
            async with self._lock:
                # off the event loop, so health checks and queued requests are still served meanwhile
                samples = await asyncio.to_thread(self.backend.generate, [conversation], [prompt_id], n, params)
        choices = [{**self._final(sample, i, sample.response),
                    "logprobs": self._logprobs(sample.response_ids, sample.response_logprobs)}
                   for i, sample in enumerate(samples)]
        return {"choices": choices, "prompt_tokens": choices[0]["prompt_tokens"],
                "completion_tokens": sum(c["completion_tokens"] for c in choices), "policy_id": self.policy_id}

    async def stream(self, messages: list[dict[str, str]], prompt_id: str, n: int = 1,
                     sampling: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Pieces `{"index", "text", "logprobs"}` as they are generated; each choice's last piece also has
        `finish_reason`, `prompt_tokens` and `completion_tokens`. Consume with `handle.options(stream=True)`."""
        if not hasattr(self.backend, "stream"):
            answer = await self.generate(messages, prompt_id, n, sampling)
            for choice in answer["choices"]:
                yield choice
            return
        conversation, params = self._request(messages, sampling)
        async with self._lock:
            pieces = self.backend.stream(conversation, prompt_id, n, params)
            try:
                while (delta := await asyncio.to_thread(next, pieces, None)) is not None:
                    yield self._piece(delta)
            finally:  # the client went away (or generation failed): stop generating at the next token
                await asyncio.to_thread(pieces.close)

    def _piece(self, delta: Delta) -> dict[str, Any]:
        piece = {"index": delta.index, "text": delta.text, "logprobs": self._logprobs(delta.token_ids, delta.logprobs)}
        return piece if delta.sample is None else {**self._final(delta.sample, delta.index, delta.text), **piece}

    async def __call__(self, request: Any) -> dict[str, Any]:
        """Direct HTTP entry (`{"prompt": ...}`), used by the benchmark to compare with the router path."""
        body = await request.json()
        messages = [{"role": "user", "content": str(body.get("prompt", ""))}]
        return await self.generate(messages, "direct", 1, {"max_tokens": int(body.get("max_tokens", 16)),
                                                            "temperature": 0.0})
